"""`wait_for_training`: a deferrable sensor on the challenger's Cognigy training.

It reads the training once; while it runs the sensor defers to the triggerer (`CognigyJobTrigger`, no worker slot)
and resumes when the training ends or its deadline passes. Without deferral (`deferrable=False`) it pokes like any
sensor, with the same deadline. It never fails on a failed training: the run must still settle (restore if needed)
and audit, so it returns what happened (`Waited`) and the graph's `decide` branch takes it from there.

Not yet free of the plugins folder: the sensor is the retraining DAG's `wait_for_training` step, built on the DAG's
operator base (`cognigy_airflow.operators._CognigyOperator`: the run's plan and target), its audit events
(`cognigy_airflow.auditing`) and its typed XCom (`cognigy_airflow.record`), so it imports `cognigy_airflow` (on
sys.path wherever Airflow loads the plugins folder) until that base is split out of `operators.py`.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from cognigy_airflow.auditing import audit
from cognigy_airflow.operators import _CognigyOperator, cancel_and_settle, finished_epoch, last_try
from cognigy_airflow.record import stage
from cognigy_provider.links.cognigy import CognigyTaskLink
from include.cognigy.errors import CognigyError
from include.cognigy.model import JobStatus
from include.results import Submitted, Waited


class CognigyTrainingSensor(_CognigyOperator, BaseSensorOperator):
    """Wait for the challenger's training; deferrable by default (the triggerer polls, no worker slot is held).

    Returns `Waited` ({"state": succeeded|failed|cancelled|deadline|unknown, ...}); a failed training is a result,
    not a failure of this task (see the module docstring).
    """

    template_fields = ("target", "plan_ref", "submitted")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#fff2cc"
    trains_staging = True

    def __init__(self, *, submitted: Any, deferrable: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", 10)
        super().__init__(**kwargs)
        self.submitted = submitted  # the XCom (dict); `training` is it typed
        self.deferrable = deferrable

    @property
    def training(self) -> Submitted:
        return stage("submitted", self.submitted)

    def execute(self, context: Any) -> dict[str, Any]:
        job_id = self.training.job_id
        self.link_to(job_id)
        try:
            status = self.hook().get_client().job_status(job_id)
        except CognigyError as exc:
            if not last_try(context):
                raise
            return self._unknown(context, f"cannot read training {job_id}: {exc}")
        if status.terminal:
            return self._finish(context, status)
        if not self.deferrable:
            return super().execute(context)  # BaseSensorOperator: poke until `poke` says done
        self.defer_on_training(job_id, self.training.submitted_at, self.plan["deadline_seconds"])

    def poke(self, context: Any) -> PokeReturnValue:
        """One look at the training (non-deferrable mode); past the deadline it is settled like a deferred wait."""
        job_id = self.training.job_id
        if time.time() > self.training.submitted_at + float(self.plan["deadline_seconds"]):
            return PokeReturnValue(True, self.execute_complete(context, {"outcome": "deadline", "job_id": job_id}))
        status = self.hook().get_client().job_status(job_id)
        return PokeReturnValue(status.terminal, self._finish(context, status) if status.terminal else None)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.link_to(self.training.job_id)  # a resumed task is a new operator object
        outcome = event["outcome"]
        if outcome == "finished":
            return self._finish(context, JobStatus.from_dict(event["status"]), polls=event.get("polls"))
        if outcome == "deadline":
            job_id = self.training.job_id
            self.log.error(
                "training %s passed its deadline (%ss); cancelling it", job_id, self.plan["deadline_seconds"]
            )
            status = cancel_and_settle(self.hook().get_client(), job_id)
            if status.state == "succeeded":  # it finished in the last poll interval: nothing left to cancel
                return self._finish(context, status, polls=event.get("polls"))
            audit(
                context,
                "retrain_failed",
                self.plan,
                self.target,
                cognigy_job_id=job_id,
                outcome="deadline",
                deadline_seconds=self.plan["deadline_seconds"],
                cognigy_status=status.raw_status,
            )
            return Waited(
                state="deadline",
                job_id=job_id,
                reason=f"deadline of {self.plan['deadline_seconds']}s exceeded; Cognigy task {status.raw_status}",
                latency_seconds=round(time.time() - self.training.submitted_at, 3),
                polls=event.get("polls"),
            ).to_xcom()
        # 401/403/404 while polling: the training's fate is unknown. Do not fail here, so the run still takes
        # the rollback path (which cancels the training if it still runs) and audits; finalize fails the run.
        return self._unknown(context, f"polling training {self.training.job_id} failed: {event.get('message')}")

    def _unknown(self, context: Any, why: str) -> dict[str, Any]:
        job_id = self.training.job_id
        self.log.error("%s", why)
        audit(context, "retrain_failed", self.plan, self.target, cognigy_job_id=job_id, outcome="unknown", reason=why)
        latency = round(time.time() - self.training.submitted_at, 3)
        return Waited(state="unknown", job_id=job_id, reason=why, latency_seconds=latency).to_xcom()

    def _finish(self, context: Any, status: JobStatus, polls: int | None = None) -> dict[str, Any]:
        latency = time.time() - self.training.submitted_at
        if status.state != "succeeded":
            audit(
                context,
                "retrain_failed",
                self.plan,
                self.target,
                cognigy_job_id=status.job_id,
                outcome=status.state,
                reason=status.reason,
                latency_seconds=round(latency, 3),
            )
        return Waited(
            state=status.state,
            job_id=status.job_id,
            reason=status.reason,
            version_id=status.version_id or self.training.version_id,
            latency_seconds=round(latency, 3),
            finished_at=finished_epoch(status),
            polls=polls,
        ).to_xcom()
