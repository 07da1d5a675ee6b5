"""Operators with side effects on Cognigy, each safe to run more than once (Airflow runs tasks at least once).

- CognigySubmitTrainingOperator: loads training data and starts ONE training per DAG run and target.
- CognigyWaitForTrainingOperator: defers to the triggerer until the training ends or its deadline passes.
- CognigyRollbackOperator: restores the rollback point, waits (deferred) for the retrain, verifies.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cognigy_airflow.auditing import audit
from cognigy_airflow.hooks import CognigyHook
from cognigy_airflow.links import CognigyTaskLink
from cognigy_airflow.run_state import RunState
from cognigy_airflow.triggers import CognigyJobTrigger
from include import dataset, settings
from include.cognigy.errors import AmbiguousSubmission
from include.cognigy.model import JobStatus, Target
from include.held_out import agreement, load_predictions, save_predictions, score_utterances

RECONCILE_SECONDS = 30.0


def _run_dir(context: Any, target: dict[str, Any]) -> Path:
    return settings.run_dir(context["ti"].dag_id, context["ti"].run_id, Target.from_dict(target).key)


class _CognigyOperator(BaseOperator):
    template_fields = ("target", "plan")

    def __init__(self, *, target: Any, plan: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.plan = plan

    def hook(self) -> CognigyHook:
        return CognigyHook(self.plan["conn_id"], requests_per_second=self.plan.get("requests_per_second"))


class CognigySubmitTrainingOperator(_CognigyOperator):
    """Import the run's training data (overwrite, so repeatable) and start the training exactly once.

    Exactly once: the job id is kept in the task-instance state store. Before the POST we record the intent
    (a timestamp); a retry that finds an intent but no job id asks the tenant for trainings of this
    flow/locale started since then and reattaches to one, instead of starting another.
    """

    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#d6e9ff"

    def execute(self, context: Any) -> dict[str, Any]:
        plan, target = self.plan, Target.from_dict(self.target)
        if plan.get("dry_run"):
            raise AirflowSkipException("dry run: nothing is sent to Cognigy")
        client = self.hook().get_client()
        state = RunState(context, _run_dir(context, self.target) / "submit_state.json")

        if job_id := state.get("submit.job_id"):
            status = client.job_status(job_id)
            audit(context, "training_reattached", plan, self.target, cognigy_job_id=job_id, via="state store")
            return self._result(context, status, state, reattached=True)
        if intent := state.get("submit.intent_at"):
            found = self._reconcile(client, target, intent, wait=0)
            if found:
                state.set("submit.job_id", found.job_id)
                audit(
                    context,
                    "training_reattached",
                    plan,
                    self.target,
                    cognigy_job_id=found.job_id,
                    via="tenant task list",
                )
                return self._result(context, found, state, reattached=True)

        training = None
        if plan["request"]["trainingData"]["source"] == "dataset":
            training = dataset.sample_training(target.locale, plan["request"]["trainingDataSliceMatrix"])
        client.load_training_data(target, training)

        intent_at = time.time()
        state.set("submit.intent_at", intent_at)
        try:
            status = client.start_training(
                target,
                mode=plan["request"]["mode"],
                spec_body=plan["spec_body"],
                idempotency_key=f"{context['ti'].dag_id}/{context['ti'].run_id}/{target.key}/{plan['request_hash']}",
            )
        except AmbiguousSubmission as exc:
            self.log.warning("submit got no clear answer (%s); reconciling with the tenant's task list", exc)
            found = self._reconcile(client, target, intent_at, wait=RECONCILE_SECONDS)
            if not found:
                raise  # the next try reconciles again before it would submit
            status = found
        state.set("submit.job_id", status.job_id)
        state.set("submit.submitted_at", intent_at)
        audit(
            context,
            "training_submitted",
            plan,
            self.target,
            cognigy_job_id=status.job_id,
            cognigy_status=status.raw_status,
            training_counts=_counts(training),
        )
        return self._result(context, status, state, reattached=False, training=training)

    def _reconcile(self, client, target: Target, since: float, wait: float) -> JobStatus | None:
        deadline = time.monotonic() + wait
        while True:
            found = client.recent_trainings(target, since)
            if found:
                return sorted(found, key=lambda j: j.created_at or "")[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(2.0)

    def _result(self, context, status: JobStatus, state: RunState, *, reattached: bool, training=None):
        submitted_at = state.get("submit.submitted_at") or state.get("submit.intent_at") or time.time()
        counts = _counts(training) or state.get("submit.training_counts")
        if training is not None:
            state.set("submit.training_counts", counts)
        return {
            "job_id": status.job_id,
            "status": status.raw_status,
            "submitted_at": submitted_at,
            "reattached": reattached,
            "training_counts": counts,
            "version_id": status.version_id,
        }


def _counts(training: dict[str, list[str]] | None) -> dict[str, int] | None:
    return {k: len(v) for k, v in training.items()} if training is not None else None


class CognigyWaitForTrainingOperator(_CognigyOperator):
    """Wait for the training without holding a worker slot: the triggerer polls, this task resumes at the end.

    Returns {"state": succeeded|failed|cancelled|deadline, ...}. It does not fail on a failed training: the
    run must still roll back and audit; the final audit task fails the run afterwards.
    """

    template_fields = ("target", "plan", "submitted")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#fff2cc"

    def __init__(self, *, submitted: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.submitted = submitted

    def execute(self, context: Any) -> dict[str, Any]:
        job_id = self.submitted["job_id"]
        end_time = self.submitted["submitted_at"] + self.plan["deadline_seconds"]
        status = self.hook().get_client().job_status(job_id)
        if status.terminal:
            return self._finish(context, status)
        self.defer(
            trigger=CognigyJobTrigger(
                conn_id=self.plan["conn_id"],
                dialect=self.plan["dialect"],
                job_id=job_id,
                end_time=end_time,
                started_at=self.submitted["submitted_at"],
                poll_min=self.plan.get("poll_min_seconds", 2.0),
                poll_max=self.plan.get("poll_max_seconds", 30.0),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        outcome = event["outcome"]
        if outcome == "finished":
            return self._finish(context, JobStatus.from_dict(event["status"]), polls=event.get("polls"))
        if outcome == "deadline":
            client = self.hook().get_client()
            job_id = self.submitted["job_id"]
            self.log.error(
                "training %s passed its deadline (%ss); cancelling it", job_id, self.plan["deadline_seconds"]
            )
            client.cancel(job_id)
            audit(
                context,
                "retrain_failed",
                self.plan,
                self.target,
                cognigy_job_id=job_id,
                outcome="deadline",
                deadline_seconds=self.plan["deadline_seconds"],
            )
            return {
                "state": "deadline",
                "job_id": job_id,
                "reason": "deadline exceeded; task cancelled",
                "latency_seconds": time.time() - self.submitted["submitted_at"],
                "polls": event.get("polls"),
            }
        raise AirflowFailException(f"polling training {self.submitted['job_id']} failed: {event.get('message')}")

    def _finish(self, context: Any, status: JobStatus, polls: int | None = None) -> dict[str, Any]:
        latency = time.time() - self.submitted["submitted_at"]
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
        return {
            "state": status.state,
            "job_id": status.job_id,
            "reason": status.reason,
            "version_id": status.version_id or self.submitted.get("version_id"),
            "latency_seconds": round(latency, 3),
            "polls": polls,
        }


class CognigyRollbackOperator(_CognigyOperator):
    """Restore what served before the run, wait for the retrain (deferred), then prove it serves again.

    Verified means: the flow's intents export equals the rollback point (rest-v2) or the active version is
    the rollback version (training-jobs), AND held-out predictions agree with the champion's.
    """

    template_fields = ("target", "plan", "captured", "waited")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#ffd6d6"
    MIN_AGREEMENT = 0.95

    def __init__(self, *, captured: Any, waited: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.captured = captured
        self.waited = waited

    def execute(self, context: Any) -> dict[str, Any]:
        import json

        target = Target.from_dict(self.target)
        client = self.hook().get_client()
        state = RunState(context, _run_dir(context, self.target) / "rollback_state.json")
        point = json.loads(Path(self.captured["rollback_point_path"]).read_text())
        if self.waited and self.waited.get("state") == "running":
            client.cancel(self.waited["job_id"])
        audit(
            context,
            "rollback_triggered",
            self.plan,
            self.target,
            rollback_point=self.captured["rollback_point_path"],
            reason=(self.waited or {}).get("state"),
        )
        job_id = state.get("rollback.job_id")
        if job_id is None:
            job = client.restore(target, point, mode=self.plan["request"]["mode"])
            if job is None:  # training-jobs: immediate
                return self._verify(context)
            job_id = job.job_id
            state.set("rollback.job_id", job_id)
            state.set("rollback.started_at", time.time())
        status = client.job_status(job_id)
        if status.terminal:
            return self.execute_complete(context, {"outcome": "finished", "status": status.to_dict()})
        self.defer(
            trigger=CognigyJobTrigger(
                conn_id=self.plan["conn_id"],
                dialect=self.plan["dialect"],
                job_id=job_id,
                end_time=time.time() + self.plan["deadline_seconds"],
                poll_min=self.plan.get("poll_min_seconds", 2.0),
                poll_max=self.plan.get("poll_max_seconds", 30.0),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["outcome"] != "finished" or event["status"]["state"] != "succeeded":
            return self._fail(context, f"the restoring retrain did not finish: {event}")
        return self._verify(context)

    def _verify(self, context: Any) -> dict[str, Any]:
        target = Target.from_dict(self.target)
        client = self.hook().get_client()
        serving = client.serving_fingerprint(target)
        if serving != self.captured["fingerprint"]:
            return self._fail(
                context,
                f"serving state {serving[:12]}… differs from the rollback point {self.captured['fingerprint'][:12]}…",
            )
        champion = load_predictions(Path(self.captured["champion_predictions_path"]))
        sample = [u for u in dataset.held_out(target.locale, self.plan["request"]["heldOut"]["perIntent"])][:40]
        now, _ = score_utterances(
            sample, lambda s: client.score(target, s), self.plan["request"]["heldOut"]["threshold"]
        )
        save_predictions(_run_dir(context, self.target) / "rollback_check_predictions.jsonl", now)
        agree = agreement(champion, now)
        if agree < self.MIN_AGREEMENT:
            return self._fail(context, f"held-out predictions agree with the champion on only {agree:.0%}")
        audit(context, "rollback_verified", self.plan, self.target, fingerprint=serving, agreement=round(agree, 4))
        return {"verified": True, "fingerprint": serving, "agreement": agree}

    def _fail(self, context: Any, why: str) -> dict[str, Any]:
        audit(context, "rollback_failed", self.plan, self.target, reason=why)
        raise AirflowFailException(
            f"ROLLBACK NOT VERIFIED for {Target.from_dict(self.target).key}: {why}. A person must restore the "
            f"rollback point by hand: import {self.captured['rollback_point_path']} into the flow with "
            "mode=overwrite, retrain, and check the flow in the Cognigy UI."
        )
