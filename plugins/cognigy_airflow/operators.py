"""Operators with side effects on Cognigy, each safe to run more than once (Airflow runs tasks at least once).

- CognigySubmitTrainingOperator: loads training data and starts ONE training per DAG run and target.
- CognigyPromoteOperator: staging: brings the live flow to the judged intents, trains it once, proves it.
- CognigySnapshotReleaseOperator: snapshot path: releases the live flow as a snapshot and switches endpoints.
- CognigyRollbackOperator: restores the rollback point, waits (deferred) for the retrain, verifies.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from cognigy_provider.hooks.cognigy import CANCEL_SETTLE_SECONDS, CognigyHook, cancel_and_settle, finished_epoch
from cognigy_provider.links.cognigy import CognigyTaskLink, cognigy_flow_url
from cognigy_provider.sensors.cognigy import last_try
from cognigy_provider.triggers.cognigy import CognigyJobTrigger

from cognigy_airflow import steps, submission
from cognigy_airflow.auditing import audit
from cognigy_airflow.data_files import HELD_OUT, TRAINING, load_frozen, training_intents
from cognigy_airflow.record import PlanFromReference, retrain_record, stage
from cognigy_airflow.run_state import RunState
from include.cognigy import poll_policy, releases, rest_v2
from include.cognigy.client import CognigyClient
from include.cognigy.errors import (
    AmbiguousSubmission,
    AuthenticationError,
    BadRequest,
    CognigyError,
    NotFound,
    PermissionDenied,
)
from include.cognigy.model import JobStatus, Target
from include.evaluation.held_out import agreement, load_predictions, save_predictions, score_utterances
from include.results import Promoted, Released, RetrainRecord, RolledBack, Submitted
from include.state import state_store
from include.state.target_memory import record_release, released_snapshots

log = logging.getLogger(__name__)

# How long a try looks for the training of a POST that got no clear answer before it raises (plan:
# reconcile_seconds). A LATER try, not knowing whether an earlier POST happened, looks at least until the
# task list can no longer lag behind it (`submission.settle_seconds`) before it starts anything.
RECONCILE_SECONDS = 30.0
IMPORT_ATTEMPTS = 3  # the rollback's import (overwrite, so repeatable) is tried this often within one try
NOT_WORTH_RETRYING = (AuthenticationError, PermissionDenied, NotFound, BadRequest)


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
        t = steps.training_target(self.plan, self.target) if self.trains_staging else self.production
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


class CognigySubmitTrainingOperator(_CognigyOperator):
    """Put the candidate training data into the training flow and start the training exactly once.

    The training flow is the staging flow (staging promotion: production is not touched) or production itself
    (in place). Candidate data: the training file (source uri/demo, imported in chunks with overwrite semantics
    and verified by fingerprint), else the production flow's current intents (source flow; in place nothing is
    imported). What the challenger trains on is kept in the run folder (`challenger_intents.json`).

    Exactly once: the job id is kept in the task-instance state store. Before the POST we record the intent
    (a timestamp); a retry that finds an intent but no job id asks the tenant for trainings of this
    flow/locale started since then and reattaches to one, instead of starting another.
    """

    template_fields = ("target", "plan_ref", "captured")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#d6e9ff"
    trains_staging = True

    def __init__(self, *, captured: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.captured = captured

    def execute(self, context: Any) -> dict[str, Any]:
        plan, production = self.plan, self.production
        if plan.get("dry_run"):
            raise AirflowSkipException("dry run: nothing is sent to Cognigy")
        self.captured = stage("captured", self.captured)  # the XCom, typed
        if self.captured and self.captured.unchanged:
            raise AirflowSkipException("unchanged since the last successful training: nothing to retrain")
        request = steps.request_of(plan)
        target = request.staging_target(production) or production
        client = self.hook().get_client()
        folder = steps.run_folder(context, self.plan, self.target)
        state = RunState(context, folder / "submit_state.json")

        if earlier := _reattach(client, target, state, "submit", wait=self.reconcile_seconds):
            status, via = earlier
            audit(context, "training_reattached", plan, self.target, cognigy_job_id=status.job_id, via=via)
            return self._result(status, state, target, reattached=True)

        intents = self._candidate(plan, request, folder)
        fingerprint = rest_v2.fingerprint(intents)
        if client.v2 and (target != production or plan["data"][production.locale][TRAINING]):
            fingerprint = client.replace_intents(target, intents)
            audit(context, "challenger_staged", plan, self.target, flow_id=target.flow_id, fingerprint=fingerprint,
                  intents=len(intents), sentences=sum(len(i["exampleSentences"]) for i in intents))  # fmt: skip
        state.set("submit.training_counts", {i["name"]: len(i["exampleSentences"]) for i in intents})
        state.set("submit.fingerprint", fingerprint)

        idempotency_key = f"{context['ti'].dag_id}/{context['ti'].run_id}/{production.key}/{plan['request_hash']}"
        status = _start_once(
            client,
            target,
            state,
            "submit",
            lambda: client.start_training(
                target, mode=plan["request"]["mode"], spec_body=plan["spec_body"], idempotency_key=idempotency_key
            ),
            wait=self.reconcile_seconds,
        )
        audit(
            context,
            "training_submitted",
            plan,
            self.target,
            cognigy_job_id=status.job_id,
            cognigy_status=status.raw_status,
            trained_flow=target.flow_id,
            training_counts=state.get("submit.training_counts"),
        )
        return self._result(status, state, target, reattached=False)

    def _candidate(self, plan: dict[str, Any], request: Any, folder: Any) -> list[dict[str, Any]]:
        """The intents the challenger trains on, written once to the run folder (a retry reads the same)."""
        path = folder / steps.STAGED_INTENTS
        if (earlier := state_store.read_json(path)) is not None:
            return earlier
        training = load_frozen(plan["data"][self.production.locale][TRAINING])
        if training is not None:
            intents = rest_v2.intents_file(training_intents(request, training))
        else:  # source flow: what production holds now (the rollback point)
            point = steps.read_rollback_point(self.captured)
            intents = [
                {**i, "exampleSentences": list(i.get("exampleSentences") or [])} for i in point.get("intents") or []
            ]
        state_store.write_text(path, json.dumps(intents, ensure_ascii=False))
        return intents

    def _result(self, status: JobStatus, state: RunState, target: Target, *, reattached: bool) -> dict[str, Any]:
        self.link_to(status.job_id)
        submitted_at = state.get("submit.submitted_at") or state.get("submit.intent_at") or time.time()
        return Submitted(
            job_id=status.job_id,
            status=status.raw_status,
            submitted_at=submitted_at,
            reattached=reattached,
            training_counts=state.get("submit.training_counts"),
            fingerprint=state.get("submit.fingerprint"),
            trained_flow=target.flow_id,
            version_id=status.version_id,
        ).to_xcom()


def _counts(training: dict[str, list[str]] | None) -> dict[str, int] | None:
    return {k: len(v) for k, v in training.items()} if training is not None else None


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
        state = RunState(context, steps.run_folder(context, self.plan, self.target) / "rollback_state.json")
        point = steps.read_rollback_point(self.captured)
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
        state_file = steps.run_folder(context, self.plan, self.target) / f"{prefix}_state.json"
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
                target, restoring_job, self.captured.fingerprint, wait_seconds=steps.PROOF_WAIT_SECONDS
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
        save_predictions(steps.run_folder(context, self.plan, self.target) / "rollback_check_predictions.jsonl", now)
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
        state = RunState(context, steps.run_folder(context, self.plan, self.target) / "rollback_state.json")
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


class CognigyPromoteOperator(_CognigyOperator):
    """Staging promotion: bring production to exactly the staged intents, train it once, prove it answers like
    the challenger that passed the gates.

    Runs only when the gates passed on the staging flow. Verified means: production's training is proven
    (`include.cognigy.proof`: an intent training of production's flow and locale, created after the import ended,
    done, nothing else training, the model up to date with exactly the staged intents) AND production's held-out
    answers agree with the challenger's on at least `MIN_AGREEMENT` of a
    spread sample (`VERIFY_SAMPLE` utterances; the same classifier trained on the same sentences answers the
    same, so a lower figure means production did not get what was judged). Anything else ends as
    `{"promoted": False, "needs_rollback": True}` and `rollback` restores the rollback point.
    """

    template_fields = ("target", "plan_ref", "evaluated")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#d9f2d9"
    MIN_AGREEMENT = 0.95
    VERIFY_SAMPLE = 100

    def __init__(self, *, evaluated: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evaluated = evaluated

    @property
    def deadline_seconds(self) -> float:
        return float(self.plan.get("rollback_deadline_seconds") or self.plan["deadline_seconds"])

    def execute(self, context: Any) -> dict[str, Any]:
        if self.plan.get("promotion") != "staging":
            raise AirflowSkipException("in place: the challenger was trained on production itself")
        record = retrain_record(context, self.target, self.plan, evaluated=self.evaluated)
        if not record.retrained:
            raise AirflowSkipException("nothing was retrained")
        if not record.passed:
            raise AirflowSkipException("the gates rejected the challenger: production is not touched")
        return self._or_give_up(context, lambda: self._start(context))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.link_to((event.get("status") or {}).get("job_id") or event.get("job_id"))
        return self._or_give_up(context, lambda: self._after_training(context, event))

    def _or_give_up(self, context: Any, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Errors are retried by Airflow; on the last try the promotion is given up and rollback restores."""
        return self.on_last_try(context, step, self._failed)

    def _start(self, context: Any) -> dict[str, Any]:
        production = self.production
        client = self.hook().get_client()
        folder = steps.run_folder(context, self.plan, self.target)
        state = RunState(context, folder / "promote_state.json")
        staged = state_store.read_json(folder / steps.STAGED_INTENTS)
        staged_fingerprint = rest_v2.fingerprint(staged)
        earlier = _reattach(client, production, state, "promote", wait=self.reconcile_seconds)
        if earlier is not None:
            status = earlier[0]
        else:
            audit(context, "promotion_started", self.plan, self.target, fingerprint=staged_fingerprint)
            if client.serving_fingerprint(production) != staged_fingerprint:
                client.replace_intents(production, staged)
            status = _start_once(
                client,
                production,
                state,
                "promote",
                lambda: client.start_training(
                    production, mode=self.plan["request"]["mode"], spec_body={}, idempotency_key="promote"
                ),
                wait=self.reconcile_seconds,
            )
            audit(context, "promotion_training_started", self.plan, self.target, promotion_job_id=status.job_id)
        self.link_to(status.job_id)
        if status.terminal:
            return self._after_training(context, {"outcome": "finished", "status": status.to_dict()})
        started = float(state.get("promote.submitted_at") or time.time())
        self.defer_on_training(status.job_id, started, self.deadline_seconds)

    def _after_training(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["outcome"] == "deadline":
            cancel_and_settle(self.hook().get_client(), event["job_id"])
            return self._failed(context, f"the promotion training passed {self.deadline_seconds:g}s", event["job_id"])
        if event["outcome"] != "finished":
            return self._failed(context, f"polling the promotion training failed: {event.get('message')}")
        status = JobStatus.from_dict(event["status"])
        if status.state != "succeeded":
            return self._failed(
                context, f"the promotion training ended {status.raw_status}: {status.reason}", status.job_id
            )
        return self._verify(context, status)

    def _verify(self, context: Any, status: JobStatus) -> dict[str, Any]:
        production = self.production
        client = self.hook().get_client()
        folder = steps.run_folder(context, self.plan, self.target)
        staged_fingerprint = rest_v2.fingerprint(state_store.read_json(folder / steps.STAGED_INTENTS))
        proof = client.prove_training(
            production, status.job_id, staged_fingerprint, wait_seconds=steps.PROOF_WAIT_SECONDS
        )
        if not proof.proven:
            return self._failed(context, f"production's training is not proven: {proof.why_not()}", status.job_id)
        serving = proof.fingerprint if client.v2 else client.serving_fingerprint(production)
        if serving != staged_fingerprint:
            return self._failed(
                context, f"production holds {serving[:12]}…, not the staged {staged_fingerprint[:12]}…", status.job_id
            )
        challenger = load_predictions(folder / "challenger_predictions.jsonl")
        held = load_frozen(self.plan["data"][production.locale][HELD_OUT])
        sample = _spread(list(held.utterances), self.VERIFY_SAMPLE)
        now, _ = score_utterances(
            sample, lambda s: client.score(production, s), self.plan["request"]["heldOut"]["threshold"]
        )
        save_predictions(folder / "promotion_check_predictions.jsonl", now)
        agree = agreement(challenger, now)
        if agree < self.MIN_AGREEMENT:
            return self._failed(
                context,
                f"production's held-out answers agree with the judged challenger on only {agree:.0%} "
                f"(< {self.MIN_AGREEMENT:.0%}) of {len(sample)} utterances",
                status.job_id,
            )
        audit(context, "promotion_verified", self.plan, self.target, promotion_job_id=status.job_id,
              fingerprint=serving, agreement=round(agree, 4))  # fmt: skip
        return Promoted(
            promoted=True,
            verified=True,
            job_id=status.job_id,
            fingerprint=serving,
            agreement=agree,
            finished_at=finished_epoch(status),
        ).to_xcom()

    def _failed(self, context: Any, why: str, job_id: str | None = None) -> dict[str, Any]:
        audit(context, "promotion_failed", self.plan, self.target, reason=why, promotion_job_id=job_id)
        self.log.error("promotion of %s failed: %s; rollback restores the rollback point", self.target, why)
        return Promoted(promoted=False, verified=False, needs_rollback=True, reason=why, job_id=job_id).to_xcom()


def _spread(utterances: list[Any], size: int) -> list[Any]:
    """Up to `size` utterances taken evenly across the list (so every intent is represented)."""
    if len(utterances) <= size:
        return list(utterances)
    step = len(utterances) / size
    return [utterances[int(i * step)] for i in range(size)]


class CognigySnapshotReleaseOperator(_CognigyOperator):
    """Snapshot path (`include.cognigy.releases`): release the judged live flow as a new snapshot and switch every
    serving endpoint to it; on any failure switch every endpoint back to the snapshot that served before.

    Runs only when customers meet a snapshot and the challenger passed (staging: and was promoted into the live
    flow). Before creating the snapshot it makes room under the agent's limit, deleting only snapshots this
    product released (never one an endpoint serves, never the last `keep_released_snapshots`). Safe to run again:
    the snapshot is found by its name (unique per run and target) before another is created, and switching an
    endpoint is repeatable.
    """

    template_fields = ("target", "plan_ref", "promoted")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#e6d9ff"

    def __init__(self, *, promoted: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.promoted = promoted

    def execute(self, context: Any) -> dict[str, Any]:
        record = retrain_record(context, self.target, self.plan, promoted=self.promoted)
        if not record.passed:  # `decide` (or `approve`) only comes here with a passed challenger
            raise AirflowFailException("the gates did not pass this challenger: nothing may be released")
        if record.staging and not (record.promoted and record.promoted.promoted):
            raise AirflowFailException("the promotion into the live flow did not succeed: nothing to release")
        self.link_to()
        if not record.snapshot_release:
            return self.on_last_try(context, lambda: self._confirm_live_project(context), self._gave_up)
        return self.on_last_try(context, lambda: self._release(context, record), self._gave_up)

    def _confirm_live_project(self, context: Any) -> dict[str, Any]:
        """Project path: the trained live flow is the release. Read back what every endpoint of the flow serves now,
        so the record says what was read, not what was assumed (training-jobs: the gateway has no endpoints)."""
        api = self.hook().get_client().v2
        if api is None:
            why = "training-jobs: the gateway serves its active model version"
            return Released(released=True, reason=why, released_at=time.time()).to_xcom()
        path = releases.release_path(api, self.production)
        names = [e.name for e in path.endpoints]
        if path.path != "project":
            raise AirflowFailException(
                f"endpoints {', '.join(names)} now serve snapshot {path.serving and path.serving.name!r}, not the "
                "live project this run trained: someone switched them during the run; nothing was released"
            )
        audit(context, "release_confirmed", self.plan, self.target, path="project", endpoints=names)
        why = "the endpoints serve the live project, which now holds the judged model"
        return Released(released=True, endpoints=names, released_at=time.time(), reason=why).to_xcom()

    def _release(self, context: Any, record: RetrainRecord) -> dict[str, Any]:
        target, plan = self.production, self.plan
        api = self.hook().get_client().v2
        assert api is not None and record.captured is not None
        path = releases.ReleasePath.from_dict(record.captured.release or {})
        previous = path.serving.to_dict() if path.serving else None
        state = RunState(context, steps.run_folder(context, plan, self.target) / "release_state.json")
        own = released_snapshots(target.project_id)
        room = releases.room(api, target.project_id, own, keep_last=int(plan["keep_released_snapshots"]))
        deleted = [s.to_dict() for s in releases.make_room(api, room, int(plan["snapshot_limit"]))]
        if deleted:
            audit(
                context,
                "snapshots_pruned",
                plan,
                self.target,
                deleted=deleted,
                kept_last=plan["keep_released_snapshots"],
            )
        name = releases.snapshot_name(self._bot(api, target), target.locale, context["ti"].run_id)
        tried_before = state.get("release.intent_at") is not None
        state.set("release.intent_at", time.time())
        endpoint_names = [e.name for e in path.endpoints]
        try:
            snapshot = releases.release(
                api, target, path, name, self._description(context, record), tried_before=tried_before
            )
        except releases.ReleaseFailed as exc:
            made = exc.snapshot.to_dict() if exc.snapshot else None
            audit(context, "release_failed", plan, self.target, reason=str(exc), snapshot=made, previous=previous,
                  switched_back=exc.switched_back, endpoints=endpoint_names)  # fmt: skip
            if not exc.switched_back:
                self.log.error("RELEASE NOT SWITCHED BACK for %s: point endpoint(s) %s at snapshot %s by hand",
                               target.key, ", ".join(endpoint_names), previous)  # fmt: skip
            return Released(released=False, snapshot=made, previous=previous, endpoints=endpoint_names,
                            switched_back=exc.switched_back, deleted=deleted, reason=str(exc)).to_xcom()  # fmt: skip
        record_release(target.project_id, snapshot.to_dict(), context["ti"].run_id)
        audit(context, "snapshot_released", plan, self.target, snapshot=snapshot.to_dict(), previous=previous,
              endpoints=endpoint_names)  # fmt: skip
        return Released(released=True, snapshot=snapshot.to_dict(), previous=previous, endpoints=endpoint_names,
                        deleted=deleted, released_at=time.time()).to_xcom()  # fmt: skip

    def _gave_up(self, context: Any, why: str) -> dict[str, Any]:
        """Last try: the release raised before or while switching. Switch every endpoint back, then say so."""
        captured = retrain_record(context, self.target, self.plan, promoted=self.promoted).captured
        path = releases.ReleasePath.from_dict((captured and captured.release) or {})
        switched_back = False
        if path.serving is not None:
            try:
                releases.switch_endpoints(self.hook().get_client().v2, [e.id for e in path.endpoints], path.serving.id)
                switched_back = True
            except CognigyError as exc:
                why = f"{why}; switching back failed too: {exc}"
        audit(context, "release_failed", self.plan, self.target, reason=why, switched_back=switched_back)
        return Released(released=False, switched_back=switched_back, reason=why,
                        previous=path.serving.to_dict() if path.serving else None).to_xcom()  # fmt: skip

    @staticmethod
    def _bot(api: Any, target: Target) -> str:
        return str(api.flow(target).get("name") or target.flow_id)

    def _description(self, context: Any, record: RetrainRecord) -> str:
        summary = (record.evaluated and record.evaluated.summary) or {}
        figures = ", ".join(
            f"{label} {summary[key]:.4g}"
            for key, label in (("accuracy", "accuracy"), ("accuracy_delta", "change"), ("p_value", "p"))
            if isinstance(summary.get(key), int | float)
        )
        return (
            f"NLU retrain of flow {self.production.flow_id}, locale {self.production.locale}, Airflow run "
            f"{context['ti'].run_id}; gates passed ({figures or 'no figures'}); gates {self.plan.get('gates_hash')}"
        )[:1000]
