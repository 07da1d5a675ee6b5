"""What the pipeline remembers about a flow/locale between runs (in the state store, `include.state.state_store`).

- the last successful training: the intents fingerprint production was trained on, so a nightly run on an
  unchanged flow can end early (`unchanged`) instead of paying for a training and two scorings;
- scored champions: held-out predictions of a trained state, keyed by (intents fingerprint, held-out SHA-256,
  score threshold), so the model serving now is not scored again on the same test set;
- per project, the snapshots this product released (`record_release`): the only snapshots it ever deletes.
"""

from __future__ import annotations

import hashlib
import json
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


# --- snapshots this product released (the only ones it may ever delete) ----------------------------------------
def _releases(project_id: str) -> Any:
    path = state_store.root() / "releases" / hashlib.sha256(project_id.encode()).hexdigest()[:32]
    state_store.ensure_dir(path)
    return path


def record_release(project_id: str, snapshot: dict[str, Any], run_id: str) -> None:
    """Remember a snapshot this product created and released (one file each: concurrent releases never lose one)."""
    name = f"{time.time():017.6f}-{snapshot['id']}.json"
    record = {"project_id": project_id, "snapshot": snapshot, "run_id": run_id, "at": time.time()}
    state_store.create_exclusive(_releases(project_id) / name, json.dumps(record).encode())


def released_snapshots(project_id: str) -> list[str]:
    """Ids of the snapshots this product released in the project, oldest first."""
    names = sorted(n for n in state_store.list_names(_releases(project_id)) if n.endswith(".json"))
    return [n.rsplit("-", 1)[1].removesuffix(".json") for n in names]
