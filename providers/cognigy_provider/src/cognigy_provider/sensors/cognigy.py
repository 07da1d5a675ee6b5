"""`CognigyTrainingSensor`: a deferrable sensor on one Cognigy training (task/job), generic like Airflow's
`DbtCloudJobRunSensor`: a connection id, a job id, when it started and its deadline.

It reads the training once; while it runs the sensor defers to the triggerer (`CognigyJobTrigger`, no worker slot)
and resumes when the training ends or its deadline passes. Without deferral (`deferrable=False`) it pokes like any
sensor, with the same deadline. Past the deadline it cancels the training and waits for Cognigy to settle it
(`cancel_and_settle`). It never fails on a failed training: it returns what the training did (`TrainingWaited`:
finished | deadline | unknown, the last status, latency, polls) and the caller decides. A status that cannot be read
is raised (Airflow retries) except on the last try, where it is the `unknown` outcome.

A subclass shapes the result (and writes its own records) by overriding `finish`: the retraining DAG's
`wait_for_training` step (`cognigy_airflow.wait_for_training.WaitForTraining`, in the plugins folder) maps it to its
typed `Waited` XCom and its audit events. This module never imports the plugins folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from cognigy_provider.hooks.cognigy import CognigyHook, cancel_and_settle, finished_epoch
from cognigy_provider.links.cognigy import CognigyTaskLink, cognigy_flow_url
from cognigy_provider.triggers.cognigy import CognigyJobTrigger
from include.cognigy import poll_policy
from include.cognigy.errors import CognigyError
from include.cognigy.model import JobStatus

Outcome = Literal["finished", "deadline", "unknown"]


def last_try(context: Any) -> bool:
    """True when Airflow will not run this task again after a failure (try_number counts from 1)."""
    ti = context["ti"]
    return int(getattr(ti, "try_number", 1) or 1) > int(getattr(ti, "max_tries", 0) or 0)


@dataclass(frozen=True)
class TrainingWaited:
    """What the training did while the sensor waited.

    - finished: it ended by itself (`status` is terminal: succeeded, failed or cancelled); also when it succeeded in
      the last poll interval before the deadline's cancel
    - deadline: it passed its deadline and was cancelled (`status`: what Cognigy said after the cancel settled)
    - unknown: its status could not be read (`status` is None, `reason` says why)
    """

    outcome: Outcome
    job_id: str
    status: JobStatus | None = None
    reason: str | None = None
    latency_seconds: float | None = None  # seconds from `started_at` to the result
    finished_at: float | None = None  # finished: when Cognigy says it ended (its clock, epoch), else now
    polls: int | None = None  # status reads by the trigger (deferred waits only)

    @property
    def state(self) -> str:
        """The training's state (succeeded, failed, cancelled), or `deadline` / `unknown`."""
        return self.status.state if self.outcome == "finished" and self.status else self.outcome

    def to_xcom(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "state": self.state,
            "job_id": self.job_id,
            "status": self.status.to_dict() if self.status else None,
            "reason": self.reason,
            "latency_seconds": self.latency_seconds,
            "finished_at": self.finished_at,
            "polls": self.polls,
        }

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> TrainingWaited:
        status = data.get("status")
        fields = {k: data.get(k) for k in ("reason", "latency_seconds", "finished_at", "polls")}
        return cls(data["outcome"], data["job_id"], JobStatus.from_dict(status) if status else None, **fields)


class CognigyTrainingSensor(BaseSensorOperator):
    """Wait for one Cognigy training; deferrable by default (the triggerer polls, no worker slot is held).

    :param cognigy_conn_id: the `cognigy` connection
    :param job_id: the training's Cognigy task/job id (templated)
    :param started_at: when it started, epoch seconds (templated; the deadline and the latency count from it)
    :param deadline_seconds: how long it may run from `started_at`; then it is cancelled (templated)
    :param dialect: `rest-v2` | `training-jobs`; None: the connection's
    :param requests_per_second: optional per-task cap on top of the tenant's shared budget (sync reads)
    :param poll_min_seconds, poll_max_seconds: the trigger's poll interval bounds
    :param console_url, flow: for the "Cognigy flow" button (the flow's project_id, flow_id, locale); optional
    :param deferrable: defer to the triggerer (default) or poke

    Returns `TrainingWaited.to_xcom()`; subclasses override `finish` to return something else.
    """

    template_fields: tuple[str, ...] = ("job_id", "started_at", "deadline_seconds")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#fff2cc"
    cognigy_url = ""  # read by the "Cognigy flow" extra link (CognigyTaskLink) when the task ends

    def __init__(
        self,
        *,
        job_id: str | None,
        started_at: float | str | None,
        deadline_seconds: float | str | None,
        cognigy_conn_id: str = CognigyHook.default_conn_name,
        dialect: str | None = None,
        requests_per_second: float | None = None,
        poll_min_seconds: float = poll_policy.MIN_SECONDS,
        poll_max_seconds: float = poll_policy.MAX_SECONDS,
        console_url: str | None = None,
        flow: dict[str, Any] | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10)
        super().__init__(**kwargs)
        self.cognigy_conn_id = cognigy_conn_id
        self.job_id = job_id
        self.started_at = started_at
        self.deadline_seconds = deadline_seconds
        self.dialect = dialect
        self.requests_per_second = requests_per_second
        self.poll_min_seconds = poll_min_seconds
        self.poll_max_seconds = poll_max_seconds
        self.console_url = console_url
        self.flow = flow
        self.deferrable = deferrable

    # --- what a subclass may override ------------------------------------------------------------------------
    def hook(self) -> CognigyHook:
        return CognigyHook(self.cognigy_conn_id, requests_per_second=self.requests_per_second)

    def link_to(self, job_id: str | None = None) -> None:
        """Point the task page's "Cognigy flow" button at the flow (when known) and the Cognigy task."""
        f = self.flow
        if self.console_url and f:
            self.cognigy_url = cognigy_flow_url(self.console_url, f["project_id"], f["flow_id"], f["locale"], job_id)

    def finish(self, context: Any, result: TrainingWaited) -> Any:
        """The task's return value (XCom) for what the training did."""
        return result.to_xcom()

    # --- the wait --------------------------------------------------------------------------------------------
    @property
    def _started(self) -> float:
        return float(self.started_at)  # type: ignore[arg-type]

    @property
    def _end_time(self) -> float:
        return self._started + float(self.deadline_seconds)  # type: ignore[arg-type]

    def execute(self, context: Any) -> Any:
        job_id = str(self.job_id)
        self.link_to(job_id)
        try:
            status = self.hook().get_client().job_status(job_id)
        except CognigyError as exc:
            if not last_try(context):
                raise
            return self._unknown(context, f"cannot read training {job_id}: {exc}")
        if status.terminal:
            return self._finished(context, status)
        if not self.deferrable:
            return super().execute(context)  # BaseSensorOperator: poke until `poke` says done
        self.defer(
            trigger=CognigyJobTrigger(
                conn_id=self.cognigy_conn_id,
                dialect=self.dialect,  # type: ignore[arg-type]  # None: the connection's
                job_id=job_id,
                end_time=self._end_time,
                started_at=self._started,
                poll_min=self.poll_min_seconds,
                poll_max=self.poll_max_seconds,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Any) -> PokeReturnValue:
        """One look at the training (non-deferrable mode); past the deadline it is settled like a deferred wait."""
        job_id = str(self.job_id)
        if time.time() > self._end_time:
            return PokeReturnValue(True, self.execute_complete(context, {"outcome": "deadline", "job_id": job_id}))
        status = self.hook().get_client().job_status(job_id)
        return PokeReturnValue(status.terminal, self._finished(context, status) if status.terminal else None)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        job_id = str(self.job_id)
        self.link_to(job_id)  # a resumed task is a new operator object
        outcome = event["outcome"]
        if outcome == "finished":
            return self._finished(context, JobStatus.from_dict(event["status"]), polls=event.get("polls"))
        if outcome == "deadline":
            self.log.error("training %s passed its deadline (%ss); cancelling it", job_id, self.deadline_seconds)
            status = cancel_and_settle(self.hook().get_client(), job_id)
            if status.state == "succeeded":  # it finished in the last poll interval: nothing left to cancel
                return self._finished(context, status, polls=event.get("polls"))
            why = f"deadline of {self.deadline_seconds}s exceeded; Cognigy task {status.raw_status}"
            result = TrainingWaited("deadline", job_id, status, why, self._latency(), polls=event.get("polls"))
            return self.finish(context, result)
        # 401/403/404 while polling (or the budget's store unreachable to the end): the training's fate is unknown.
        return self._unknown(context, f"polling training {job_id} failed: {event.get('message')}", event.get("polls"))

    def _latency(self) -> float:
        return round(time.time() - self._started, 3)

    def _unknown(self, context: Any, why: str, polls: int | None = None) -> Any:
        self.log.error("%s", why)
        result = TrainingWaited("unknown", str(self.job_id), reason=why, latency_seconds=self._latency(), polls=polls)
        return self.finish(context, result)

    def _finished(self, context: Any, status: JobStatus, polls: int | None = None) -> Any:
        latency = self._latency()
        result = TrainingWaited(
            "finished", status.job_id, status, status.reason, latency, finished_at=finished_epoch(status), polls=polls
        )
        return self.finish(context, result)
