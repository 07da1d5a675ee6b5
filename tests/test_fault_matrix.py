"""Fault matrix: every failure path of submit / wait / rollback, each against the emulator or a real process.

Every row asserts what a user would check afterwards:
- the flow's final state on the emulator (intents export fingerprint == the rollback point, or the new data),
- how many trainings the emulator started (exactly one per intended training: the run's training, plus one
  for a rollback retrain),
- the audit events of the run.

Rows that need Airflow's scheduling (trigger rules, a failed run, a real worker + triggerer in one process)
run the whole DAG with `airflow dags test`. The others drive the real operators and step functions
in-process, task by task, the way Airflow would: a new try number on retry, the same task state store
across tries, a deferral's trigger run to its first event and the task resumed with it. That harness is a
stand-in only for Airflow's scheduler; Cognigy (the emulator), HTTP, the trigger and the audit log are real.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.airflow_env import DEMO_CONF, cognigy_conn, dags_test
from devtools.servers import ROOT, Emulator, start_emulator
from emulator import seed
from include.records.audit import read, verify

sys.path.insert(0, str(ROOT / "plugins"))  # what Airflow does with its plugins folder
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".state" / "pytest-airflow-home"))

from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from cognigy_provider.hooks.cognigy import CognigyHook
from cognigy_provider.triggers.cognigy import CognigyJobTrigger

from cognigy_airflow import branches, capture, evaluate, finalize, validate
from cognigy_airflow.promote import CognigyPromoteOperator
from cognigy_airflow.release import CognigySnapshotReleaseOperator
from cognigy_airflow.rollback import CognigyRollbackOperator
from cognigy_airflow.submit import CognigySubmitTrainingOperator
from cognigy_airflow.wait_for_training import WaitForTraining
from include.cognigy import rest_v2
from include.cognigy.client import CognigyClient
from include.cognigy.model import Target
from include.data import dataset

pytestmark = pytest.mark.slow
log = logging.getLogger("fault_matrix")

DAG_ID = "cognigy_nlu_retrain"
CONN_ID = "cognigy_faults"
LOCALE = "en-US"
# Small, fast runs: the faults, not the data volume, are what is under test.
FAST = {
    **DEMO_CONF,
    "promotion": "in_place",  # these rows exercise the in-place path; tests/test_staging.py has the staging rows
    "requests_per_second": 100,
    "held_out_per_intent": 3,
    "samples_per_intent": 40,
    "poll_min_seconds": 0.5,
    "poll_max_seconds": 2.0,
    "reconcile_seconds": 3,
}
DAG_FAST = {**FAST, "held_out_per_intent": 4, "poll_min_seconds": 1.0, "poll_max_seconds": 5.0}  # the form's minimums
TASK_ROUTE = "GET /new/v2.0/tasks/{taskId}"
LENIENT_GATES = {
    "precision_floor": 0.0, "recall_floor": 0.0, "pr_balance_tolerance": 1.0, "per_intent_recall_floor": 0.0,
    "bias_ceiling": 1.0, "max_accuracy_drop": 1.0,
}  # fmt: skip


# --- the emulator as a user would inspect it ---------------------------------------------------------
def export_fingerprint(emulator: Emulator) -> str:
    resp = requests.post(
        f"{emulator.url}/new/v2.0/flows/{seed.FLOW_ID}/intents/export",
        json={"localeId": seed.LOCALE_IDS[LOCALE], "format": "json"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    return rest_v2.fingerprint(resp.json())


def trainings(emulator: Emulator) -> list[dict[str, Any]]:
    """The tenant's trainIntents tasks, oldest first (the list holds every kind of task: each item's own type)."""
    resp = requests.get(
        f"{emulator.url}/new/v2.0/tasks",
        params={"projectId": seed.PROJECT_ID, "limit": 100, "sort": "createdAt:asc"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    return [task for task in resp.json()["items"] if task["type"] == "trainIntents"]


def new_data_fingerprint(plan: dict[str, Any]) -> str:
    training = dataset.sample_training(LOCALE, plan["request"]["trainingDataSliceMatrix"])
    return rest_v2.fingerprint(rest_v2.intents_file(training))


def started(emulator: Emulator) -> int:
    return emulator.stats()["trainings_total"]


def audit_events(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    path = state_dir / "audit" / "retrain_audit.jsonl"
    assert verify(path).ok
    return read(path, run_id=run_id)


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def observed(row: str, emulator: Emulator, events: list[dict[str, Any]], **numbers: Any) -> None:
    """One line per row with what happened (shown by `pytest -rA`), for the fault matrix's report."""
    stats = emulator.stats()
    outcome = next((e["outcome"] for e in reversed(events) if e["event"] == "retrain_completed"), None)
    print(f"FAULT-MATRIX {row}: trainings={stats['trainings_total']} outcome={outcome} "
          + " ".join(f"{k}={v}" for k, v in numbers.items()))  # fmt: skip


# --- an in-process run: real operators and steps, Airflow's retry/deferral semantics ----------------
class StateStore:
    """Stand-in for Airflow 3.3's `context["task_state_store"]` (dict-backed, kept across tries, like the
    real one). The real accessor needs a supervisor process to talk to, which only a running task has."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")  # as the real store
        self.data[key] = value


@dataclass
class TI:
    dag_id: str
    run_id: str
    task_id: str
    try_number: int = 1
    max_tries: int = 2
    map_index: int = -1  # one run per bot/locale: no mapped task group
    xcoms: dict[str, Any] = field(default_factory=dict)  # this run's task results by task id (the Run's)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"fault_matrix.{self.task_id}")

    def xcom_pull(self, task_ids: str, map_indexes: int | None = None) -> Any:
        """What Airflow's XCom would give: the latest successful try's return value, or None."""
        return self.xcoms.get(task_ids)


@dataclass
class DagRun:
    run_type: str = "manual"
    triggering_user_name: str = "fault-matrix"


def dag_defaults() -> dict[str, Any]:
    module = importlib.import_module("dags.cognigy_nlu_retrain")
    return {name: param.value for name, param in module.PARAMS.items()}


async def first_event(trigger: CognigyJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("trigger ended without an event")


class Run:
    """One DAG run driven task by task in this process."""

    NOT_RETRIED: tuple[type[BaseException], ...] = (AirflowFailException,)  # what ends a task without a retry

    def __init__(self, run_id: str, retries: int = 2, **params: Any) -> None:
        self.run_id = run_id
        self.retries = retries
        self.params = {**dag_defaults(), **FAST, "cognigy_conn_id": CONN_ID, **params}
        self.stores: dict[str, StateStore] = defaultdict(StateStore)
        self.tries: dict[str, int] = defaultdict(int)
        self.results: dict[str, Any] = {}  # XCom: each task's return value (a failed or skipped try leaves none)

    def context(self, task_id: str) -> dict[str, Any]:
        self.tries[task_id] += 1
        ti = TI(DAG_ID, self.run_id, task_id, self.tries[task_id], self.retries, xcoms=self.results)
        return {"ti": ti, "dag_run": DagRun(), "params": self.params, "task_state_store": self.stores[task_id]}

    def call(self, task_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A @task body, retried like Airflow would (AirflowFailException: no retry)."""
        return self._tries(task_id, lambda ctx: fn(*args, **kwargs, **ctx))

    def operate(self, op: Any) -> Any:
        """An operator: execute, run a deferral's trigger to its event, resume; retried like Airflow."""

        def once(ctx: dict[str, Any]) -> Any:
            try:
                return op.execute(ctx)
            except TaskDeferred as deferred:
                event = asyncio.run(first_event(deferred.trigger))
                return getattr(op, deferred.method_name)(ctx, event=event)

        return self._tries(op.task_id, once)

    def _tries(self, task_id: str, once: Callable[[dict[str, Any]], Any]) -> Any:
        while True:
            ctx = self.context(task_id)
            self.results.pop(task_id, None)  # Airflow clears a task's XCom when a try starts
            try:
                self.results[task_id] = result = once(ctx)
                return result
            except self.NOT_RETRIED:
                raise
            except Exception as exc:
                if ctx["ti"].try_number > self.retries:
                    raise
                log.warning("%s try %d failed (%s); Airflow would retry", task_id, ctx["ti"].try_number, exc)


def first_target(validated: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plan, target) of the run's one flow/locale, from validate's result ``{"target", "plan"}``."""
    return validated["plan"], validated["target"]


def branch(chosen: list[str] | str | None) -> set[str]:
    """The task ids a branch task follows (a branch returns one id, a list, or nothing)."""
    return {chosen} if isinstance(chosen, str) else set(chosen or ())


def after_evaluation(
    run: Run,
    target: dict[str, Any],
    plan: dict[str, Any],
    task: Callable[[str, Callable[[], Any]], Any],
) -> dict[str, Any]:
    """The graph from `decide` to `audit`, as Airflow schedules it: `decide` (ALL_DONE, branches.decide on this
    run's XComs) picks promote | release | rollback | mlflow_sync or nothing; `promote`, `release` and `rollback`
    run on the path taken unless a task before them on it failed (NONE_FAILED_MIN_ONE_SUCCESS); `confirm`
    (ALL_DONE, after `release`) picks rollback | mlflow_sync; `audit` (finalize.finalize, ALL_DONE) closes the run.
    `task(name, body)` runs one task the caller's way (raise, or record a failure). `approve` (opt-in) is not
    driven here (tests/test_approval*.py); `mlflow_sync` neither (not under test: `audit` gets synced=None).
    Returns each task's result by task id (None: skipped, failed or not on the path)."""
    common = {"target": target, "plan": plan}
    done: dict[str, Any] = {}

    def step(name: str, body: Callable[[], Any]) -> Any:
        done[name] = result = task(name, body)
        return result

    evaluated = run.results.get("evaluate")
    path = branch(step("decide", lambda: run.call("decide", branches.decide, target, plan, evaluated)))
    assert "approve" not in path, "approval is opt-in; these runs never ask for it"
    if "promote" in path:
        promote = CognigyPromoteOperator(task_id="promote", evaluated=evaluated, **common)
        step("promote", lambda: run.operate(promote))
    if path & {"promote", "release"}:
        if "promote" not in path or "promote" in run.results:  # a failed promotion: release upstream_failed
            release = CognigySnapshotReleaseOperator(task_id="release", promoted=run.results.get("promote"), **common)
            step("release", lambda: run.operate(release))
        released = run.results.get("release")
        path |= branch(step("confirm", lambda: run.call("confirm", branches.confirm, target, plan, released)))
    if "rollback" in path:
        step("rollback", lambda: run.operate(CognigyRollbackOperator(task_id="rollback", **common)))
    done["path"] = sorted(path)
    return done


@dataclass
class Outcome:
    plan: dict[str, Any]
    captured: dict[str, Any]
    submitted: dict[str, Any] | None = None
    waited: dict[str, Any] | None = None
    evaluated: dict[str, Any] | None = None
    released: dict[str, Any] | None = None
    rolled_back: dict[str, Any] | None = None
    path: list[str] = field(default_factory=list)  # the task ids the branches chose
    final: dict[str, Any] | None = None
    final_error: str | None = None


def pipeline(run: Run, before: dict[str, Callable[[], None]] | None = None, stop_after: str = "audit") -> Outcome:
    """validate → capture → submit → wait_for_training → evaluate → decide → (release → confirm) → rollback (when
    the branches choose it) → audit, in place (these rows run `promotion: in_place`; no MLflow: not under test).
    A task that fails here fails the test, except `audit` (its error is the run's failure: `final_error`)."""
    before = before or {}

    def phase(name: str) -> None:
        if name in before:
            before[name]()

    plan, target = first_target(run.call("validate", validate.validate))
    common = {"target": target, "plan": plan}
    phase("capture")
    out = Outcome(plan, run.call("capture", capture.capture, **common))
    phase("submit")
    out.submitted = run.operate(CognigySubmitTrainingOperator(task_id="submit", captured=out.captured, **common))
    if stop_after == "submit":
        return out
    phase("wait")
    out.waited = run.operate(WaitForTraining(task_id="wait_for_training", submitted=out.submitted, **common))
    if stop_after == "wait":
        return out
    phase("evaluate")
    out.evaluated = run.call("evaluate", evaluate.evaluate, target, plan, out.waited)

    def task(name: str, body: Callable[[], Any]) -> Any:
        phase(name)
        return body()

    done = after_evaluation(run, target, plan, task)
    out.released, out.rolled_back, out.path = done.get("release"), done.get("rollback"), done["path"]
    try:
        out.final = run.call("audit", finalize.finalize, target, plan, None)
    except AirflowFailException as exc:
        out.final_error = str(exc)
    return out


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh pipeline state dir (audit log, run folders) for an in-process run."""
    folder = tmp_path / "pipeline-state"
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(folder))
    return folder


def use_connection(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, oauth: bool = False, **extra: Any) -> None:
    conn = json.loads(cognigy_conn(emulator, oauth=oauth))
    conn["extra"].update(extra)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


@pytest.fixture
def fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Emulator:
    """The session emulator back at its seed tenant with default knobs, reached through CONN_ID (API key)."""
    emulator.reset()
    use_connection(monkeypatch, emulator)
    return emulator


def final_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    completed = [e for e in events if e["event"] == "retrain_completed"]
    assert completed, names(events)
    return completed[-1]


def assert_carried_through(events: list[dict[str, Any]], emulator: Emulator, new_data: str, point: str) -> None:
    """The run ended the way its gates decided (a fault must not decide it), and the flow shows that decision:
    promoted -> one training, the new data, the release confirmed; rejected -> the training + one restoring
    retrain, and the rollback point. Which of the two the gates pick from a small held-out set is not what these
    rows test."""
    outcome = final_of(events)["outcome"]
    if outcome == "promoted":
        assert started(emulator) == 1 and export_fingerprint(emulator) == new_data
        # in place, the trained live flow is the release: `release` read the endpoints back (it did not fail)
        assert "release_confirmed" in names(events) and "release_failed" not in names(events), names(events)
    else:
        assert outcome == "rejected_rolled_back", outcome
        assert started(emulator) == 2 and export_fingerprint(emulator) == point
        assert names(events).count("rollback_verified") == 1


# --- 1. token expiry during the wait -----------------------------------------------------------------
def test_token_expiring_during_the_wait_is_refreshed(fresh: Emulator, monkeypatch, state_dir: Path) -> None:
    use_connection(monkeypatch, fresh, oauth=True)  # OAuth2 client credentials instead of the API key
    fresh.knobs(token_ttl_seconds=2, training_seconds=8)
    run = Run("fault-token-expiry")
    out = pipeline(run, stop_after="wait")

    assert out.waited and out.waited["state"] == "succeeded", out.waited
    assert started(fresh) == 1
    assert export_fingerprint(fresh) == new_data_fingerprint(out.plan) != out.captured["fingerprint"]
    tokens = fresh.stats()["by_route"].get("POST /auth/oauth2/token", 0)
    # The first token expires 2 s into an 8 s training: the wait can only succeed on a fetched-again token.
    # How many refreshes it takes depends on the poll rate, so only "at least one" is asserted.
    assert tokens >= 2, f"an 8 s training with 2 s tokens needs a refreshed token, saw {tokens} token request(s)"
    events = audit_events(state_dir, run.run_id)
    assert names(events).count("training_submitted") == 1
    assert "retrain_failed" not in names(events)
    observed("1 token expiry", fresh, events, token_requests=tokens, wait=out.waited["state"],
             status_401=fresh.stats()["by_status"].get("401", 0))  # fmt: skip


# --- 2. 429 storm during polling and evaluation ------------------------------------------------------
def test_rate_limit_storm_during_polling_and_evaluation_slows_but_finishes(fresh: Emulator, state_dir: Path) -> None:
    marks: dict[str, tuple[float, int]] = {}

    def mark(name: str) -> Callable[[], None]:
        def at() -> None:
            marks[name] = (time.monotonic(), fresh.stats()["responses_429"])
            if name == "wait":  # polling: one request per 3 s for the whole tenant
                fresh.knobs(rate_limit_requests=1, rate_limit_window_seconds=3)
            if name == "evaluate":  # scoring: 10 requests per 2 s, far below what the client would send
                fresh.knobs(rate_limit_requests=10, rate_limit_window_seconds=2)

        return at

    fresh.knobs(training_seconds=5)
    run = Run("fault-429-storm", **LENIENT_GATES)
    out = pipeline(run, before={"wait": mark("wait"), "evaluate": mark("evaluate")}, stop_after="audit")
    done = (time.monotonic(), fresh.stats()["responses_429"])
    fresh.knobs(rate_limit_requests=1000, rate_limit_window_seconds=300)  # the storm is over: inspect the tenant

    assert out.waited["state"] == "succeeded"
    assert marks["evaluate"][1] > marks["wait"][1], "the trigger met no 429 while polling"
    assert done[1] > marks["evaluate"][1], "the evaluation met no 429"
    predictions = (Path(out.captured["champion_predictions_path"]).parent / "challenger_predictions.jsonl").read_text()
    statuses = [json.loads(line)["status"] for line in predictions.splitlines()]
    assert statuses and set(statuses) == {"scored"}, "every held-out utterance was scored despite the 429s"
    eval_seconds = done[0] - marks["evaluate"][0]
    assert eval_seconds >= (len(statuses) / 10 - 1) * 2, "10 requests per 2 s cannot score this fast"
    events = audit_events(state_dir, run.run_id)
    assert out.final_error is None
    assert_carried_through(events, fresh, new_data_fingerprint(out.plan), out.captured["fingerprint"])
    observed("2 429 storm", fresh, events, polling_429=marks["evaluate"][1] - marks["wait"][1],
             evaluation_429=done[1] - marks["evaluate"][1], scored=len(statuses),
             evaluation_seconds=round(eval_seconds, 1))  # fmt: skip


# --- 3. 5xx and connection resets on every call type -------------------------------------------------
def test_5xx_and_connection_resets_on_every_call_type(fresh: Emulator, state_dir: Path) -> None:
    injected = {"5xx": 0, "resets": 0}

    def faults(*rules: tuple[str, str, int | None]) -> Callable[[], None]:
        """(method, path regex, status) -> a 5xx; status None -> a connection reset (before processing)."""

        def inject() -> None:
            fail = [{"method": m, "path_regex": p, "status": s, "count": 1} for m, p, s in rules if s]
            injected["5xx"] += len(fail)
            injected["resets"] += len(rules) - len(fail)
            drop = [{"method": m, "path_regex": p, "count": 1} for m, p, s in rules if s is None]
            fresh.knobs(fail_next_requests=fail, drop_connections=drop)

        return inject

    train, imp, exp, scores = r"/intents/train$", r"/intents/import$", r"/intents/export$", r"/nlu/scores$"
    task, tasks, locales, flow = r"/tasks/[0-9a-f]+$", r"/tasks$", r"/locales$", r"/flows/[0-9a-f]+$"
    before = {
        "capture": faults(("GET", locales, 503), ("POST", exp, 500), ("POST", exp, None), ("POST", scores, 502)),
        # the train POST answered 500 (never processed): ambiguous, reconciled (nothing found), retried once
        "submit": faults(("POST", imp, 500), ("GET", task, None), ("POST", train, 500), ("GET", tasks, 503)),
        "wait": faults(("GET", task, 500), ("GET", task, 503)),
        "evaluate": faults(("POST", scores, 500), ("POST", scores, None), ("GET", flow, 503)),
        # the restore's train POST is processed, then the connection drops: reconciled, not sent again
        "rollback": lambda: (
            fresh.knobs(
                fail_next_requests=[{"method": "POST", "path_regex": imp, "status": 502, "count": 1}],
                drop_connections=[{"method": "POST", "path_regex": train, "count": 1, "after_processing": True}],
            ),
            injected.update({"5xx": injected["5xx"] + 1, "resets": injected["resets"] + 1}),
        ),
    }
    fresh.knobs(training_seconds=2)
    run = Run("fault-5xx-resets", precision_floor=0.999)  # a gate that rejects, so the rollback path runs too
    out = pipeline(run, before=before)

    assert out.waited["state"] == "succeeded"
    assert out.rolled_back and out.rolled_back["verified"], out
    assert export_fingerprint(fresh) == out.captured["fingerprint"]
    assert started(fresh) == 2  # the run's training + the restoring retrain, despite both ambiguous POSTs
    knobs = fresh.knobs()
    assert knobs["fail_next_requests"] == [] and knobs["drop_connections"] == [], "every fault was met"
    statuses = fresh.stats()["by_status"]
    assert sum(n for status, n in statuses.items() if status.startswith("5")) == injected["5xx"] == 11
    assert injected["resets"] == 4
    events = audit_events(state_dir, run.run_id)
    assert names(events).count("training_submitted") == 1
    assert names(events).count("rollback_retrain_started") == 1
    assert "rollback_verified" in names(events)
    assert final_of(events)["outcome"] == "rejected_rolled_back"
    assert out.final_error is None  # a rejected model rolled back is a completed run
    observed("3 5xx+resets", fresh, events, injected_5xx=injected["5xx"], injected_resets=injected["resets"],
             submit_tries=run.tries["submit"], rollback_tries=run.tries["rollback"])  # fmt: skip


# --- 4. submit answered by a timeout after the emulator accepted it ---------------------------------
def test_submit_timeout_after_accept_starts_no_second_training(emulator: Emulator, monkeypatch, state_dir) -> None:
    emulator.reset()
    use_connection(monkeypatch, emulator, timeout=1)
    emulator.knobs(
        training_seconds=2,
        hang_after_accept=[{"method": "POST", "path_regex": r"/intents/train$", "seconds": 4, "count": 1}],
    )
    run = Run("fault-submit-timeout")
    out = pipeline(run, stop_after="wait")
    time.sleep(4)  # the held answer is released now; nothing may follow it

    tasks = trainings(emulator)
    assert started(emulator) == 1 and len(tasks) == 1
    assert out.submitted["job_id"] == tasks[0]["_id"]
    assert out.waited["state"] == "succeeded"
    assert export_fingerprint(emulator) == new_data_fingerprint(out.plan)
    assert run.tries["submit"] == 1, "reconciled within the try, no retry needed"
    events = audit_events(state_dir, run.run_id)
    submitted = [e for e in events if e["event"] == "training_submitted"]
    assert len(submitted) == 1 and submitted[0]["cognigy_job_id"] == tasks[0]["_id"]
    observed("4 submit timeout after accept", emulator, events, submit_tries=run.tries["submit"])


# --- 5. worker killed between submit and wait --------------------------------------------------------
class WorkerKilled(BaseException):
    """The worker process dying (SIGKILL, OOM): nothing in the task can catch or clean up after it."""


def test_worker_killed_right_after_the_post_reattaches_on_retry(fresh: Emulator, monkeypatch, state_dir) -> None:
    """A real worker kill cannot be timed on demand into the few microseconds between the POST's answer and
    `state.set("submit.job_id")`. So the real client POSTs for real and then "dies" (WorkerKilled) before
    the answer reaches the operator. The retry gets what a retry on another worker gets: the same
    task_state_store (here dict-backed) and NO local files (the state file copy is deleted)."""
    fresh.knobs(training_seconds=2)
    run = Run("fault-worker-killed")
    plan, target = first_target(run.call("validate", validate.validate))
    captured = run.call("capture", capture.capture, target=target, plan=plan)
    real_start = CognigyClient.start_training
    posted: list[str] = []

    def post_then_die(self: CognigyClient, *args: Any, **kwargs: Any) -> Any:
        status = real_start(self, *args, **kwargs)  # the training really starts on the tenant
        posted.append(status.job_id)
        raise WorkerKilled("worker lost after the POST returned, before the job id was stored")

    op = CognigySubmitTrainingOperator(task_id="submit", target=target, plan=plan)
    monkeypatch.setattr(CognigyClient, "start_training", post_then_die)
    with pytest.raises(WorkerKilled):
        op.execute(run.context("submit"))
    monkeypatch.setattr(CognigyClient, "start_training", real_start)
    assert "submit.intent_at" in run.stores["submit"].data and "submit.job_id" not in run.stores["submit"].data
    for leftover in Path(captured["rollback_point_path"]).parent.glob("submit_state.*"):
        leftover.unlink()  # the retry runs on another worker

    retry = CognigySubmitTrainingOperator(task_id="submit", target=target, plan=plan).execute(run.context("submit"))

    assert retry["reattached"] is True and retry["job_id"] == posted[0]
    assert started(fresh) == 1
    waited = run.operate(WaitForTraining(task_id="wait_for_training", target=target, plan=plan, submitted=retry))
    assert waited["state"] == "succeeded" and started(fresh) == 1
    assert export_fingerprint(fresh) == new_data_fingerprint(plan)
    events = audit_events(state_dir, run.run_id)
    reattached = [e for e in events if e["event"] == "training_reattached"]
    assert len(reattached) == 1 and reattached[0]["via"] == "tenant task list"
    assert reattached[0]["cognigy_job_id"] == posted[0] and reattached[0]["try_number"] == 2
    assert "training_submitted" not in names(events)
    observed("5 worker killed after POST", fresh, events, via=reattached[0]["via"], retry_try=2)


# --- 6. triggerer restarted mid-wait -----------------------------------------------------------------
TRIGGER_PROCESS = """
import asyncio, json, sys
sys.path.insert(0, "plugins")
from cognigy_provider.triggers.cognigy import CognigyJobTrigger
print("ready", file=sys.stderr, flush=True)  # imports done: the training may start now
kwargs = json.loads(sys.stdin.readline())
async def main():
    async for event in CognigyJobTrigger(**kwargs).run():
        print(json.dumps(event.payload), flush=True)
asyncio.run(main())
"""


def test_triggerer_killed_mid_wait_and_a_fresh_trigger_resumes(fresh: Emulator, monkeypatch) -> None:
    fresh.knobs(training_seconds=8)
    client = CognigyHook(CONN_ID).get_client()
    target = Target(seed.PROJECT_ID, seed.FLOW_ID, LOCALE, seed.MODEL_IDS[LOCALE])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-c", TRIGGER_PROCESS], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert first.stdin is not None and first.stderr is not None
        while (line := first.stderr.readline()).strip() != b"ready":  # a loaded machine imports slowly: wait
            assert line, "the trigger process died while importing"
        job = client.start_training(target, mode="full", spec_body={}, idempotency_key="unused-on-rest-v2")
        requests_before = fresh.stats()["requests_total"]
        classpath, kwargs = CognigyJobTrigger(
            conn_id=CONN_ID, dialect="rest-v2", job_id=job.job_id, end_time=time.time() + 120, poll_min=0.5,
            poll_max=1.0,
        ).serialize()  # fmt: skip
        polls_before = fresh.stats()["by_route"].get(TASK_ROUTE, 0)
        first.stdin.write(json.dumps(kwargs).encode() + b"\n")
        first.stdin.flush()
        deadline = time.monotonic() + 60
        while fresh.stats()["by_route"].get(TASK_ROUTE, 0) < polls_before + 2:
            if first.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the first triggerer never polled: {first.communicate()}")
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)  # the triggerer dies mid-wait, without a goodbye
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.stdout is not None and first.stdout.read() == b"", "the first trigger must not have finished"
    assert client.job_status(job.job_id).state in ("queued", "running")

    module, _, name = classpath.rpartition(".")
    resumed = getattr(importlib.import_module(module), name)(**kwargs)  # as a new triggerer rebuilds it
    event = asyncio.run(first_event(resumed))

    assert event["outcome"] == "finished"
    assert event["status"]["job_id"] == job.job_id and event["status"]["state"] == "succeeded"
    assert started(fresh) == 1  # polling has no side effects: neither trigger started anything
    stats = fresh.stats()
    polls = stats["by_route"][TASK_ROUTE] - polls_before
    assert stats["requests_total"] - requests_before == polls, "the triggers sent nothing but status GETs"
    observed("6 triggerer killed", fresh, [], polls_both_triggers=polls, resumed_polls=event["polls"],
             final=event["status"]["state"])  # fmt: skip


# --- 9. rollback import failing once -----------------------------------------------------------------
def test_rollback_import_failing_once_is_imported_again_and_verified(fresh: Emulator, state_dir: Path) -> None:
    fresh.knobs(training_seconds=2)
    run = Run("fault-rollback-import", precision_floor=0.999)  # rejected by the gates: rollback
    out = pipeline(run, before={"rollback": lambda: fresh.knobs(fail_next_imports=1)})

    assert out.rolled_back and out.rolled_back["verified"]
    assert export_fingerprint(fresh) == out.captured["fingerprint"]
    assert started(fresh) == 2  # the training + one restoring retrain
    tasks = fresh.stats()["tasks"]
    assert tasks.get("error") == 1, f"the injected import failure happened: {tasks}"
    assert fresh.knobs()["fail_next_imports"] == 0
    events = audit_events(state_dir, run.run_id)
    assert names(events).count("rollback_retrain_started") == 1
    verified = [e for e in events if e["event"] == "rollback_verified"]
    assert len(verified) == 1 and verified[0]["fingerprint"] == out.captured["fingerprint"]
    assert verified[0]["agreement"] >= CognigyRollbackOperator.MIN_AGREEMENT
    assert final_of(events)["outcome"] == "rejected_rolled_back"
    assert run.tries["rollback"] == 1, "the rollback task imported again itself"
    observed("9 rollback import fails once", fresh, events, failed_imports=tasks.get("error"),
             rollback_tries=run.tries["rollback"], agreement=verified[0]["agreement"])  # fmt: skip


# --- whole DAG runs (airflow dags test) --------------------------------------------------------------
def run_dag(airflow_home, tmp_path: Path, conf: dict[str, Any], **env: str) -> tuple[str, str]:
    log_file = tmp_path / "dags_test.log"
    proc = dags_test(airflow_home(**env), {**DAG_FAST, **conf}, log_path=log_file, timeout=600)
    text = log_file.read_text(errors="replace")
    finished = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert finished, f"exit {proc.returncode}: {text[-3000:]}"
    state = "success" if "state=success" in finished[-1] else "failed"
    return state, finished[-1].split("run_id=")[1].split(",")[0]


def captured_fingerprint(events: list[dict[str, Any]]) -> str:
    return next(e["fingerprint"] for e in events if e["event"] == "rollback_point_captured")


# --- 7. training error ---------------------------------------------------------------------------------
def test_training_error_rolls_back_and_fails_the_run_after_auditing(airflow_home, emulator, tmp_path) -> None:
    emulator.reset()
    emulator.knobs(training_seconds=2, fail_next_trainings=1)
    state, run_id = run_dag(airflow_home, tmp_path, {})

    assert state == "failed"
    events = audit_events(airflow_home.state_dir, run_id)
    assert export_fingerprint(emulator) == captured_fingerprint(events)
    assert started(emulator) == 2  # the failed training + the restoring retrain
    order = names(events)
    for event in ("training_submitted", "retrain_failed", "rollback_triggered", "rollback_retrain_started",
                  "rollback_verified", "retrain_completed"):  # fmt: skip
        assert event in order, order
    assert order.index("retrain_failed") < order.index("rollback_verified") < order.index("retrain_completed")
    assert final_of(events)["outcome"] == "training_failed_rolled_back"
    assert [t["status"] for t in trainings(emulator)] == ["error", "done"]
    observed("7 training error", emulator, events, run_state=state)


# --- 8. deadline exceeded ------------------------------------------------------------------------------
def test_deadline_cancels_the_training_and_rolls_back(airflow_home, emulator, tmp_path) -> None:
    emulator.reset()
    emulator.knobs(training_seconds=12)  # the restoring retrain keeps the request's deadline (600 s)
    state, run_id = run_dag(airflow_home, tmp_path, {"deadline_seconds_override": 3})

    assert state == "failed"
    events = audit_events(airflow_home.state_dir, run_id)
    assert [t["status"] for t in trainings(emulator)] == ["cancelled", "done"]
    assert started(emulator) == 2
    assert export_fingerprint(emulator) == captured_fingerprint(events)
    failed = [e for e in events if e["event"] == "retrain_failed"]
    assert failed and failed[0]["outcome"] == "deadline" and failed[0]["deadline_seconds"] == 3
    assert "rollback_verified" in names(events)
    assert final_of(events)["outcome"] == "training_deadline_rolled_back"
    observed("8 deadline", emulator, events, run_state=state,
             statuses=[t["status"] for t in trainings(emulator)])  # fmt: skip


def submissions_recorded(state_dir: Path) -> int:
    """How many training_submitted records the session's audit trail holds (all runs)."""
    path = state_dir / "audit" / "retrain_audit.jsonl"
    return path.read_text(errors="replace").count('"training_submitted"') if path.exists() else 0


# --- 10. emulator restarted mid-run --------------------------------------------------------------------
def test_emulator_restart_mid_run_keeps_state_and_the_run_completes(airflow_home, tmp_path) -> None:
    own_dir = tmp_path / "own-emulator"
    own = start_emulator(own_dir)
    port = int(own.url.rsplit(":", 1)[1])
    result: dict[str, Any] = {}
    try:
        own.knobs(training_seconds=10)
        env = {"AIRFLOW_CONN_COGNIGY_DEFAULT": cognigy_conn(own)}
        conf = {**LENIENT_GATES, "held_out_per_intent": 6}
        submissions_before = submissions_recorded(airflow_home.state_dir)
        runner = threading.Thread(target=lambda: result.update(run=run_dag(airflow_home, tmp_path, conf, **env)))
        runner.start()
        deadline = time.monotonic() + 240
        while submissions_recorded(airflow_home.state_dir) == submissions_before:  # waiting, no longer submitting
            assert runner.is_alive() and time.monotonic() < deadline, "the run never submitted its training"
            time.sleep(0.5)
        job = trainings(own)[0]["_id"]
        own.stop()  # the tenant goes away mid-wait ...
        time.sleep(3)
        own = start_emulator(own_dir, port=port)  # ... and comes back with the same state dir
        assert [t["_id"] for t in trainings(own)] == [job], "the restarted emulator kept the training"
        runner.join(timeout=480)
        assert not runner.is_alive()

        state, run_id = result["run"]
        events = audit_events(airflow_home.state_dir, run_id)
        assert state == "success", names(events)
        assert trainings(own)[0]["_id"] == job and trainings(own)[0]["status"] == "done"
        submitted = [e for e in events if e["event"] == "training_submitted"]
        assert len(submitted) == 1 and submitted[0]["cognigy_job_id"] == job
        plan_matrix = {name: DAG_FAST["samples_per_intent"] for name in dataset.intents(LOCALE)}
        new_data = rest_v2.fingerprint(rest_v2.intents_file(dataset.sample_training(LOCALE, plan_matrix)))
        assert_carried_through(events, own, new_data, captured_fingerprint(events))
        observed("10 emulator restart", own, events, run_state=state, job_kept=job)
    finally:
        own.stop()


# --- 11. worker process SIGKILLed after its POST was accepted; 12. two tries at once (zombie worker) --------
SUBMIT_TRY_PROCESS = """
import json, logging, sys, types
sys.path.insert(0, "plugins")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from cognigy_airflow.submit import CognigySubmitTrainingOperator
args = json.loads(sys.argv[1])
ti = types.SimpleNamespace(dag_id=args["dag_id"], run_id=args["run_id"], task_id="submit", try_number=args["try"],
                           max_tries=2, map_index=0, log=logging.getLogger("submit"))
context = {"ti": ti, "dag_run": types.SimpleNamespace(run_type="manual", triggering_user_name="fault-matrix"),
           "params": args["params"]}  # no task_state_store: the task's state is the state file in the run folder
result = CognigySubmitTrainingOperator(task_id="submit", target=args["target"], plan=args["plan"]).execute(context)
print(json.dumps(result), flush=True)
"""


def submit_try_process(run: Run, plan: dict[str, Any], target: dict[str, Any], try_number: int) -> subprocess.Popen:
    """The submit task's body in its own OS process (its own session, so it can be SIGKILLed as a whole)."""
    args = {"dag_id": DAG_ID, "run_id": run.run_id, "try": try_number, "params": run.params, "plan": plan,
            "target": target}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", SUBMIT_TRY_PROCESS, json.dumps(args)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def file_only_context(run: Run, task_id: str) -> dict[str, Any]:
    """The next try's context, reading the same durable state as the process above (the run folder's file)."""
    context = run.context(task_id)
    del context["task_state_store"]
    return context


def wait_for_accepted_training(emulator: Emulator, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while emulator.stats()["trainings_total"] < 1:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the try never POSTed its training: {proc.communicate()}")
        time.sleep(0.1)


def one_training(emulator: Emulator) -> None:
    assert emulator.stats()["trainings_by_flow_locale"] == {f"{seed.FLOW_ID}/{LOCALE}": 1}


def test_worker_process_sigkilled_after_the_post_reattaches_on_retry(fresh: Emulator, state_dir: Path) -> None:
    """Real processes: the emulator (Cognigy), and try 1 of the submit task running the real operator in its
    own OS process, SIGKILLed (the whole process group, no cleanup of any kind) once the emulator has
    processed its training POST and holds the answer (`hang_after_accept`). Try 2 runs in this process with
    what a retry on any worker has: the run folder in the shared state dir (state file, submission lease held
    by the dead process). Airflow's scheduler is the only stand-in (it would start try 2 the same way)."""
    fresh.knobs(
        training_seconds=2,
        hang_after_accept=[{"method": "POST", "path_regex": r"/intents/train$", "seconds": 60, "count": 1}],
    )
    run = Run("fault-worker-sigkilled")
    plan, target = first_target(run.call("validate", validate.validate))
    captured = run.call("capture", capture.capture, target=target, plan=plan)
    run.tries["submit"] += 1
    worker = submit_try_process(run, plan, target, try_number=1)
    try:
        wait_for_accepted_training(fresh, worker)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies while Cognigy's answer is on its way
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == -signal.SIGKILL
    folder = Path(captured["rollback_point_path"]).parent
    left = json.loads((folder / "submit_state.json").read_text())
    assert "submit.intent_at" in left and "submit.job_id" not in left, left
    assert [p.name for p in (folder / "submit.lease").iterdir() if p.name.isdigit()], "the dead try held the lease"

    retry = CognigySubmitTrainingOperator(task_id="submit", target=target, plan=plan).execute(
        file_only_context(run, "submit")
    )

    tasks = trainings(fresh)
    assert retry["reattached"] is True and [t["_id"] for t in tasks] == [retry["job_id"]]
    one_training(fresh)
    waited = run.operate(WaitForTraining(task_id="wait_for_training", target=target, plan=plan, submitted=retry))
    assert waited["state"] == "succeeded"
    one_training(fresh)
    events = audit_events(state_dir, run.run_id)
    reattached = [e for e in events if e["event"] == "training_reattached"]
    assert len(reattached) == 1 and reattached[0]["via"] == "tenant task list" and reattached[0]["try_number"] == 2
    assert "training_submitted" not in names(events)
    observed("11 worker SIGKILLed after POST", fresh, events, via=reattached[0]["via"], killed_exit=worker.returncode)


def test_two_tries_at_once_start_one_training(fresh: Emulator, state_dir: Path) -> None:
    """Real processes: the emulator, and try 1 (a "zombie" Airflow lost track of) running the real operator in
    its own OS process, its POST processed but its answer held 5 s. Try 2 runs meanwhile in this process: the
    submission lease (a live holder) makes it wait, then it finds try 1's job id and POSTs nothing."""
    fresh.knobs(
        training_seconds=2,
        hang_after_accept=[{"method": "POST", "path_regex": r"/intents/train$", "seconds": 5, "count": 1}],
    )
    run = Run("fault-zombie-worker")
    plan, target = first_target(run.call("validate", validate.validate))
    run.call("capture", capture.capture, target=target, plan=plan)
    run.tries["submit"] += 1
    zombie = submit_try_process(run, plan, target, try_number=1)
    try:
        wait_for_accepted_training(fresh, zombie)
        started_at = time.monotonic()
        second = CognigySubmitTrainingOperator(task_id="submit", target=target, plan=plan).execute(
            file_only_context(run, "submit")
        )
        waited = time.monotonic() - started_at
        out, err = zombie.communicate(timeout=60)
    finally:
        if zombie.poll() is None:
            os.killpg(zombie.pid, signal.SIGKILL)
    assert zombie.returncode == 0, err[-2000:]
    first = json.loads(out.decode().strip().splitlines()[-1])
    assert first["reattached"] is False and second["reattached"] is True
    assert second["job_id"] == first["job_id"] == trainings(fresh)[0]["_id"]
    assert waited >= 2, f"try 2 did not wait for the live holder ({waited:.1f}s)"
    one_training(fresh)
    events = audit_events(state_dir, run.run_id)
    assert names(events).count("training_submitted") == 1
    reattached = [e for e in events if e["event"] == "training_reattached"]
    assert len(reattached) == 1 and reattached[0]["via"] == "state store"
    observed("12 two tries at once", fresh, events, waited_for_lease=round(waited, 1))
