"""What the pipeline remembers about a flow/locale between runs (under the state directory).

- the last successful training: the intents fingerprint production was trained on, so a nightly run on an
  unchanged flow can end early (`unchanged`) instead of paying for a training and two scorings;
- scored champions: held-out predictions of a trained state, keyed by (intents fingerprint, held-out SHA-256,
  score threshold), so the model serving now is not scored again on the same test set.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from include import settings


def _folder(target_key: str) -> Path:
    path = settings.state_dir() / "targets" / hashlib.sha256(target_key.encode()).hexdigest()[:32]
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def last_trained(target_key: str) -> dict[str, Any] | None:
    """`{"fingerprint", "run_id", "at"}` of the last training this product promoted, or None."""
    path = _folder(target_key) / "last_trained.json"
    return json.loads(path.read_text()) if path.exists() else None


def record_trained(target_key: str, fingerprint: str, run_id: str) -> None:
    record = {"target": target_key, "fingerprint": fingerprint, "run_id": run_id, "at": time.time()}
    _write_atomic(_folder(target_key) / "last_trained.json", json.dumps(record))


def champion_key(fingerprint: str, held_out_sha256: str, threshold: float) -> str:
    return hashlib.sha256(f"{fingerprint}|{held_out_sha256}|{threshold!r}".encode()).hexdigest()[:32]


def cached_champion(target_key: str, key: str) -> Path | None:
    path = _folder(target_key) / f"champion-{key}.jsonl"
    return path if path.exists() else None


def store_champion(target_key: str, key: str, predictions: Path) -> None:
    """Keep a copy of held-out predictions of a trained state (atomic: a torn copy is never read)."""
    path = _folder(target_key) / f"champion-{key}.jsonl"
    tmp = path.with_suffix(".tmp")
    shutil.copyfile(predictions, tmp)
    tmp.replace(path)
