"""What the pipeline remembers about a flow/locale between runs (in the state store, `include.state.state_store`).

- the last successful training: the intents fingerprint production was trained on, so a nightly run on an
  unchanged flow can end early (`unchanged`) instead of paying for a training and two scorings;
- scored champions: held-out predictions of a trained state, keyed by (intents fingerprint, held-out SHA-256,
  score threshold), so the model serving now is not scored again on the same test set.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from include.state import state_store


def _folder(target_key: str) -> Any:
    path = state_store.root() / "targets" / hashlib.sha256(target_key.encode()).hexdigest()[:32]
    state_store.ensure_dir(path)
    return path


def last_trained(target_key: str) -> dict[str, Any] | None:
    """`{"fingerprint", "run_id", "at"}` of the last training this product promoted, or None."""
    return state_store.read_json(_folder(target_key) / "last_trained.json")


def record_trained(target_key: str, fingerprint: str, run_id: str) -> None:
    record = {"target": target_key, "fingerprint": fingerprint, "run_id": run_id, "at": time.time()}
    state_store.write_json(_folder(target_key) / "last_trained.json", record)


def champion_key(fingerprint: str, held_out_sha256: str, threshold: float) -> str:
    return hashlib.sha256(f"{fingerprint}|{held_out_sha256}|{threshold!r}".encode()).hexdigest()[:32]


def cached_champion(target_key: str, key: str) -> Any | None:
    path = _folder(target_key) / f"champion-{key}.jsonl"
    return path if state_store.exists(path) else None


def store_champion(target_key: str, key: str, predictions: Any) -> None:
    """Keep a copy of held-out predictions of a trained state (atomic: a torn copy is never read)."""
    state_store.copy(predictions, _folder(target_key) / f"champion-{key}.jsonl")
