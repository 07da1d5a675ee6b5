"""The DAG on a real distributed Airflow: api-server, scheduler, dag-processor, Celery worker and triggerer as
separate processes on PostgreSQL + Redis, triggered through the REST API like an operator would."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from devtools.deployment import AIRFLOW_SETTINGS, airflow_keys
from devtools.distributed import FAST_CONF, AirflowStack
from devtools.servers import ROOT, Emulator

pytest_plugins = ["tests.fixtures_airflow_stack"]
pytestmark = pytest.mark.slow

WAIT_TASK = "retrain.wait_for_training"
TRIGGER_CLASS = "CognigyJobTrigger"


def test_stack_runs_with_the_compose_settings(airflow_stack: AirflowStack) -> None:
    """The processes run with exactly the settings docker-compose.yaml is checked against."""
    env = airflow_stack.env
    assert {k: env[k] for k in AIRFLOW_SETTINGS} == AIRFLOW_SETTINGS
    assert all(env.get(k) for k in airflow_keys())
    health = airflow_stack.api("GET", "/api/v2/monitor/health").json()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health


def test_stack_listens_on_loopback_only(airflow_stack: AirflowStack) -> None:
    listening = []
    for name, server in airflow_stack.processes.items():
        root = psutil.Process(server.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((name, conn.laddr.ip, conn.laddr.port))
    assert any(name == "api-server" for name, _, _ in listening), listening
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in listening), listening


def test_rest_triggered_run_succeeds_and_the_wait_is_deferred(airflow_stack: AirflowStack, emulator: Emulator):
    previous = emulator.knobs()["training_seconds"]
    emulator.knobs(training_seconds=8)  # long enough to watch the deferral, short enough for CI
    stack = airflow_stack
    states: dict[tuple[str, int], list[str]] = defaultdict(list)
    deferred_on: dict[tuple[str, int], dict] = {}
    first_deferred: dict[tuple[str, int], float] = {}
    last_deferred: dict[tuple[str, int], float] = {}

    def record(task_instances: list[dict]) -> None:
        now = time.monotonic()
        for ti in task_instances:
            key = (ti["task_id"], ti["map_index"])
            if ti["state"] and (not states[key] or states[key][-1] != ti["state"]):
                states[key].append(ti["state"])
            if ti["state"] == "deferred":
                deferred_on[key] = {"trigger": ti.get("trigger"), "triggerer": ti.get("triggerer_job")}
                first_deferred.setdefault(key, now)
                last_deferred[key] = now

    try:
        stack.unpause()
        started = time.monotonic()
        run_id = stack.trigger(FAST_CONF)
        run = stack.wait_for_run(run_id, timeout=420, on_poll=record)
        to_success = time.monotonic() - started
        assert run["state"] == "success", (run, dict(states))

        waits = [ti for ti in stack.task_instances(run_id) if ti["task_id"] == WAIT_TASK]
        assert waits, "no wait_for_training task instance"
        figures = {"trigger_to_success_seconds": round(to_success, 1), "waits": []}
        for ti in waits:
            key = (WAIT_TASK, ti["map_index"])
            assert ti["state"] == "success"
            # The task really ran on the Celery worker (not in-process) and gave up its slot while waiting:
            assert ti["hostname"], ti
            assert "deferred" in states[key], f"{key} never seen deferred: {states[key]}"
            trigger = deferred_on[key]["trigger"] or {}
            assert trigger.get("classpath", "").endswith(TRIGGER_CLASS), deferred_on[key]
            log = stack.task_log(run_id, WAIT_TASK, ti["try_number"], ti["map_index"])
            assert "Pausing task as DEFERRED" in log
            trigger_logs = list(stack.home.glob(f"logs/dag_id=*/run_id={run_id}/task_id={WAIT_TASK}/*/*.trigger.*"))
            assert any("trigger completed" in p.read_text() for p in trigger_logs), trigger_logs
            figures["waits"].append(
                {
                    "map_index": ti["map_index"],
                    "states_seen": states[key],
                    "deferred_seconds_observed": round(last_deferred[key] - first_deferred[key], 1),
                    "trigger": trigger.get("classpath"),
                    "worker_hostname": ti["hostname"],
                }
            )
        _write_figures(figures)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n\n{stack.tails()}") from exc
    finally:
        emulator.knobs(training_seconds=previous)


def _write_figures(figures: dict) -> None:
    out = Path(ROOT / "test-artifacts" / "distributed-run.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
