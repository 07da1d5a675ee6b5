"""Where the pipeline keeps its files. One environment variable each, defaults under the project."""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    return Path(os.environ.get("COGNIGY_RETRAIN_STATE_DIR", PROJECT_ROOT / ".state"))


def audit_path() -> Path:
    return Path(os.environ.get("COGNIGY_RETRAIN_AUDIT_PATH", state_dir() / "audit" / "retrain_audit.jsonl"))


def outbox_dir() -> Path:
    return Path(os.environ.get("COGNIGY_RETRAIN_OUTBOX_DIR", state_dir() / "mlflow_outbox"))


def run_dir(dag_id: str, run_id: str, target_key: str) -> Path:
    """Durable per-run, per-target folder for rollback points, predictions and reports."""
    path = state_dir() / "runs" / _safe(dag_id) / _safe(run_id) / _safe(target_key)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)[:150]
