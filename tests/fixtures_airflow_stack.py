"""Session fixture `airflow_stack`: Airflow with CeleryExecutor as real processes (devtools/distributed.py).

A test module uses it with `pytest_plugins = ["tests.fixtures_airflow_stack"]`, so the browser test and the
distributed test share one stack per session (one fresh PostgreSQL database, one Redis DB index). The tests
that use it run last, so its five idle Airflow processes do not slow the rest of the suite on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.airflow_env import cognigy_conn
from devtools.distributed import AirflowStack, start_stack
from devtools.servers import Emulator, Server


@pytest.fixture(scope="session")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, mlflow_server: Server
) -> Iterator[AirflowStack]:
    stack = start_stack(tmp_path_factory.mktemp("airflow-stack"), cognigy_conn(emulator), mlflow_server.url)
    try:
        stack.wait_for_dag()
        yield stack
    finally:
        stack.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests using `airflow_stack` to the end (stable order otherwise)."""
    items.sort(key=lambda item: "airflow_stack" in getattr(item, "fixturenames", ()))
