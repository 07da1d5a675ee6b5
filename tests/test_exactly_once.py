"""Exactly-once training starts (`operators._reattach` / `_start_once`, `cognigy_airflow.submission`).

A fake tenant stands in for Cognigy here so that what the emulator cannot do is controllable: a task list that
lags behind the POST, a server clock that differs from the worker's, a POST that is accepted but answered
ambiguously. The lease tests use real threads and real OS processes on a real directory.
Real-process fault rows (a SIGKILLed worker, two tries at once) are in tests/test_fault_matrix.py (11, 12).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cognigy_airflow import submission
from cognigy_airflow.operators import _reattach, _start_once
from cognigy_airflow.run_state import RunState
from include.cognigy.errors import AmbiguousSubmission, RateLimited
from include.cognigy.model import JobStatus, Target, Trainings

TARGET = Target("p1", "flow1", "en-US", "m1")


class Tenant:
    """Cognigy as far as starting trainings goes: `skew` s between its clock and the worker's, a task list
    showing a task only `lag` s (server time) after it was created."""

    def __init__(self, *, skew: float = 0.0, lag: float = 0.0, post_seconds: float = 0.0) -> None:
        self.skew, self.lag, self.post_seconds = skew, lag, post_seconds
        self.tasks: list[JobStatus] = []
        self.cancelled: list[str] = []
        self.config = type("Config", (), {"timeout_seconds": 0.5})()
        self.lock = threading.Lock()
        self.hidden: set[str] = set()  # tasks the list does not show (yet), whatever the lag

    def now(self) -> float:
        return time.time() + self.skew

    def create(self) -> JobStatus:
        with self.lock:
            created = datetime.fromtimestamp(self.now(), tz=UTC).isoformat()
            job = JobStatus(f"task{len(self.tasks) + 1}", "running", created_at=created)
            self.tasks.append(job)
            return job

    def start_training(self, ambiguous: bool = False) -> JobStatus:
        job = self.create()
        time.sleep(self.post_seconds)
        if ambiguous:
            raise AmbiguousSubmission("POST train: no answer within 0.5 s")
        return JobStatus(job.job_id, job.state, created_at=job.created_at, extra={"server_time": self.now()})

    def recent_trainings(self, target: Target, since_epoch: float) -> Trainings:
        now = int(self.now())  # a Date header has whole seconds
        visible = [j for j in self.tasks if j.created_epoch + self.lag <= self.now() and j.job_id not in self.hidden]
        return Trainings([j for j in visible if j.started_since(since_epoch)], server_time=float(now))

    def job_status(self, job_id: str) -> JobStatus:
        return next(j for j in self.tasks if j.job_id == job_id)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.job_status(job_id).state = "cancelled"

    def live(self) -> list[str]:
        return [j.job_id for j in self.tasks if j.state != "cancelled"]


class Store(dict):
    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self[key] = value


def state_of(folder: Path, store: Store | None = None) -> RunState:
    folder.mkdir(parents=True, exist_ok=True)
    return RunState({"task_state_store": store if store is not None else Store()}, folder / "submit_state.json")


def one_try(tenant: Tenant, state: RunState, wait: float = 0.2, ambiguous: bool = False) -> JobStatus:
    """What the submit operator does: reattach, else start once."""
    earlier = _reattach(tenant, TARGET, state, "submit", wait=wait)
    if earlier is not None:
        return earlier[0]
    return _start_once(tenant, TARGET, state, "submit", lambda: tenant.start_training(ambiguous), wait=wait)


@pytest.fixture(autouse=True)
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submission, "TASK_LIST_LAG_SECONDS", 3.0)


# --- 1. the task list lags behind the POST longer than reconcile_seconds -----------------------------------
def test_a_retry_waits_out_the_task_list_lag_before_starting_another(tmp_path: Path) -> None:
    """Before: the retry looked for `reconcile_seconds` (0.2 s here), saw nothing and started a 2nd training."""
    tenant = Tenant(lag=2.0)
    state = state_of(tmp_path)
    with pytest.raises(AmbiguousSubmission):
        one_try(tenant, state, ambiguous=True)  # accepted, but no answer and not yet in the list
    started = time.monotonic()
    status = one_try(tenant, state)
    assert tenant.live() == ["task1"] and status.job_id == "task1"
    assert time.monotonic() - started >= 1.0, "it kept looking while the list could still lag"


def test_the_lag_bound_is_the_platform_lag_plus_the_request_timeout_when_unanswered() -> None:
    tenant = Tenant()
    assert submission.settle_seconds(tenant, 0.2, answered=False) == 3.0 + 0.5
    assert submission.settle_seconds(tenant, 0.2, answered=True) == 3.0
    assert submission.settle_seconds(tenant, 10.0, answered=True) == 10.0


def test_a_refused_post_is_retried_without_waiting(tmp_path: Path) -> None:
    tenant = Tenant()
    state = state_of(tmp_path)

    def refused() -> JobStatus:
        raise RateLimited("429", status=429)

    with pytest.raises(RateLimited):
        _start_once(tenant, TARGET, state, "submit", refused, wait=0.2)
    started = time.monotonic()
    assert one_try(tenant, state).job_id == "task1"
    # not the task list's lag (3 s here, `short_bounds`): a behaviour, with slack for a loaded machine
    assert time.monotonic() - started < submission.TASK_LIST_LAG_SECONDS


def test_a_training_found_later_beside_ours_is_never_cancelled(tmp_path: Path) -> None:
    """A training of the flow/locale that shows up only after ours was started cannot be proven ours (a person may
    have started it, or a POST whose answer was lost): it is recorded (`submit.others_seen`), never cancelled, and
    the run follows the training it knows. Before: the newer training, ours, was cancelled as a duplicate."""
    tenant = Tenant()
    tenant.hidden.add("task1")  # the platform hides the first beyond any bound ...
    state = state_of(tmp_path)
    with pytest.raises(AmbiguousSubmission):
        one_try(tenant, state, ambiguous=True)
    assert one_try(tenant, state).job_id == "task2"  # ... so a second is started
    tenant.hidden.clear()  # ... and then the first shows up
    earlier = _reattach(tenant, TARGET, state, "submit", wait=0.2)
    assert earlier is not None and earlier[0].job_id == "task2"
    assert tenant.cancelled == [] and tenant.live() == ["task1", "task2"]
    assert state.get("submit.job_id") == "task2" and state.get("submit.others_seen") == ["task1"]


# --- 2. the worker's clock differs from Cognigy's ----------------------------------------------------------
@pytest.mark.parametrize("skew", [-30.0, 30.0])
def test_reconciliation_uses_the_server_clock(tmp_path: Path, skew: float) -> None:
    """Before: the intent was the worker's clock; with Cognigy 30 s behind, the accepted training looked older
    than the intent and a second one was started."""
    tenant = Tenant(skew=skew)
    tenant.hidden.add("task1")  # not in the list before the first try gives up
    state = state_of(tmp_path)
    with pytest.raises(AmbiguousSubmission):
        _start_once(tenant, TARGET, state, "submit", lambda: tenant.start_training(True), wait=0.0)
    tenant.hidden.clear()
    assert abs(state.get("submit.intent_server_at") - (time.time() + skew)) < 2.5
    assert one_try(tenant, state).job_id == "task1" and tenant.live() == ["task1"]


# --- 3. two tries of the same task at once -----------------------------------------------------------------
def test_two_concurrent_tries_start_one_training(tmp_path: Path) -> None:
    """Before: both tries found no job id and POSTed."""
    tenant = Tenant(post_seconds=1.0)
    store = Store()
    results: list[str] = []

    def run() -> None:
        results.append(one_try(tenant, state_of(tmp_path, store)).job_id)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == ["task1", "task1"] and tenant.live() == ["task1"]


def _contend(folder: str, log_path: str, barrier: Any) -> None:
    barrier.wait()
    lease = submission.take_lease(Path(folder), wait=30)
    with open(log_path, "a") as log:
        log.write(f"in {time.time()}\n")
    time.sleep(0.2)
    with open(log_path, "a") as log:
        log.write(f"out {time.time()}\n")
    lease.release()


def test_the_lease_is_taken_by_one_process_at_a_time(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    log_path = tmp_path / "log"
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "l"), str(log_path), barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    marks = [line.split()[0] for line in log_path.read_text().splitlines()]
    assert marks == ["in", "out"] * 4, "two processes held the lease at once"


def _hold_forever(folder: str, ready: Any) -> None:
    submission.take_lease(Path(folder))
    ready.set()
    time.sleep(600)


def test_a_live_holder_blocks_a_dead_or_expired_one_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "submit.lease"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(str(folder), ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(submission.LeaseBusy):
            submission.take_lease(folder, wait=0.5)
    finally:
        holder.kill()
        holder.join()
    taken = submission.take_lease(folder, wait=0.5)  # the holder is dead: taken over at once
    assert taken.generation == 2 and taken.held()
    taken.release()

    record = {"token": "x", "expires_at": time.time() - submission.LEASE_CLOCK_MARGIN_SECONDS - 1, "released": False,
              "owner": {"machine": "another-host", "pid": 1, "pid_start": "1", "thread": 1}}  # fmt: skip
    (folder / f"{3:010d}").write_text(json.dumps(record))
    expired = submission.take_lease(folder, wait=0.5)
    assert expired.generation == 4
    expired.release()
    record["expires_at"] = time.time() + 60
    (folder / f"{5:010d}").write_text(json.dumps(record))
    with pytest.raises(submission.LeaseBusy):  # another host's live lease: only its expiry frees it
        submission.take_lease(folder, wait=0.5)


def test_a_zombie_whose_lease_was_taken_over_does_not_post(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submission, "LEASE_WAIT_SECONDS", 0.5)
    tenant = Tenant()
    state = state_of(tmp_path)
    assert _reattach(tenant, TARGET, state, "submit", wait=0.0) is None  # keeps the lease for _start_once
    folder = submission.lease_folder(state, "submit")
    held = submission._registry[str(folder)]
    record = json.loads(held.path.read_text())
    record["owner"]["machine"] = "another-host"  # the next generation: another worker took over
    (folder / f"{held.generation + 1:010d}").write_text(json.dumps(record | {"token": "other"}))
    with pytest.raises(submission.LeaseBusy):
        _start_once(tenant, TARGET, state, "submit", tenant.start_training, wait=0.0)
    assert tenant.tasks == []
