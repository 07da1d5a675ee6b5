"""The `rollback` task: production's rollback point restored, its retraining waited for (deferred), and verified."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from cognigy_provider.hooks.cognigy import CANCEL_SETTLE_SECONDS, cancel_and_settle, finished_epoch
from cognigy_provider.links.cognigy import CognigyTaskLink
from cognigy_provider.sensors.cognigy import last_try

from cognigy_airflow import submission
from cognigy_airflow.auditing import audit
from cognigy_airflow.data_files import HELD_OUT, load_frozen
from cognigy_airflow.operators import (
    _CognigyOperator,
    _reattach,
    _spread,
    _start_once,
)
from cognigy_airflow.record import retrain_record
from cognigy_airflow.run_files import read_rollback_point, run_folder
from cognigy_airflow.run_state import RunState
from include.cognigy import rest_v2
from include.cognigy.client import CognigyClient
from include.cognigy.errors import (
    AuthenticationError,
    BadRequest,
    CognigyError,
    NotFound,
    PermissionDenied,
)
from include.cognigy.model import JobStatus, Target
from include.cognigy.proof import PROOF_WAIT_SECONDS
from include.evaluation.held_out import agreement, load_predictions, save_predictions, score_utterances
from include.results import RetrainRecord, RolledBack
from include.state import state_store

IMPORT_ATTEMPTS = 3  # the rollback's import (overwrite, so repeatable) is tried this often within one try
NOT_WORTH_RETRYING = (AuthenticationError, PermissionDenied, NotFound, BadRequest)


class CognigyRollbackOperator(_CognigyOperator):
    """Restore what served before the run, wait for the retrain (deferred), then prove it serves again.

    Verified means: the restoring retrain is proven (`include.cognigy.proof`: an intent training of the flow and
    locale, created after the import ended, done, nothing else training, the model up to date) and the flow's intents
    export equals the rollback point (rest-v2), or the active version is the rollback version (training-jobs);
    AND held-out predictions agree with the champion's.

    Safe to run again: the import overwrites, and the restoring retrain is started exactly once per round
    (same intent + reconciliation as the submit). A retrain that fails starts a new round on the next try.
    On the last try every failure is audited as `rollback_failed` with what a person must do.
    """

    template_fields = ("target", "plan_ref", "promoted")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#ffd6d6"
    MIN_AGREEMENT = 0.95
    MIN_SCORED_SHARE = 0.5  # fewer scored utterances than this is no verdict on the restore, try again
    VERIFY_SAMPLE = 40

    def __init__(self, *, promoted: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.promoted = promoted  # the XCom (dict); the earlier results come from the record (`execute`)
        self.record: RetrainRecord | None = None
        self._restored_at: float | None = None

    @property
    def captured(self) -> Any:
        return self.record.captured if self.record else None

    @property
    def deadline_seconds(self) -> float:
        return float(self.plan.get("rollback_deadline_seconds") or self.plan["deadline_seconds"])

    def execute(self, context: Any) -> dict[str, Any]:
        self.record = retrain_record(context, self.target, self.plan, promoted=self.promoted)
        needed, why = self.record.restore_needed()
        if not needed and self.captured:  # the branch's skip is not reliable in mapped groups
            raise AirflowSkipException(why)
        self.link_to()
        if not self.captured:  # capture failed, so submit never ran: nothing on Cognigy changed
            audit(context, "rollback_skipped", self.plan, self.target, reason="no rollback point: nothing changed")
            return RolledBack(verified=False, needed=False).to_xcom()
        return self._failing_loudly_on_last_try(context, lambda: self._restore(context))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.record = retrain_record(context, self.target, self.plan, promoted=self.promoted)
        self.link_to((event.get("status") or {}).get("job_id") or event.get("job_id"))  # the restoring training
        return self._failing_loudly_on_last_try(context, lambda: self._after_restore(context, event))

    def _failing_loudly_on_last_try(self, context: Any, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Any error: Airflow retries; on the last try, audit `rollback_failed` and say what a person must do."""
        return self.on_last_try(context, step, self._fail)

    def _after_restore(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["outcome"] == "deadline":
            cancel_and_settle(self.hook().get_client(), event["job_id"])
            return self._retry_or_fail(context, f"the restoring retrain passed {self.deadline_seconds:g}s")
        if event["outcome"] != "finished":
            return self._retry_or_fail(context, f"polling the restoring retrain failed: {event.get('message')}")
        if event["status"]["state"] != "succeeded":
            status = event["status"]
            return self._retry_or_fail(
                context, f"the restoring retrain ended {status.get('raw_status')}: {status.get('reason')}"
            )
        self._restored_at = finished_epoch(JobStatus.from_dict(event["status"]))
        return self._verify(context, restoring_job=event["status"]["job_id"])

    # --- steps -----------------------------------------------------------------------------------------
    def _restore(self, context: Any) -> dict[str, Any]:
        target = self.production
        client = self.hook().get_client()
        state = RunState(context, run_folder(context, self.plan, self.target) / "rollback_state.json")
        point = read_rollback_point(self.captured)
        audit(
            context,
            "rollback_triggered",
            self.plan,
            self.target,
            rollback_point=self.captured.rollback_point_path,
            reason=self.record.restore_needed()[1],
            training_state=self.record.training_state,
        )
        self._stop_run_training(context, client, target)
        prefix = f"rollback.{int(state.get('rollback.round') or 0)}"
        if point["kind"] != "intents-export":  # training-jobs: the rollback call is immediate and repeatable
            return self._roll_back_version(context, client, target, point)

        earlier = _reattach(client, target, state, prefix, wait=self.reconcile_seconds)
        if earlier is not None:
            status = earlier[0]
        else:
            self._import_point(client, target, point)
            status = _start_once(
                client,
                target,
                state,
                prefix,
                lambda: client.start_training(
                    target, mode=self.plan["request"]["mode"], spec_body={}, idempotency_key=prefix
                ),
                wait=self.reconcile_seconds,
            )
            audit(context, "rollback_retrain_started", self.plan, self.target, cognigy_job_id=status.job_id)
        self.link_to(status.job_id)
        if status.terminal:
            return self.execute_complete(context, {"outcome": "finished", "status": status.to_dict()})
        started = float(state.get(f"{prefix}.submitted_at") or time.time())
        self.defer_on_training(status.job_id, started, self.deadline_seconds)

    def _roll_back_version(
        self, context: Any, client: CognigyClient, target: Target, point: dict[str, Any]
    ) -> dict[str, Any]:
        """training-jobs: `POST /models/{id}/rollback {"target_version_id"}`, once per try (repeatable: the same
        version twice leaves the same state). Without a version (no rollbackTriggerVersionId, and the specification
        offers no read of the serving one) nothing is rolled back, and the audit says so. With a held-out set the
        gateway's extensions verify it (active version, predictions); without one, the specification offers no
        read-back: the rollback call's 2xx answer is the evidence, and the audit says that too."""
        if not point.get("versionId"):
            reason = (
                "nothing rolled back: no rollbackTriggerVersionId was given and the specification offers no read of "
                "the serving version; the rejected version serves until a person rolls it back"
            )
            audit(context, "rollback_skipped", self.plan, self.target, reason=reason)
            return RolledBack(verified=False, needed=True).to_xcom()
        client.restore_point(target, point)
        if self.plan["data"][target.locale][HELD_OUT]:
            return self._verify(context)
        audit(context, "rollback_verified", self.plan, self.target, rollback_version_id=point["versionId"],
              verified_by="the rollback call answered 2xx (the specification offers no read-back)")  # fmt: skip
        return RolledBack(verified=True, fingerprint=point["versionId"], restored_at=time.time()).to_xcom()

    def _stop_run_training(self, context: Any, client: CognigyClient, target: Target) -> None:
        """A training of this run that still runs would overwrite the restore when it ends: cancel it first.

        The job id comes from the wait's result, else the submit's state file (the wait may have failed). Without
        either (the submit may have died after its POST), the trainings the tenant's task list shows since the
        submit's intent cannot be proven ours: they are not cancelled, the restore waits until they have ended.
        """
        staging = self.plan.get("promotion") == "staging"
        prefix = "promote" if staging else "submit"  # the run's training of the PRODUCTION flow
        state_file = run_folder(context, self.plan, self.target) / f"{prefix}_state.json"
        started = state_store.read_json(state_file) or {}
        known = self.record.promoted if staging else self.record.waited
        job_ids = {j for j in (known and known.job_id, started.get(f"{prefix}.job_id")) if j}
        since = started.get(f"{prefix}.since_server_at") or started.get(f"{prefix}.intent_at")  # server clock first
        if not job_ids and since:
            # Trainings since the intent may be this run's or anybody's: nothing proves which, so none is cancelled;
            # the restore waits until they have ended (at most the platform's training limit).
            self._wait_until_ended(context, client, [j for j in client.recent_trainings(target, float(since))])
        for job_id in sorted(job_ids):
            try:
                if client.job_status(job_id).terminal:
                    continue
                status = cancel_and_settle(client, job_id)
            except NotFound:
                continue
            if not status.terminal:
                raise CognigyError(f"training {job_id} of this run is still {status.raw_status} after cancelling")
            audit(context, "training_cancelled", self.plan, self.target, cognigy_job_id=job_id, by="rollback")

    def _wait_until_ended(self, context: Any, client: CognigyClient, trainings: list[JobStatus]) -> None:
        open_jobs = [j for j in trainings if not j.terminal]
        if not open_jobs:
            return
        submission.report_others("rollback", "-", open_jobs)
        deadline = time.monotonic() + rest_v2.MAX_TRAINING_SECONDS + CANCEL_SETTLE_SECONDS
        while open_jobs and time.monotonic() < deadline:
            time.sleep(2.0)
            open_jobs = [s for s in (client.job_status(j.job_id) for j in open_jobs) if not s.terminal]
        if open_jobs:
            raise CognigyError(f"training(s) {', '.join(j.job_id for j in open_jobs)} of the flow still run")

    def _import_point(self, client: CognigyClient, target: Target, point: dict[str, Any]) -> None:
        """Import the rollback point with mode=overwrite (repeatable), a few times if Cognigy's import fails."""
        for attempt in range(1, IMPORT_ATTEMPTS + 1):
            try:
                client.restore_point(target, point)
                return
            except NOT_WORTH_RETRYING:
                raise
            except CognigyError as exc:
                if attempt == IMPORT_ATTEMPTS:
                    raise
                self.log.warning("rollback import failed (%s); importing again (attempt %d)", exc, attempt + 1)
                time.sleep(2.0 * attempt)

    def _verify(self, context: Any, restoring_job: str | None = None) -> dict[str, Any]:
        """`restoring_job`: the retrain of the restored intents (rest-v2), proven like any training."""
        target = self.production
        client = self.hook().get_client()
        if restoring_job is not None:
            proof = client.prove_training(
                target, restoring_job, self.captured.fingerprint, wait_seconds=PROOF_WAIT_SECONDS
            )
            if proof.problems:
                return self._retry_or_fail(context, f"the restoring retrain is not proven: {proof.why_not()}")
            if proof.running:
                return self._retry_or_fail(context, proof.why_not())
        serving = client.serving_fingerprint(target)
        if serving != self.captured.fingerprint:
            return self._fail(
                context,
                f"serving state {serving[:12]}… differs from the rollback point {self.captured.fingerprint[:12]}…",
            )
        champion = load_predictions(state_store.path_of(self.captured.champion_predictions_path))
        held = load_frozen(self.plan["data"][target.locale][HELD_OUT])
        sample = _spread(list(held.utterances), self.VERIFY_SAMPLE)
        now, _ = score_utterances(
            sample, lambda s: client.score(target, s), self.plan["request"]["heldOut"]["threshold"]
        )
        save_predictions(run_folder(context, self.plan, self.target) / "rollback_check_predictions.jsonl", now)
        scored = sum(p.status == "scored" for p in now)
        if scored < self.MIN_SCORED_SHARE * len(sample):
            return self._retry_or_fail(context, f"only {scored}/{len(sample)} held-out utterances could be scored")
        agree = agreement(champion, now)
        if agree < self.MIN_AGREEMENT:
            return self._fail(context, f"held-out predictions agree with the champion on only {agree:.0%}")
        audit(
            context,
            "rollback_verified",
            self.plan,
            self.target,
            fingerprint=serving,
            agreement=round(agree, 4),
            scored=scored,
        )
        return RolledBack(
            verified=True, fingerprint=serving, agreement=agree, restored_at=self._restored_at or time.time()
        ).to_xcom()

    def _retry_or_fail(self, context: Any, why: str) -> dict[str, Any]:
        """Not proven either way: the next try starts a new restore round; the last try gives up loudly."""
        if last_try(context):
            return self._fail(context, why)
        state = RunState(context, run_folder(context, self.plan, self.target) / "rollback_state.json")
        state.set("rollback.round", int(state.get("rollback.round") or 0) + 1)
        audit(context, "rollback_retry", self.plan, self.target, reason=why)
        raise AirflowException(f"rollback of {self.production.key} not done yet: {why}; trying again")

    def _fail(self, context: Any, why: str) -> dict[str, Any]:
        audit(context, "rollback_failed", self.plan, self.target, reason=why)
        raise AirflowFailException(
            f"ROLLBACK NOT VERIFIED for {self.production.key}: {why}. A person must restore the "
            f"rollback point by hand: import {self.captured.rollback_point_path} into the flow with "
            "mode=overwrite, retrain, and check the flow in the Cognigy UI."
        )
