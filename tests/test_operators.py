"""Unit tests of the task bodies' decisions before they touch Cognigy (plugins/cognigy_airflow/submit.py,
promote.py, rollback.py, evaluate.py, mlflow_sync.py): which task acts, which skips and says why, what each hands on.
No Cognigy and no Airflow run: the plan names a connection that does not exist, so a task that tried to reach
Cognigy would fail with a connection error instead of the asserted result. The same decisions on the emulator, end
to end: test_fault_matrix.py, test_staging.py, test_pipeline_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from cognigy_airflow.evaluate import evaluate
from cognigy_airflow.mlflow_sync import MlflowSyncOperator
from cognigy_airflow.promote import CognigyPromoteOperator
from cognigy_airflow.rollback import CognigyRollbackOperator
from cognigy_airflow.submit import CognigySubmitTrainingOperator
from include import settings
from include.records.audit import read
from include.results import Captured, Evaluated, Submitted, Waited
from tests.test_fault_matrix import TI, DagRun, StateStore

TARGET = {"project_id": "p1", "flow_id": "f1", "locale": "en-US", "model_id": "m1"}
CAPTURED = Captured(rollback_point_path="/nowhere/rollback_point.json", fingerprint="a" * 64)
SUBMITTED = Submitted(job_id="task-1", submitted_at=1000.0)
REJECTED = Evaluated(passed=False, training_state="succeeded", reason="failed: accuracy", decided_at=1.0)
PASSED = Evaluated(passed=True, training_state="succeeded", reason="all blocking gates passed", decided_at=1.0)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path))
    return tmp_path


def plan(promotion: str = "in_place") -> dict[str, Any]:
    return {"promotion": promotion, "conn_id": "no_such_connection", "run_attempt": "a1", "request_hash": "h"}


def context(task_id: str, **results: Any) -> dict[str, Any]:
    """A task's context whose XComs hold `results` (by task id), as Airflow's would."""
    xcoms = {name: value.to_xcom() for name, value in results.items()}
    ti = TI("cognigy_nlu_retrain", "manual__unit", task_id, xcoms=xcoms)
    return {"ti": ti, "dag_run": DagRun(), "params": {}, "task_state_store": StateStore()}


def events(state_dir: Path) -> list[str]:
    """The audit trail's events so far (the JSON-lines file `make run` uses, under the state folder)."""
    path = Path(settings.audit_store()[1])
    assert path.is_relative_to(state_dir)
    return [r["event"] for r in read(path)] if path.exists() else []


def test_submit_does_nothing_when_the_flow_is_unchanged(state_dir: Path) -> None:
    unchanged = CAPTURED.model_copy(update={"unchanged": True})
    op = CognigySubmitTrainingOperator(task_id="submit", target=TARGET, plan=plan(), captured=unchanged.to_xcom())
    with pytest.raises(AirflowSkipException, match="unchanged"):
        op.execute(context("submit", capture=unchanged))


@pytest.mark.parametrize(
    ("promotion", "evaluated", "why"),
    [
        ("in_place", PASSED, "in place"),
        ("staging", REJECTED, "rejected the challenger: production is not touched"),
    ],
)
def test_promote_touches_production_only_after_the_gates_passed_on_staging(
    state_dir: Path, promotion: str, evaluated: Evaluated, why: str
) -> None:
    op = CognigyPromoteOperator(task_id="promote", target=TARGET, plan=plan(promotion), evaluated=evaluated.to_xcom())
    with pytest.raises(AirflowSkipException, match=why):
        op.execute(context("promote", capture=CAPTURED, submit=SUBMITTED, evaluate=evaluated))


def test_promote_skips_when_nothing_was_retrained(state_dir: Path) -> None:
    op = CognigyPromoteOperator(task_id="promote", target=TARGET, plan=plan("staging"), evaluated=PASSED.to_xcom())
    with pytest.raises(AirflowSkipException, match="nothing was retrained"):
        op.execute(context("promote", evaluate=PASSED))  # no capture XCom: capture did not finish


@pytest.mark.parametrize(
    ("promotion", "evaluated", "why"),
    [
        ("in_place", PASSED, "the gates passed: the new model stays"),
        ("staging", REJECTED, "production was not touched"),
    ],
)
def test_rollback_is_skipped_with_the_reason_when_production_keeps_its_model(
    state_dir: Path, promotion: str, evaluated: Evaluated, why: str
) -> None:
    op = CognigyRollbackOperator(task_id="rollback", target=TARGET, plan=plan(promotion), promoted=None)
    with pytest.raises(AirflowSkipException, match=why):
        op.execute(context("rollback", capture=CAPTURED, submit=SUBMITTED, evaluate=evaluated))
    assert events(state_dir) == []


def test_rollback_after_a_failed_capture_records_that_nothing_changed(state_dir: Path) -> None:
    op = CognigyRollbackOperator(task_id="rollback", target=TARGET, plan=plan(), promoted=None)
    result = op.execute(context("rollback"))  # no XCom at all: capture failed, nothing ran after it
    assert result == {"verified": False, "needed": False, "fingerprint": None, "agreement": None, "restored_at": None}
    assert events(state_dir) == ["rollback_skipped"]


def test_evaluate_after_a_failed_training_rejects_without_scoring(state_dir: Path) -> None:
    failed = Waited(state="failed", job_id="task-1", reason="training error")
    out = evaluate(TARGET, plan(), failed.to_xcom(), **context("evaluate", capture=CAPTURED, submit=SUBMITTED))
    assert Evaluated.model_validate(out).passed is False
    assert out["reason"] == "training failed: training error" and out["training_state"] == "failed"
    assert events(state_dir) == ["validation_failed"]


def test_mlflow_sync_records_nothing_when_nothing_was_retrained(state_dir: Path) -> None:
    op = MlflowSyncOperator(task_id="mlflow_sync", target=TARGET, plan=plan(), rolled_back=None)
    with pytest.raises(AirflowSkipException, match="nothing to record"):
        op.execute(context("mlflow_sync"))
