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


# `make test` runs the suite on 3 pytest-xdist workers with `--dist loadfile`: most tests wait on trainings, polls
# and pacing, not on the CPU, and each test file stays on one worker, so its session servers and shared DAG runs
# are built once per worker that runs it.
