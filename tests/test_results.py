"""The typed task results and the one place that decides a retrain's outcome (include/results.py), and how a task
reads its target's earlier results from XCom (plugins/cognigy_airflow/record.py). Unit tests: no Cognigy, no
Airflow run; the end-to-end rows (test_fault_matrix, test_staging, test_pipeline_e2e) show the same decisions on
the emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from cognigy_airflow.record import STAGES, retrain_record
from include.results import (
    Captured,
    Evaluated,
    Promoted,
    RetrainRecord,
    RolledBack,
    Submitted,
    Waited,
    meaning,
    run_fails,
)

TARGET = {"project_id": "p", "flow_id": "f", "locale": "en-US", "model_id": "m"}
CAPTURED = Captured(rollback_point_path="/state/rollback_point.json", fingerprint="a" * 64, endpoints=["web"])
SUBMITTED = Submitted(job_id="task-1", submitted_at=1000.0, fingerprint="b" * 64)
SUCCEEDED = Waited(state="succeeded", job_id="task-1", finished_at=1100.0)
PASSED = Evaluated(passed=True, training_state="succeeded", reason="all blocking gates passed", decided_at=1130.0)
REJECTED = Evaluated(passed=False, training_state="succeeded", reason="failed: accuracy", decided_at=1130.0)
RESTORED = RolledBack(verified=True, restored_at=1190.0)


def record(promotion: str = "in_place", **stages: Any) -> RetrainRecord:
    return RetrainRecord(plan={"promotion": promotion}, target=TARGET, **stages)


# (promotion, stages, outcome, restore needed, run fails) — every row a user can end in
CASES = [
    ("in_place", {}, "training_not_run", False, True),
    ("in_place", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=PASSED), "promoted", False,
     False),
    ("in_place", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=REJECTED,
                      rolled_back=RESTORED), "rejected_rolled_back", True, False),
    ("in_place", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=REJECTED), "incomplete", True,
     True),
    ("in_place", dict(captured=CAPTURED, submitted=SUBMITTED, waited=Waited(state="failed", job_id="task-1"),
                      rolled_back=RESTORED), "training_failed_rolled_back", True, True),
    ("staging", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=PASSED,
                     promoted=Promoted(promoted=True, verified=True, job_id="task-2")), "promoted", False, False),
    ("staging", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=REJECTED), "rejected", False,
     False),
    ("staging", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=PASSED,
                     promoted=Promoted(promoted=False, verified=False, needs_rollback=True, reason="agreement 0.6"),
                     rolled_back=RESTORED), "promotion_failed_rolled_back", True, True),
    ("staging", dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=PASSED), "incomplete", True,
     True),
    ("staging", dict(captured=CAPTURED, submitted=SUBMITTED, waited=Waited(state="deadline", job_id="task-1")),
     "training_deadline", False, True),
    ("in_place", dict(captured=CAPTURED.model_copy(update={"unchanged": True})), "unchanged", False, False),
]  # fmt: skip


def test_a_rejected_version_without_a_rollback_version_is_a_verdict_not_a_failure() -> None:
    """training-jobs, bad metrics, no rollbackTriggerVersionId: nothing is rolled back and the run stays green."""
    stages = dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED, evaluated=REJECTED)
    plan = {"promotion": "in_place", "dialect": "training-jobs", "request": {"rollbackTriggerVersionId": None}}
    done = RetrainRecord(plan=plan, target=TARGET, **stages)
    assert done.outcome() == "rejected_not_rolled_back" and not run_fails(done.outcome())
    assert done.restore_needed()[0] is False
    with_version = {**plan, "request": {"rollbackTriggerVersionId": "v2.4.0"}}
    assert RetrainRecord(plan=with_version, target=TARGET, **stages).restore_needed()[0] is True


@pytest.mark.parametrize(("promotion", "stages", "outcome", "restore", "fails"), CASES)
def test_one_place_decides_outcome_restore_and_verdict(promotion, stages, outcome, restore, fails) -> None:
    done = record(promotion, **stages)
    assert done.outcome() == outcome
    assert done.restore_needed()[0] is restore
    assert run_fails(outcome) is fails
    assert meaning(outcome)  # every outcome has words for the audit record


def test_ungated_exposure_counts_only_what_customers_could_meet() -> None:
    in_place = dict(captured=CAPTURED, submitted=SUBMITTED, waited=SUCCEEDED)
    # in place, passed: from the end of training (1100) to the decision (1130)
    assert record(**in_place, evaluated=PASSED).ungated_exposure_seconds(now=5000) == 30.0
    # in place, rejected and restored: until the restoring training ended (1190)
    assert record(**in_place, evaluated=REJECTED, rolled_back=RESTORED).ungated_exposure_seconds(now=5000) == 90.0
    # not restored: it still serves, so until now
    assert record(**in_place, evaluated=REJECTED).ungated_exposure_seconds(now=1500) == 400.0
    # no endpoint serves the flow: nobody was exposed
    unserved = CAPTURED.model_copy(update={"endpoints": []})
    assert record(**{**in_place, "captured": unserved}, evaluated=REJECTED).ungated_exposure_seconds(now=1500) == 0
    # staging trains production only after the gates passed
    assert record("staging", **in_place, evaluated=REJECTED).ungated_exposure_seconds(now=1500) == 0


def test_a_result_with_a_misspelt_or_missing_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="verifed"):
        RolledBack.model_validate({"verified": True, "verifed": True})
    with pytest.raises(ValidationError, match="job_id"):
        Waited.model_validate({"state": "succeeded"})


# --- reading a target's earlier results from XCom -------------------------------------------------------
@dataclass
class FakeTI:
    """Only what `retrain_record` uses of a task instance: its id, map index and `xcom_pull`."""

    task_id: str
    map_index: int
    xcoms: dict[tuple[str, int], Any]
    pulled: list[str] = field(default_factory=list)

    def xcom_pull(self, task_ids: str, map_indexes: int) -> Any:
        self.pulled.append(task_ids)
        return self.xcoms.get((task_ids, map_indexes))


def test_the_record_reads_this_runs_earlier_results_only() -> None:
    """One run retrains one flow/locale: the tasks are plain (no `retrain.` group), not mapped (map index -1)."""
    xcoms = {
        ("capture", -1): CAPTURED.to_xcom(),
        ("submit", -1): SUBMITTED.to_xcom(),
        ("rollback", -1): RESTORED.to_xcom(),  # a later stage (of an earlier try): not read
    }
    ti = FakeTI("evaluate", -1, xcoms)
    got = retrain_record({"ti": ti}, TARGET, {"promotion": "in_place"}, waited=SUCCEEDED.to_xcom())

    assert got.captured == CAPTURED and got.submitted == SUBMITTED and got.waited == SUCCEEDED
    assert got.evaluated is None and got.rolled_back is None
    assert ti.pulled == ["capture", "submit"]  # handed in: waited; from evaluate on: not run yet


def test_the_audit_task_sees_every_stage_and_a_stage_that_did_not_run_is_none() -> None:
    ti = FakeTI("audit", -1, {("capture", -1): CAPTURED.to_xcom()})
    got = retrain_record({"ti": ti}, TARGET, {"promotion": "staging"}, synced=None)
    assert ti.pulled == [task_id for name, (task_id, _) in STAGES.items() if name != "synced"]
    assert got.captured == CAPTURED and got.outcome() == "training_not_run"
