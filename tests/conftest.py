"""Session-wide real servers: one Cognigy emulator and one MLflow tracking server per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests

from devtools.servers import Emulator, Server, start_emulator, start_mlflow

# The emulator lists a task the moment it is created, so a retry need not wait out a real tenant's task-list lag
# (60 s by default) before concluding a POST started nothing. tests/test_exactly_once.py sets its own bound.
os.environ.setdefault("COGNIGY_TASK_LIST_LAG_SECONDS", "5")


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    server = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield server
    server.stop()


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    """The session emulator at its seed state with default knobs, and no OAuth2 token cached in this process."""
    from include.cognigy.transport import TokenProvider

    emulator.reset()
    TokenProvider._instances.clear()
    yield emulator
    emulator.reset()


@pytest.fixture
def api(emu: Emulator) -> requests.Session:
    """An HTTP session on the emulator's REST API with its API key."""
    session = requests.Session()
    session.headers.update({"X-API-Key": emu.api_key, "Accept": "application/json"})
    return session


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, mlflow_server: Server):
    """A migrated SQLite Airflow home wired to the session's emulator and MLflow server.

    Returns a function building the environment for one `airflow dags test` (extra env overrides allowed).
    """
    from devtools.airflow_env import airflow_env, migrate

    home = tmp_path_factory.mktemp("airflow-home")
    state = tmp_path_factory.mktemp("pipeline-state")
    migrate(airflow_env(home, state, emulator, mlflow_server.url))

    def make_env(**extra: str) -> dict[str, str]:
        return airflow_env(home, state, emulator, mlflow_server.url, **extra)

    make_env.state_dir = state  # type: ignore[attr-defined]
    return make_env


# `make test` runs the suite on 4 pytest-xdist workers with `--dist loadfile`: on 2 cores, because most tests wait
# on trainings, polls and pacing as much as on the CPU. Fresh clones, 2026-12-06: 3 workers and a guessed order
# 1,973 s; 4 workers and this order 1,735 s; then 1,366 s with bytecode compiled at install (Makefile; user+sys CPU
# of the whole command 3,440 -> 2,371 s).
# Each test file stays on one worker, so its session servers and shared DAG runs are built once per worker.
#
# Order matters on 2 cores: xdist hands the files out in the order below (`--no-loadscope-reorder`; its default
# orders by number of tests, which put the one-test, many-minute end-to-end files last and left two workers idle
# while the third finished them). Files that share something slow to build are one unit of work, on one worker:
# the fleet night (one real-scheduler night, built once under a file lock, so no worker waits on that lock) and the
# distributed stack (tests/fixtures_airflow_stack.py: session fixtures, so each worker using it started its own).
SLOWEST_FIRST = (  # seconds each file's tests took in a fresh-clone `make test` on 3 workers (2026-12-06, 1,973 s wall)
    "test_own_data.py",  # 549
    "test_staging.py",  # 534
    "test_snapshot_release.py",  # 499
    "test_mlflow_pipeline.py",  # 474
    "test_distributed.py",  # 425, with test_browser.py 125, test_audit_db.py 117, test_services.py
    "test_fleet_scheduler.py",  # 382
    "test_fault_matrix.py",  # 309
    "test_approval_flow.py",  # 300
    "test_fleet.py",  # 211, the fleet night with test_links.py and test_branching.py
    "test_budget_outage.py",  # 138
    "test_pipeline_e2e.py",  # 135
    "test_spec_api.py",  # 104
)
SHARED = {
    "fleet night": ("test_fleet.py", "test_links.py", "test_branching.py"),
    "distributed stack": ("test_distributed.py", "test_browser.py", "test_audit_db.py", "test_services.py"),
}
_UNIT_OF = {name: unit for unit, files in SHARED.items() for name in files}


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slowest files first (a shared unit with its first file), the rest in collection order (a stable sort keeps
    each file's tests in order)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    for files in SHARED.values():
        first = min((rank[f] for f in files if f in rank), default=len(rank))
        rank.update({f: first + (i + 1) / 10 for i, f in enumerate(files) if f not in rank})
    items.sort(key=lambda item: rank.get(_file_of(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile`, with the files of a shared unit (`SHARED`) as one unit of work."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SlowestFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _UNIT_OF.get(_file_of(nodeid)) or super()._split_scope(nodeid)

    return SlowestFirst(config, log)
