"""`wait_for_training`: the retraining DAG's wait for the challenger's training, on the provider's generic sensor.

`cognigy_provider.sensors.cognigy.CognigyTrainingSensor` does the waiting (deferred on `CognigyJobTrigger`, or poking;
cancel at the deadline). This step adds what is the DAG's: it takes the run's `target`, `plan` (its reference) and
`submit`'s result, from which the sensor's connection, job, start, deadline and poll settings are bound when the task
runs; it returns the typed `Waited` XCom and writes the `retrain_failed` audit event when the training did not
succeed (outcome failed | cancelled | deadline | unknown). A failed training is a result, not a failure of this task:
the run must still settle (restore if needed) and audit, and the graph's `decide` branch takes it from there.
"""

from __future__ import annotations

from typing import Any

from cognigy_provider.sensors.cognigy import CognigyTrainingSensor, TrainingWaited

from cognigy_airflow.auditing import audit
from cognigy_airflow.record import PlanFromReference, stage
from cognigy_airflow.run_files import training_target
from include.cognigy import poll_policy
from include.results import Submitted, Waited


class WaitForTraining(PlanFromReference, CognigyTrainingSensor):
    """Wait for the challenger's training; deferrable by default (the triggerer polls, no worker slot is held).

    Returns `Waited` ({"state": succeeded|failed|cancelled|deadline|unknown, ...}); see the module docstring.
    """

    template_fields = ("target", "plan_ref", "submitted")

    def __init__(self, *, target: Any, plan: Any, submitted: Any, **kwargs: Any) -> None:
        # job, start, deadline and connection come from `submitted` and the plan (XComs) when the task runs: `_bind`
        super().__init__(job_id=None, started_at=None, deadline_seconds=None, **kwargs)
        self.target = target
        self.plan_ref = plan  # the plan's reference in a DAG run (`plan` reads it), or the plan itself
        self.submitted = submitted  # the XCom (dict); `training` is it typed

    @property
    def training(self) -> Submitted:
        return stage("submitted", self.submitted)

    def _bind(self) -> None:
        """The generic sensor's arguments, from the rendered `submitted` and the run's plan."""
        plan, training = self.plan, self.training
        self.cognigy_conn_id = plan["conn_id"]
        self.dialect = plan["dialect"]
        self.requests_per_second = plan.get("requests_per_second")
        self.poll_min_seconds = plan.get("poll_min_seconds", poll_policy.MIN_SECONDS)
        self.poll_max_seconds = plan.get("poll_max_seconds", poll_policy.MAX_SECONDS)
        self.job_id = training.job_id
        self.started_at = training.submitted_at
        self.deadline_seconds = plan["deadline_seconds"]
        self.console_url = plan.get("console_url") or ""
        self.flow = training_target(plan, self.target).to_dict()  # the flow that trains (staging or production)

    def execute(self, context: Any) -> dict[str, Any]:
        self._bind()
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self._bind()  # a resumed task is a new operator object
        return super().execute_complete(context, event)

    def finish(self, context: Any, result: TrainingWaited) -> dict[str, Any]:
        """The generic result as the DAG's `Waited`, with the `retrain_failed` audit event unless it succeeded."""
        plan, job_id = self.plan, result.job_id
        if result.outcome == "unknown":
            audit(context, "retrain_failed", plan, self.target, cognigy_job_id=job_id, outcome="unknown",
                  reason=result.reason)  # fmt: skip
            return Waited(state="unknown", job_id=job_id, reason=result.reason,
                          latency_seconds=result.latency_seconds).to_xcom()  # fmt: skip
        status = result.status
        assert status is not None
        if result.outcome == "deadline":
            audit(
                context,
                "retrain_failed",
                plan,
                self.target,
                cognigy_job_id=job_id,
                outcome="deadline",
                deadline_seconds=plan["deadline_seconds"],
                cognigy_status=status.raw_status,
            )
            return Waited(state="deadline", job_id=job_id, reason=result.reason,
                          latency_seconds=result.latency_seconds, polls=result.polls).to_xcom()  # fmt: skip
        if status.state != "succeeded":
            audit(
                context,
                "retrain_failed",
                plan,
                self.target,
                cognigy_job_id=status.job_id,
                outcome=status.state,
                reason=status.reason,
                latency_seconds=result.latency_seconds,
            )
        return Waited(
            state=status.state,
            job_id=status.job_id,
            reason=status.reason,
            version_id=status.version_id or self.training.version_id,
            latency_seconds=result.latency_seconds,
            finished_at=result.finished_at,
            polls=result.polls,
        ).to_xcom()
