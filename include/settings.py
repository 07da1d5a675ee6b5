"""Where the pipeline keeps its files. One environment variable each, defaults under the project."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    return Path(os.environ.get("COGNIGY_RETRAIN_STATE_DIR", PROJECT_ROOT / ".state"))


def audit_path() -> Path:
    return Path(os.environ.get("COGNIGY_RETRAIN_AUDIT_PATH", state_dir() / "audit" / "retrain_audit.jsonl"))


def audit_store() -> tuple[str, str]:
    """Where audit records go: ``("url", <SQLAlchemy URL>)`` from ``COGNIGY_RETRAIN_AUDIT_URL``, ``("conn_id", <id>)``
    from ``COGNIGY_RETRAIN_AUDIT_CONN_ID`` (an Airflow connection, resolved by the plugins), else
    ``("file", <audit_path()>)``: the JSON-lines file (one host). Both variables set is a configuration error."""
    url = os.environ.get("COGNIGY_RETRAIN_AUDIT_URL", "").strip()
    conn_id = os.environ.get("COGNIGY_RETRAIN_AUDIT_CONN_ID", "").strip()
    if url and conn_id:
        raise ValueError("set COGNIGY_RETRAIN_AUDIT_URL or COGNIGY_RETRAIN_AUDIT_CONN_ID for the audit trail, not both")
    if url:
        return "url", url
    if conn_id:
        return "conn_id", conn_id
    return "file", str(audit_path())


def outbox_dir() -> Path:
    return Path(os.environ.get("COGNIGY_RETRAIN_OUTBOX_DIR", state_dir() / "mlflow_outbox"))


def run_dir(dag_id: str, run_id: str, target_key: str, attempt: str = "") -> Path:
    """Durable per-run-attempt, per-target folder for rollback points, predictions and reports.

    `attempt` is minted by `validate` for each attempt of a DAG run (a cleared run gets a new one), and the
    folder name carries a hash of (run_id, attempt): two run ids that sanitise alike, or a cleared run, never
    share a folder, and no run id (``..`` included) can leave the state root.
    """
    digest = hashlib.sha256(f"{dag_id}\n{run_id}\n{attempt}".encode()).hexdigest()[:16]
    path = state_dir() / "runs" / _safe(dag_id) / f"{_safe(run_id)[:100]}.{digest}" / _safe(target_key)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)[:150]
