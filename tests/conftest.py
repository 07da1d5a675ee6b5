"""Session-wide real servers: one Cognigy emulator and one MLflow tracking server per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.servers import Emulator, Server, start_emulator, start_mlflow


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    server = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()
