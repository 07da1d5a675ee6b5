"""A real S3 API on 127.0.0.1 for the state store: moto in server mode (pinned in requirements-dev.txt).

One process on a free loopback port, in its own process group, logging to a file of the caller's folder, with
one bucket and fixed test credentials. The state store reaches it the way a deployment reaches S3: through
``COGNIGY_RETRAIN_STATE_URI=s3://<conn_id>@<bucket>/<prefix>`` (:func:`s3_uri`) and the Airflow connection
:func:`connection_json` in ``AIRFLOW_CONN_COGNIGY_STATE_S3`` (:data:`CONN_ENV`). Used by tests/fixtures_s3.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3

from devtools.servers import ROOT, Server, free_port, wait_http

CONN_ID = "cognigy_state_s3"
CONN_ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"
BUCKET = "cognigy-state"
ACCESS_KEY = "state-test-key"
SECRET_KEY = "state-test-secret-do-not-log"
REGION = "us-east-1"


def s3_uri(prefix: str = "state") -> str:
    """A fresh state root in the bucket, named through the connection: ``s3://<conn_id>@<bucket>/<prefix>-<hex>``."""
    return f"s3://{CONN_ID}@{BUCKET}/{prefix}-{uuid.uuid4().hex[:10]}"


def s3_client(url: str) -> Any:
    """A boto3 client on the server, for code that looks at the bucket directly."""
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )


def connection_json(url: str) -> str:
    """The Airflow connection (conn type `aws`, `endpoint_url` in extra) as AIRFLOW_CONN_* JSON."""
    conn = {
        "conn_type": "aws",
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        "extra": {"endpoint_url": url, "region_name": REGION},
    }
    return json.dumps(conn)


def start_s3(log_dir: Path, timeout: float = 60) -> Server:
    """`python -m moto.server` on 127.0.0.1:<free port> with the bucket created; returns once it answers."""
    port = free_port()
    log_path = log_dir / "moto.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path, argv=argv)
    try:
        wait_http(f"{server.url}/", timeout=timeout, proc=proc)
        s3_client(server.url).create_bucket(Bucket=BUCKET)
    except BaseException:
        server.stop()
        raise
    return server
