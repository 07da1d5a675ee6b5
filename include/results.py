"""What each task of a retrain hands on, typed, and the one place that decides what the retrain came to.

Every task of the mapped ``retrain`` group returns one of the models below (as JSON, its XCom). Later tasks see
them together as a :class:`RetrainRecord` (``cognigy_airflow.record`` builds it from the XComs); a stage that
did not run (failed, skipped, not reached) is ``None`` there. :meth:`RetrainRecord.outcome`,
:meth:`RetrainRecord.restore_needed` and :meth:`RetrainRecord.ungated_exposure_seconds` are the only place that
reads the stages together to decide: MLflow, the audit trail and the run's verdict all use them.

The Cognigy training (REST v2: a Task; tutorial dialect: a job) is named ``job_id`` in these results and
``cognigy_job_id`` in audit records.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_xcom(self) -> dict[str, Any]:
        """The JSON an XCom holds (and the task page shows)."""
        return self.model_dump(mode="json")


class Captured(_Result):
    """`capture`: the rollback point (stored, with its checksum), and what serves now, scored (the champion)."""

    rollback_point_path: str
    rollback_point_sha256: str | None = None
    fingerprint: str  # of what serves now (the rollback point's intents)
    candidate_fingerprint: str | None = None  # of what this run would train
    training_out_of_date: bool | None = None
    endpoints: list[Any] = []  # endpoints serving the production flow (none: nobody is exposed)
    staging: dict[str, Any] | None = None  # the checked staging flow {flow_id, project_id}
    held_out: dict[str, Any] | None = None
    training_data: dict[str, Any] | None = None
    unchanged: bool = False  # nothing changed since the last successful training: the run ends here
    last_trained_run: str | None = None
    champion_predictions_path: str | None = None
    champion_eval_seconds: float | None = None
    champion_via: str | None = None  # scored | cache | earlier try
    serving_counts: dict[str, int] | None = None
    serving_version: str | None = None
    # how a change reaches customers (`include.cognigy.releases.ReleasePath.to_dict`): "snapshot" or "project"
    release: dict[str, Any] | None = None
    champion_scored_on: str | None = None  # what the champion's predictions came from, in words


class Submitted(_Result):
    """`submit`: the ONE training this run started (or found again after an ambiguous answer)."""

    job_id: str
    status: str | None = None
    submitted_at: float
    reattached: bool = False
    training_counts: dict[str, int] | None = None
    fingerprint: str | None = None  # of the intents the challenger trains on
    trained_flow: str | None = None
    version_id: str | None = None


class Waited(_Result):
    """`wait_for_training`: how the training ended (succeeded, failed, cancelled, deadline, unknown)."""

    state: str
    job_id: str
    reason: str | None = None
    version_id: str | None = None
    latency_seconds: float | None = None
    finished_at: float | None = None  # Cognigy's clock: when the challenger began to serve (in place)
    polls: int | None = None


class Evaluated(_Result):
    """`evaluate`: the gates' verdict on the challenger, with the report files."""

    passed: bool
    training_state: str
    reason: str
    summary: dict[str, Any] = {}
    artifacts: dict[str, str] = {}
    decided_at: float
    eval_seconds: float | None = None
    platform_metrics: dict[str, Any] | None = None


class Approved(_Result):
    """`approve` (opt-in, `include.evaluation.approval`): a person's decision on releasing a passed challenger,
    or the timeout's (which counts as a rejection)."""

    approved: bool
    decision: str  # approved | rejected | timed_out
    responded_by: dict[str, Any] | None = None  # {id, name} as Airflow gives it; None when the wait timed out
    responded_at: str | None = None  # ISO 8601, UTC
    timed_out: bool = False
    reason: str | None = None  # why approval was needed
    branch: str | None = None  # the task the run went on with


class Promoted(_Result):
    """`promote` (staging): production trained on the challenger's intents and verified, or why not."""

    promoted: bool
    verified: bool
    job_id: str | None = None
    fingerprint: str | None = None
    agreement: float | None = None
    finished_at: float | None = None
    needs_rollback: bool = False
    reason: str | None = None


class Released(_Result):
    """`release` (snapshot path): the new snapshot every serving endpoint points at, or why not."""

    released: bool
    snapshot: dict[str, Any] | None = None  # {id, name, hash, created_at}: serves now when released
    previous: dict[str, Any] | None = None  # the snapshot that served before (the rollback point)
    endpoints: list[str] = []
    switched_back: bool | None = None  # after a failed switch: every endpoint proven back on `previous`
    deleted: list[dict[str, Any]] = []  # own snapshots pruned to make room
    reason: str | None = None
    released_at: float | None = None


class RolledBack(_Result):
    """`rollback`: production restored to the rollback point and shown to serve it again."""

    verified: bool
    needed: bool = True
    fingerprint: str | None = None
    agreement: float | None = None
    restored_at: float | None = None


class Synced(_Result):
    """`mlflow_sync`: the MLflow run, or the outbox entry that waits for the resync DAG."""

    synced: bool
    deferred: bool = False
    run_key: str | None = None
    outbox_entry: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    model_version: str | None = None
    champion_version: str | None = None


OUTCOMES = {
    "dry_run": "validated only; nothing sent",
    "request_rejected": "validate refused the request or its data files; nothing was sent",
    "unchanged": "the flow did not change since its last successful training; nothing retrained",
    "promoted": "the challenger passed every blocking gate and serves",
    "rejected": "staging: the gates rejected the challenger; production was not touched",
    "rejected_rolled_back": "in place: the gates rejected the challenger; production restored and verified",
    "promotion_failed_rolled_back": "staging: promotion failed; production restored and verified",
    "incomplete": "a restore was needed and is not verified: a person must act",
    "training_not_run": "the run stopped before a training started; nothing was changed",
    "rejected_not_rolled_back": "training-jobs: the gates rejected the version; no rollbackTriggerVersionId was "
    "given, so nothing was rolled back (the verdict, not a failure)",
    "release_failed_switched_back": "snapshot: the release failed; every endpoint is back on the snapshot that "
    "served before and the live flow is restored",
    "not_approved": "the gates passed but the release was rejected (or its approval timed out); production was "
    "not touched",
    "not_approved_rolled_back": "in place: the gates passed but the release was rejected (or its approval timed "
    "out); production restored and verified",
    "not_approved_not_rolled_back": "training-jobs: the release was rejected (or its approval timed out); no "
    "rollbackTriggerVersionId was given, so nothing was rolled back",
}  # plus training_<state> (staging: production untouched) and training_<state>_rolled_back (in place)
FAILING = ("request_rejected", "incomplete", "promotion_failed_rolled_back", "release_failed_switched_back")


def meaning(outcome: str) -> str:
    """An outcome in words (the audit's `outcome_meaning`)."""
    if outcome in OUTCOMES:
        return OUTCOMES[outcome]
    if outcome.endswith("_rolled_back"):
        return f"in place: the training ended {outcome[9:-12]}; production restored and verified"
    return f"the training ended {outcome.removeprefix('training_')}; production was not touched"


def run_fails(outcome: str) -> bool:
    """Whether the DAG run must end failed (a person should look)."""
    return outcome in FAILING or (outcome.startswith("training_") and outcome != "training_succeeded")


class RetrainRecord(BaseModel):
    """One target's retrain so far: its plan, and each stage's result (``None``: that stage did not run)."""

    model_config = ConfigDict(extra="forbid")

    plan: dict[str, Any]
    target: dict[str, Any]
    captured: Captured | None = None
    submitted: Submitted | None = None
    waited: Waited | None = None
    evaluated: Evaluated | None = None
    approved: Approved | None = None  # only when the release waited for a person
    promoted: Promoted | None = None
    released: Released | None = None
    rolled_back: RolledBack | None = None
    synced: Synced | None = None

    @property
    def staging(self) -> bool:
        return self.plan.get("promotion") == "staging"

    @property
    def no_rollback_version(self) -> bool:
        """training-jobs without `rollbackTriggerVersionId`: the specification names no version to return to."""
        request = self.plan.get("request") or {}
        return self.plan.get("dialect") == "training-jobs" and not request.get("rollbackTriggerVersionId")

    @property
    def snapshot_release(self) -> bool:
        """Customers meet a snapshot: a passed challenger is released as a new snapshot."""
        return bool(self.captured and (self.captured.release or {}).get("path") == "snapshot")

    @property
    def released_ok(self) -> bool:
        return bool(self.released and self.released.released)

    @property
    def retrained(self) -> bool:
        """Something may have changed on Cognigy: a rollback point exists and the flow was not unchanged."""
        return self.captured is not None and not self.captured.unchanged and not self.plan.get("dry_run")

    @property
    def passed(self) -> bool:
        return bool(self.evaluated and self.evaluated.passed)

    @property
    def not_approved(self) -> bool:
        """The gates passed, the release waited for a person, and it was rejected or timed out."""
        return self.passed and self.approved is not None and not self.approved.approved

    @property
    def training_state(self) -> str | None:
        """How the challenger's training ended; "unproven" when it ended done but the platform did not show that
        it trained the staged intents (`include.cognigy.proof`)."""
        if self.evaluated and self.evaluated.training_state == "unproven":
            return "unproven"
        return self.waited.state if self.waited else None

    @property
    def job_id(self) -> str | None:
        """The run's training (the challenger's), as far as it is known."""
        return (self.waited or self.submitted).job_id if (self.waited or self.submitted) else None

    def release_verdict(self) -> dict[str, Any] | None:
        """How the change reached customers, for the verdict: the path, and on the snapshot path the snapshot that
        serves now and the one that served before (the rollback point)."""
        release = self.captured and self.captured.release
        if not release:
            return None
        previous = release.get("serving_snapshot")
        released = self.released
        serving = released.snapshot if released and released.released else previous
        return {
            "path": release["path"],
            "endpoints": [e["name"] for e in release.get("endpoints") or []],
            "snapshot": serving,
            "previous": previous,
            "released": bool(released and released.released and release["path"] == "snapshot"),
            "switched_back": released.switched_back if released else None,
            "champion_scored_on": self.captured.champion_scored_on if self.captured else None,
        }

    def restore_needed(self) -> tuple[bool, str]:
        """Whether production must get its rollback point back, and why (shown in the task log and audit)."""
        if self.captured is None:
            return False, "no rollback point: nothing was changed"
        if self.captured.unchanged:
            return False, "unchanged since the last successful training: nothing was retrained"
        if self.not_approved:
            decision = self.approved.decision.replace("_", " ")  # type: ignore[union-attr]
            if self.staging:
                return False, f"the release was not approved ({decision}): production was not touched"
            if self.no_rollback_version:
                return False, "training-jobs: no rollbackTriggerVersionId was given, so nothing is rolled back"
            return True, f"the release was not approved ({decision}): production goes back to its rollback point"
        if self.snapshot_release and self.passed and (self.promoted or not self.staging):
            if self.staging and not (self.promoted and self.promoted.promoted):
                why = (self.promoted and self.promoted.reason) or "the promote task did not finish"
                return True, f"promotion failed: {why}"
            if self.released_ok:
                return False, "released as a snapshot: the new model serves"
            why = (self.released and self.released.reason) or "the release task did not finish"
            return True, f"release failed ({why}): the live flow goes back to what it held before"
        if self.staging:
            if not self.passed:
                return False, "the challenger was not promoted: production was not touched"
            if self.promoted and self.promoted.promoted:
                return False, "promoted and verified: the new model stays"
            why = (self.promoted and self.promoted.reason) or "the promote task did not finish"
            return True, f"promotion failed: {why}"
        if self.passed:
            return False, "the gates passed: the new model stays"
        if self.no_rollback_version:
            return False, "training-jobs: no rollbackTriggerVersionId was given, so nothing is rolled back"
        return True, (self.evaluated and self.evaluated.reason) or "the training's result is unknown"

    # --- the branches of the graph (the DAG's `decide`, `approve` and `confirm` tasks return these task ids) ---
    def accept_path(self) -> str:
        """Where a judged, passed challenger goes: staging -> `promote` (then `release`); in place -> `release`."""
        return "promote" if self.staging else "release"

    def settle_path(self) -> str:
        """Where a run goes when nothing more is to be released: `rollback` when production must get its rollback
        point back, else straight to `mlflow_sync`."""
        return "rollback" if self.restore_needed()[0] else "mlflow_sync"

    def after_evaluation(self) -> str:
        """`decide`: the accept path when something was retrained and every blocking gate passed, else settle."""
        return self.accept_path() if self.retrained and self.passed else self.settle_path()

    def outcome(self) -> str:
        """The retrain's outcome, in the words of OUTCOMES (MLflow, the audit and the verdict use this)."""
        if self.plan.get("dry_run"):
            return "dry_run"
        if self.captured and self.captured.unchanged:
            return "unchanged"
        training = self.training_state or "not_run"
        restored = bool(self.rolled_back and self.rolled_back.verified)
        if self.not_approved:
            if self.staging:
                return "not_approved"
            if self.no_rollback_version:
                return "not_approved_not_rolled_back"
            return "not_approved_rolled_back" if restored else "incomplete"
        if self.snapshot_release and self.passed and (not self.staging or (self.promoted and self.promoted.promoted)):
            if self.released_ok:
                return "promoted"
            switched_back = self.released is not None and self.released.switched_back
            return "release_failed_switched_back" if switched_back and restored else "incomplete"
        if self.staging:
            if self.passed and self.promoted and self.promoted.promoted:
                return "promoted"
            if self.passed:
                return "promotion_failed_rolled_back" if restored else "incomplete"
            if self.captured is None:
                return "incomplete" if training != "not_run" else "training_not_run"
            return "rejected" if training == "succeeded" else f"training_{training}"
        if self.passed:
            return "promoted"
        if restored:
            return "rejected_rolled_back" if training == "succeeded" else f"training_{training}_rolled_back"
        if self.no_rollback_version and training == "succeeded":
            return "rejected_not_rolled_back"
        return "incomplete" if self.captured else "training_not_run"

    def ungated_exposure_seconds(self, now: float) -> float:
        """How long an endpoint-served production flow served a model that had not passed the gates.

        Staging promotion trains production only after the gates passed: 0. In place, production serves the
        challenger from the end of its training (Cognigy's clock) until the gates pass (decision time) or the
        restoring training ends (or now, when the restore is not verified). A flow no endpoint serves exposes
        nobody.
        """
        if self.staging or self.snapshot_release or not self.retrained or not self.captured.endpoints:  # type: ignore[union-attr]
            return 0.0  # snapshot: endpoints are only ever switched to a snapshot of a judged model
        if self.waited is None or self.waited.state != "succeeded":
            return 0.0
        start = float(self.waited.finished_at or now)
        if self.passed:
            end = float(self.evaluated.decided_at or now)  # type: ignore[union-attr]
        elif self.rolled_back and self.rolled_back.verified:
            end = float(self.rolled_back.restored_at or now)
        else:
            end = now
        return round(max(0.0, end - start), 3)
