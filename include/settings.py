"""Where the pipeline keeps its files. One environment variable each, defaults under the project."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    """The local state folder: the default state store, and the home of the local-only files (audit JSON-lines
    log, rate-limit SQLite file)."""
    return Path(os.environ.get("COGNIGY_RETRAIN_STATE_DIR", PROJECT_ROOT / ".state"))


def state_uri() -> str:
    """Where run state, the target memory and the MLflow outbox live (see `include.state.state_store`):
    ``COGNIGY_RETRAIN_STATE_URI`` (``s3://bucket/prefix``, ``s3://conn_id@bucket/prefix``, ``file:///path``),
    else the local state folder as a ``file://`` URI. The store's Airflow connection, when the URI names none:
    ``COGNIGY_RETRAIN_STATE_CONN_ID`` (read by ``cognigy_airflow.state_storage``)."""
    uri = os.environ.get("COGNIGY_RETRAIN_STATE_URI", "").strip()
    return uri.rstrip("/") if uri else state_dir().absolute().as_uri()


# Object storage a data file may come from when COGNIGY_RETRAIN_DATA_ROOTS is not set (any bucket).
DEFAULT_DATA_OBJECT_STORAGE = ("s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://")


def data_roots() -> list[str]:
    """Where the run's own data files (held-out and training) may be read from: ``COGNIGY_RETRAIN_DATA_ROOTS``,
    comma-separated local directories (``/srv/nlu-data``, ``file:///srv/nlu-data``) and object-storage prefixes
    (``s3://bucket/nlu/``, ``gs://bucket``, ``s3://`` for every bucket); by default the project's data folder
    (``include/data``) and the object stores of DEFAULT_DATA_OBJECT_STORAGE. Read by `include.data.data_uris`."""
    raw = os.environ.get("COGNIGY_RETRAIN_DATA_ROOTS", "").strip()
    if raw:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return [str(PROJECT_ROOT / "include" / "data"), *DEFAULT_DATA_OBJECT_STORAGE]


def state_conn_id() -> str | None:
    return os.environ.get("COGNIGY_RETRAIN_STATE_CONN_ID", "").strip() or None


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


def audit_location() -> str:
    """Where the audit trail is, for people (errors, outcome.json): the file's path, or the database without
    its credentials."""
    kind, target = audit_store()
    if kind == "file":
        return target
    if kind == "conn_id":
        return f"the audit table of Airflow connection {target!r}"
    parts = urlsplit(target)
    port = f":{parts.port}" if parts.port else ""
    return f"the audit table at {parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def outbox_dir() -> Any:
    """The MLflow outbox: ``COGNIGY_RETRAIN_OUTBOX_DIR`` (a local folder), else ``mlflow_outbox`` in the state store."""
    from include.state import state_store

    if local := os.environ.get("COGNIGY_RETRAIN_OUTBOX_DIR"):
        return Path(local)
    return state_store.root() / "mlflow_outbox"


def run_dir(dag_id: str, run_id: str, target_key: str, attempt: str = "") -> Any:
    """Durable per-run-attempt, per-target folder for rollback points, predictions and reports, in the state
    store (a Path for the local default, an ObjectStoragePath for an object store).

    `attempt` is minted by `validate` for each attempt of a DAG run (a cleared run gets a new one), and the
    folder name carries a hash of (run_id, attempt): two run ids that sanitise alike, or a cleared run, never
    share a folder, and no run id (``..`` included) can leave the state root.
    """
    from include.state import state_store

    digest = hashlib.sha256(f"{dag_id}\n{run_id}\n{attempt}".encode()).hexdigest()[:16]
    path = state_store.root() / "runs" / _safe(dag_id) / f"{_safe(run_id)[:100]}.{digest}" / _safe(target_key)
    state_store.ensure_dir(path)
    return path


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)[:150]
