"""What every operator that changes Cognigy shares, each safe to run more than once (Airflow runs tasks at least
once): the plan and target, the hook, the "Cognigy flow" link, giving up on the last try, deferring on a training,
and starting a training exactly once (`_reattach` / `_start_once`, with `submission`).

The operators, one module per task: submit.py (`CognigySubmitTrainingOperator`), promote.py
(`CognigyPromoteOperator`), release.py (`CognigySnapshotReleaseOperator`), rollback.py (`CognigyRollbackOperator`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from cognigy_provider.hooks.cognigy import CognigyHook
from cognigy_provider.links.cognigy import cognigy_flow_url
from cognigy_provider.sensors.cognigy import last_try
from cognigy_provider.triggers.cognigy import CognigyJobTrigger

from cognigy_airflow import submission
from cognigy_airflow.record import PlanFromReference
from cognigy_airflow.run_files import training_target
from cognigy_airflow.run_state import RunState
from include.cognigy import poll_policy
from include.cognigy.client import CognigyClient
from include.cognigy.errors import AmbiguousSubmission, CognigyError
from include.cognigy.model import JobStatus, Target

log = logging.getLogger(__name__)

# How long a try looks for the training of a POST that got no clear answer before it raises (plan:
# reconcile_seconds). A LATER try, not knowing whether an earlier POST happened, looks at least until the
# task list can no longer lag behind it (`submission.settle_seconds`) before it starts anything.
RECONCILE_SECONDS = 30.0


def _reconcile(
    client: CognigyClient,
    target: Target,
    since: float,
    wait: float,
    *,
    until: float | None = None,
    lease: submission.Lease | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> JobStatus | None:
    """The first training of this flow/locale the tenant started at or after `since` (the server's clock),
    looking for `wait` s and, with `until`, also until the server's clock (read from each task-list answer)
    passes `until`: the task list may lag behind the POST (`submission.settle_seconds`)."""
    return submission.reconcile(client, target, since, wait, until=until, lease=lease, exclude=exclude)


def _reattach(
    client: CognigyClient, target: Target, state: RunState, prefix: str, wait: float
) -> tuple[JobStatus, str] | None:
    """The training an earlier try of this task started, if any: from the state store, else the task list.

    Runs under the submission lease (`submission`: one try at a time per run, target and purpose). A try that
    recorded its intent but no job id may have died between the POST and storing the answer; the tenant's task
    list tells whether the POST happened, once it can no longer lag behind it. When nothing is found the lease
    stays with this try for `_start_once`; otherwise it is released.
    """
    lease = submission.take_lease(submission.lease_folder(state, prefix))
    try:
        earlier = submission.attached(client, target, state, prefix, wait, lease)
    except BaseException:
        lease.release()
        raise
    if earlier is not None:
        lease.release()
    return earlier


def _start_once(
    client: CognigyClient, target: Target, state: RunState, prefix: str, post: Callable[[], JobStatus], wait: float
) -> JobStatus:
    """Under the submission lease: record the intent (with the server's clock), POST once, and on an ambiguous
    answer find the training instead of resending."""
    lease = submission.take_lease(submission.lease_folder(state, prefix))
    try:
        # The lease was not held since `_reattach`: another try may have acted meanwhile.
        if not lease.continuous and (earlier := submission.attached(client, target, state, prefix, wait, lease)):
            return earlier[0]
        first = state.get(f"{prefix}.since_server_at")
        # The GET just before the POST: the server's clock for the intent, and a last look for a training an
        # earlier intent of this purpose started that the task list showed only now.
        listing = client.recent_trainings(target, float(first) if first is not None else float("inf"))
        theirs = submission.other_purposes_jobs(state, prefix)  # this run's other trainings are not ours
        if ours := [j for j in listing if j.job_id not in theirs]:
            status = submission.earliest(ours)
            log.warning("%s: training %s of an earlier intent showed up late; adopting it", prefix, status.job_id)
            state.set(f"{prefix}.job_id", status.job_id)
            return submission.only_one(client, target, state, prefix, status)
        intent_at = time.time()
        intent_server = submission.server_time(listing)
        if intent_server is None:  # no Date from the server: the worker's clock, widened by its possible skew
            intent_server = intent_at - submission.LEASE_CLOCK_MARGIN_SECONDS
        state.set(f"{prefix}.intent_server_at", intent_server)
        if first is None:
            state.set(f"{prefix}.since_server_at", intent_server)
        state.set(f"{prefix}.intent_at", intent_at)
        lease.check()  # a zombie whose lease was taken over stops here
        try:
            status = post()
        except AmbiguousSubmission as exc:
            if exc.status is not None:  # the server answered (5xx): no request timeout to add to the lag bound
                state.set(f"{prefix}.answered_at", intent_at)
            log.warning("%s got no clear answer (%s); reconciling with the tenant's task list", prefix, exc)
            found = _reconcile(client, target, intent_server, wait=wait, lease=lease, exclude=theirs)
            if not found:
                raise  # the next try reconciles again (up to the lag bound) before it would send anything
            status = found
        except CognigyError as exc:
            if submission.provably_not_started(exc):
                state.set(f"{prefix}.rejected_at", intent_at)
            raise
        state.set(f"{prefix}.job_id", status.job_id)
        state.set(f"{prefix}.submitted_at", intent_at)
        return submission.only_one(client, target, state, prefix, status)
    finally:
        lease.release()


class _CognigyOperator(PlanFromReference, BaseOperator):
    template_fields = ("target", "plan_ref")
    cognigy_url = ""  # read by the "Cognigy flow" extra link (CognigyTaskLink) when the task ends

    def __init__(self, *, target: Any, plan: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.plan_ref = plan  # the plan's reference in a DAG run (`plan` reads it), or the plan itself

    @property
    def production(self) -> Target:
        """The production flow/locale this task's target names."""
        return Target.from_dict(self.target)

    def hook(self) -> CognigyHook:
        return CognigyHook(self.plan["conn_id"], requests_per_second=self.plan.get("requests_per_second"))

    trains_staging = False  # submit and wait act on the flow that trains the challenger (staging, or production)

    def link_to(self, job_id: str | None = None) -> None:
        """Point the task page's "Cognigy flow" button at the flow/locale this task acts on, and at the Cognigy task
        once known."""
        t = training_target(self.plan, self.target) if self.trains_staging else self.production
        console = self.plan.get("console_url") or ""
        self.cognigy_url = cognigy_flow_url(console, t.project_id, t.flow_id, t.locale, job_id) if console else ""

    @property
    def reconcile_seconds(self) -> float:
        return float(self.plan.get("reconcile_seconds") or RECONCILE_SECONDS)

    def on_last_try(
        self, context: Any, step: Callable[[], dict[str, Any]], give_up: Callable[[Any, str], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run a step; an error is retried by Airflow, and on the last try `give_up` says what happens instead."""
        try:
            return step()
        except (AirflowFailException, AirflowSkipException):
            raise
        except Exception as exc:
            if not last_try(context):
                raise
            return give_up(context, f"{type(exc).__name__}: {exc}")

    def defer_on_training(self, job_id: str, started: float, deadline_seconds: float) -> None:
        """Leave the worker slot until the Cognigy training ends or its deadline passes (`execute_complete`)."""
        self.defer(
            trigger=CognigyJobTrigger(
                conn_id=self.plan["conn_id"],
                dialect=self.plan["dialect"],
                job_id=job_id,
                end_time=started + deadline_seconds,
                started_at=started,
                poll_min=self.plan.get("poll_min_seconds", poll_policy.MIN_SECONDS),
                poll_max=self.plan.get("poll_max_seconds", poll_policy.MAX_SECONDS),
            ),
            method_name="execute_complete",
        )


def _spread(utterances: list[Any], size: int) -> list[Any]:
    """Up to `size` utterances taken evenly across the list (so every intent is represented)."""
    if len(utterances) <= size:
        return list(utterances)
    step = len(utterances) / size
    return [utterances[int(i * step)] for i in range(size)]
