"""docker-compose.yaml parses with the real Docker Compose CLI and carries the settings the distributed test runs
with (devtools/deployment.py). No Docker engine is needed: `docker compose config` only renders the file."""

from __future__ import annotations

import pytest

from devtools.deployment import (
    AIRFLOW_SETTINGS,
    COMPOSE_FILE,
    COMPOSE_SERVICES,
    ENDPOINT_KEYS,
    compose_missing,
    compose_problems,
    render_compose,
)

AIRFLOW_SERVICES = [name for name, component in COMPOSE_SERVICES.items() if component]


def test_the_docker_compose_cli_is_installed() -> None:
    """Without the CLI this fails and every other test here errors (none skips): `make test` installs it first."""
    problem = compose_missing()
    assert problem is None, problem


@pytest.fixture(scope="module")
def compose_cli() -> None:
    problem = compose_missing()
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def config(compose_cli: None) -> dict:
    return render_compose()


def test_compose_file_matches_the_shared_settings(config: dict) -> None:
    assert compose_problems(config) == []


def test_every_component_of_the_stack_is_a_service(config: dict) -> None:
    services = config["services"]
    assert set(COMPOSE_SERVICES) <= set(services)
    commands = {name: " ".join(services[name]["command"]) for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-worker"] == "celery worker"
    assert commands["airflow-triggerer"] == "triggerer"
    assert "mlflow server" in " ".join(services["mlflow"]["command"])
    assert "--allowed-hosts" in services["mlflow"]["command"]
    emulator = " ".join(services["cognigy-emulator"]["command"])
    assert emulator.startswith("python -m emulator --host 0.0.0.0")


def test_airflow_services_share_one_environment(config: dict) -> None:
    envs = {name: config["services"][name]["environment"] for name in AIRFLOW_SERVICES}
    shared = set(AIRFLOW_SETTINGS) | ENDPOINT_KEYS
    reference = {k: envs["airflow-scheduler"][k] for k in shared}
    for name, env in envs.items():
        assert {k: env.get(k) for k in shared} == reference, name
    assert reference["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert reference["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert reference["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")


def test_code_and_pipeline_state_are_mounted_on_every_airflow_service(config: dict) -> None:
    for name in AIRFLOW_SERVICES:
        service = config["services"][name]
        targets = {m["target"]: m for m in service["volumes"]}
        for folder in ("dags", "plugins", "include"):
            assert targets[f"/opt/airflow/{folder}"]["type"] == "bind", name
        state = service["environment"]["COGNIGY_RETRAIN_STATE_DIR"]
        assert targets[state]["type"] == "volume", name  # audit log, outbox and run files survive restarts
        assert service["environment"]["PYTHONPATH"] == "/opt/airflow"


def test_published_ports_listen_on_loopback_only(config: dict) -> None:
    published = [(name, p) for name, s in config["services"].items() for p in s.get("ports", [])]
    assert published, "the UI, MLflow and the emulator should be reachable from the host"
    assert all(p["host_ip"] == "127.0.0.1" for _, p in published), published


def test_secrets_are_required_not_defaulted(compose_cli: None) -> None:
    """Without AIRFLOW_JWT_SECRET / COGNIGY_API_KEY the file refuses to render (no shared default secret)."""
    with pytest.raises(RuntimeError, match="AIRFLOW_JWT_SECRET"):
        render_compose(COMPOSE_FILE, extra_env={"AIRFLOW_JWT_SECRET": ""})
