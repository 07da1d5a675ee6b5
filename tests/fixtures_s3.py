"""Session fixture `s3_server`: a real S3 API for the state store, moto in server mode on 127.0.0.1
(devtools/s3.py: free loopback port, one bucket, stopped at the end of the session).

The fixture also puts the store's Airflow connection into this process's environment
(``AIRFLOW_CONN_COGNIGY_STATE_S3``, as a deployment's secrets backend would give it). The store is reached the way
a deployment reaches it: ``COGNIGY_RETRAIN_STATE_URI=s3://<conn_id>@<bucket>/<prefix>`` (`devtools.s3.s3_uri`).
Used by tests/test_state_store.py (in process and in worker processes) and by the distributed stack
(tests/fixtures_airflow_stack.py: the Celery workers keep their run state there). A test module uses it with
``pytest_plugins = ["tests.fixtures_s3"]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.s3 import CONN_ENV, connection_json, start_s3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3 API in server mode (a real HTTP server, not an in-process mock), one bucket, one Airflow
    connection in the environment. Yields its `url`, the connection's `env_name` and `conn` (JSON)."""
    server = start_s3(tmp_path_factory.mktemp("moto"))
    conn = connection_json(server.url)
    previous = os.environ.get(CONN_ENV)
    os.environ[CONN_ENV] = conn
    try:
        yield {"url": server.url, "env_name": CONN_ENV, "conn": conn}
    finally:
        if previous is None:
            os.environ.pop(CONN_ENV, None)
        else:
            os.environ[CONN_ENV] = previous
        server.stop()
