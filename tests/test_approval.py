"""Approval before a release (issue 24 item 3), unit tests: when a passed challenger needs a person
(include/evaluation/approval.py), what a rejection means for the record's branches and outcome (include/results.py),
and the `approve` operator's decision step with its audit and typed result (plugins/cognigy_airflow/approval.py).
The real Airflow API drives approve, reject and timeout in tests/test_approval_flow.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskAwaitingInput
from pydantic import ValidationError

from include.evaluation.approval import ApprovalSettings, borderline_findings, needs_approval
from include.results import (
    Approved,
    Captured,
    Evaluated,
    RetrainRecord,
    RolledBack,
    Submitted,
    Waited,
    meaning,
    run_fails,
)

TARGET = {"project_id": "p", "flow_id": "f", "locale": "en-US", "model_id": "m", "name": "demo bot"}
CAPTURED = Captured(rollback_point_path="/state/rollback_point.json", fingerprint="a" * 64, endpoints=["web"])
SUBMITTED = Submitted(job_id="task-1", submitted_at=1000.0)
SUCCEEDED = Waited(state="succeeded", job_id="task-1", finished_at=1100.0)
GATES = {"precision_floor": 0.80, "recall_floor": 0.80, "pr_balance_tolerance": 0.05, "bias_ceiling": 0.15,
         "max_leakage_share": 0.01, "max_accuracy_drop": 0.01}  # fmt: skip
CLEAR = {"passed": True, "failed_gates": [], "warning_gates": [], "not_evaluated_gates": {}, "accuracy": 0.95,
         "macro_precision": 0.95, "macro_recall": 0.94, "macro_f1": 0.945, "bias_score": 0.03, "leaked_share": 0.0,
         "accuracy_delta": 0.02, "macro_f1_delta": 0.01}  # fmt: skip


def evaluated(passed: bool = True, **summary: Any) -> Evaluated:
    return Evaluated(passed=passed, training_state="succeeded", reason="all blocking gates passed" if passed else
                     "failed: bias", summary={**CLEAR, **summary}, decided_at=1130.0)  # fmt: skip


def record(promotion: str = "in_place", ev: Evaluated | None = None, **stages: Any) -> RetrainRecord:
    return RetrainRecord(plan={"promotion": promotion, "gates": GATES}, target=TARGET, captured=CAPTURED,
                         submitted=SUBMITTED, waited=SUCCEEDED, evaluated=ev or evaluated(), **stages)  # fmt: skip


BORDERLINE = ApprovalSettings(mode="borderline")


# --- settings ----------------------------------------------------------------------------------------------------
def test_settings_from_flat_params_with_defaults() -> None:
    assert ApprovalSettings.from_params({}) == ApprovalSettings(mode="never", margin=0.02, timeout_minutes=720)
    assert ApprovalSettings.from_params(None).mode == "never"
    got = ApprovalSettings.from_params({"approval": "always", "approval_margin": 0.05, "approval_timeout_minutes": 3})
    assert (got.mode, got.margin, got.timeout_minutes) == ("always", 0.05, 3)
    assert ApprovalSettings.from_params({"approval": None, "approval_margin": ""}) == ApprovalSettings()
    assert ApprovalSettings.from_params(got.to_params()) == got


@pytest.mark.parametrize("params", [{"approval": "sometimes"}, {"approval_margin": -0.1},
                                    {"approval_timeout_minutes": 0}])  # fmt: skip
def test_settings_refuse_wrong_values(params: dict) -> None:
    with pytest.raises(ValidationError):
        ApprovalSettings.from_params(params)


# --- when a person is asked --------------------------------------------------------------------------------------
def test_never_asks_nobody_and_always_asks_for_every_passed_challenger() -> None:
    assert needs_approval(record(), ApprovalSettings())[0] is False
    needed, why = needs_approval(record(), ApprovalSettings(mode="always"))
    assert needed and "always" in why


def test_a_rejected_or_unchanged_challenger_never_waits() -> None:
    rejected = record(ev=evaluated(passed=False, failed_gates=["bias"]))
    for mode in ("always", "borderline"):
        assert needs_approval(rejected, ApprovalSettings(mode=mode)) == (
            False, "nothing to release: the gates did not pass (or nothing was retrained)")  # fmt: skip
    unchanged = record().model_copy(update={"captured": CAPTURED.model_copy(update={"unchanged": True})})
    assert needs_approval(unchanged, ApprovalSettings(mode="always"))[0] is False


def test_borderline_clear_pass_does_not_wait() -> None:
    needed, why = needs_approval(record(), BORDERLINE)
    assert not needed and "not borderline" in why


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        ({"macro_recall": 0.81}, "macro recall 0.81 is within 0.02 of its threshold 0.8"),
        ({"macro_precision": 0.80}, "macro precision 0.8 is within"),
        ({"macro_precision": 0.90, "macro_recall": 0.86}, "|precision − recall| 0.04 is within"),
        ({"bias_score": 0.14}, "bias: bias score 0.14 is within"),
        ({"leaked_share": 0.005}, "leakage: leaked share 0.005 is within"),
        ({"accuracy_delta": -0.005}, "accuracy change vs the champion -0.005 is within"),
        ({"warning_gates": ["training_balance"]}, "warning: the non-blocking gate training_balance failed"),
    ],
)
def test_borderline_names_what_passed_only_just(summary: dict, expected: str) -> None:
    needed, why = needs_approval(record(ev=evaluated(**summary)), BORDERLINE)
    assert needed and why.startswith("borderline: ") and expected in why, why


def test_values_at_their_best_or_unmeasured_are_not_borderline() -> None:
    # leaked share 0 with a 0.01 ceiling, recall 1.0 with a floor of 0.99, an unmeasured (allowed) bias gate
    summary = {**CLEAR, "leaked_share": 0.0, "macro_precision": 1.0, "macro_recall": 1.0, "bias_score": 0.149,
               "not_evaluated_gates": {"bias": "not evaluated: no slices"}}  # fmt: skip
    assert borderline_findings(summary, {**GATES, "precision_floor": 0.99, "recall_floor": 0.99}, 0.02) == []
    assert borderline_findings({**CLEAR, "accuracy_delta": 0.0}, GATES, 0.02) == []  # as good as the champion


def test_the_margin_is_the_users() -> None:
    ev = evaluated(macro_recall=0.84)
    assert needs_approval(record(ev=ev), BORDERLINE)[0] is False
    assert needs_approval(record(ev=ev), ApprovalSettings(mode="borderline", margin=0.05))[0] is True


def test_platform_reported_gates_are_judged_on_their_floors() -> None:
    summary = {"gate_source": "platform-reported", "macro_precision": 0.96, "macro_recall": 0.955,
               "bias_score": 0.02, "accuracy_delta": -0.5, "failed_gates": []}  # fmt: skip
    gates = {**GATES, "precision_floor": 0.95, "recall_floor": 0.95}
    found = borderline_findings(summary, gates, 0.02)
    assert len(found) == 2 and all("precision_recall_balance" in f for f in found), found  # not the spec's delta


def test_the_full_report_adds_coverage_and_the_per_intent_floors() -> None:
    report = {
        "gates": [{"name": "scoring_coverage", "values": {"unscored_share": 0.04}}],
        "metrics": {"per_intent": {"a": {"support": 10, "recall": 0.61, "f1": 0.9},
                                   "b": {"support": 2, "recall": 0.1, "f1": 0.1}}},  # b: too small to judge
    }  # fmt: skip
    found = borderline_findings(CLEAR, GATES, 0.02, report)
    assert any("unscored share 0.04" in f for f in found)
    assert any("lowest intent recall (a) 0.61" in f for f in found)
    assert not any("(b)" in f for f in found)


# --- what a rejection means --------------------------------------------------------------------------------------
APPROVED = Approved(approved=True, decision="approved", responded_by={"id": "1", "name": "admin"})
REJECTED = Approved(approved=False, decision="rejected", responded_by={"id": "1", "name": "admin"})
TIMED_OUT = Approved(approved=False, decision="timed_out", timed_out=True)


def test_approved_goes_on_as_before() -> None:
    for promotion, path in (("staging", "promote"), ("in_place", "release")):
        done = record(promotion, approved=APPROVED)
        assert done.accept_path() == path and not done.not_approved


def test_rejected_in_staging_touches_nothing_and_ends_green() -> None:
    for answer in (REJECTED, TIMED_OUT):
        done = record("staging", approved=answer)
        assert done.restore_needed()[0] is False and "not approved" in done.restore_needed()[1]
        assert done.settle_path() == "mlflow_sync"
        assert done.outcome() == "not_approved" and not run_fails("not_approved")
    assert "production was not touched" in meaning("not_approved")


def test_rejected_in_place_restores_production() -> None:
    done = record("in_place", approved=TIMED_OUT)
    assert done.restore_needed() == (True, "the release was not approved (timed out): production goes back to its "
                                           "rollback point")  # fmt: skip
    assert done.settle_path() == "rollback"
    assert done.outcome() == "incomplete"  # not restored yet
    restored = done.model_copy(update={"rolled_back": RolledBack(verified=True, restored_at=1200.0)})
    assert restored.outcome() == "not_approved_rolled_back" and not run_fails(restored.outcome())


def test_training_jobs_without_a_rollback_version_rolls_nothing_back() -> None:
    done = RetrainRecord(plan={"promotion": "in_place", "dialect": "training-jobs", "request": {}}, target=TARGET,
                         captured=CAPTURED, waited=SUCCEEDED, evaluated=evaluated(), approved=REJECTED)  # fmt: skip
    assert done.settle_path() == "mlflow_sync" and done.outcome() == "not_approved_not_rolled_back"


def test_the_record_reads_the_approve_task_before_promote() -> None:
    from cognigy_airflow.record import STAGES

    names = list(STAGES)
    assert STAGES["approved"] == ("approve", Approved)
    assert names.index("evaluated") < names.index("approved") < names.index("promoted")


# --- the operator's decision step ----------------------------------------------------------------------------------
class FakeTI:
    dag_id, run_id, task_id, map_index, try_number, id = "cognigy_nlu_retrain", "r1", "approve", -1, 1, "ti-uuid"

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture
def operator(monkeypatch: pytest.MonkeyPatch) -> Any:
    from cognigy_airflow import approval

    calls: dict[str, Any] = {"audit": [], "branch": [], "sent": []}
    monkeypatch.setattr(approval, "retrain_record", lambda context, target, plan, **known: record(plan["promotion"]))
    monkeypatch.setattr(approval, "audit", lambda context, event, plan, target, **f: calls["audit"].append((event, f)))
    monkeypatch.setattr(approval.notify, "send", lambda context, *message: calls["sent"].append(message))
    op = approval.CognigyApprovalOperator(target=TARGET, plan={"promotion": "staging", "gates": GATES}, evaluated={})
    monkeypatch.setattr(op, "do_branch", lambda context, branch: calls["branch"].append(branch) or branch)
    op.calls = calls
    return op


def respond(op: Any, **event: Any) -> tuple[dict, Any]:
    ti = FakeTI()
    context = {"ti": ti, "task_instance": ti, "params": {"approval": "always"}}
    base = {"chosen_options": ["Reject"], "params_input": {}, "responded_at": datetime(2026, 12, 5, 13, tzinfo=UTC),
            "responded_by_user": {"id": "7", "name": "alice"}}  # fmt: skip
    return op.execute_complete(context, {**base, **event}), ti


def test_release_follows_the_accept_path_and_names_the_approver(operator: Any) -> None:
    result, ti = respond(operator, chosen_options=["Release"])
    assert operator.calls["branch"] == ["promote"]
    assert result == ti.pushed["return_value"]
    approved = Approved.model_validate(result)
    assert approved.approved and approved.decision == "approved" and approved.branch == "promote"
    assert approved.responded_by == {"id": "7", "name": "alice"}
    assert approved.responded_at == "2026-12-05T13:00:00+00:00"
    event, fields = operator.calls["audit"][-1]
    assert event == "approval_decided" and fields["responded_by_name"] == "alice" and fields["timed_out"] is False
    assert "always" in fields["reason"]


def test_reject_and_timeout_settle(operator: Any) -> None:
    result, _ = respond(operator)
    assert operator.calls["branch"] == ["mlflow_sync"] and Approved.model_validate(result).decision == "rejected"
    result, _ = respond(operator, timedout=True, responded_by_user=None)
    approved = Approved.model_validate(result)
    assert (approved.decision, approved.timed_out, approved.responded_by) == ("timed_out", True, None)
    assert operator.calls["audit"][-1][1]["timed_out"] is True
    # the provider's error event (a request without defaults) is a timeout too, never a release
    result, _ = respond(operator, error="timeout", error_type="timeout")
    assert Approved.model_validate(result).decision == "timed_out" and operator.calls["branch"][-1] == "mlflow_sync"


def test_the_request_shows_the_gate_report_and_tells_the_approvers(operator: Any, monkeypatch: Any) -> None:
    from airflow.providers.standard.operators import hitl

    written: dict[str, Any] = {}
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kwargs: written.update(kwargs))
    ti = FakeTI()
    context = {"ti": ti, "task_instance": ti, "params": {"approval": "always", "approval_timeout_minutes": 5}}
    with pytest.raises(TaskAwaitingInput) as parked:  # the task waits, holding no worker slot
        operator.execute(context)
    assert parked.value.timeout.total_seconds() == 300 and parked.value.method_name == "execute_complete"
    assert written["subject"] == "[cognigy] approve the release of demo bot en-US?"
    assert written["options"] == ["Release", "Reject"] and written["defaults"] == ["Reject"]
    body = written["body"]
    for text in ("**Locale**: en-US", "| macro recall | 0.94 |", "approval=always", "counts as **Reject**",
                 "production was never touched"):  # fmt: skip
        assert text in body, text
    assert operator.calls["audit"][0][0] == "approval_requested"
    assert len(operator.calls["sent"]) == 1 and operator.calls["sent"][0][0] == written["subject"]


def test_the_settings_come_from_the_plan_else_the_params() -> None:
    from cognigy_airflow.approval import approval_settings

    plan = {"approval": {"approval": "borderline", "approval_timeout_minutes": 5}}
    assert approval_settings(plan, {"approval": "always"}) == ApprovalSettings(mode="borderline", timeout_minutes=5)
    assert approval_settings({}, {"approval": "always"}).mode == "always"
    assert approval_settings(None, None) == ApprovalSettings()


def test_mlflow_tags_name_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from cognigy_airflow import mlflow_sync

    monkeypatch.setattr(mlflow_sync, "json_params", lambda plan: {})  # the request's params: not this test's topic

    plan = {"promotion": "staging", "gates": GATES, "request_path": "/state/request.json", "request_hash": "h",
            "retrain_trigger": "manual", "request": {}}  # fmt: skip
    context = {"ti": SimpleNamespace(dag_id="d", run_id="r", map_index=-1)}
    when = "2026-12-05T13:00:00+00:00"
    done = RetrainRecord(plan=plan, target=TARGET, approved=REJECTED.model_copy(update={"responded_at": when}))
    tags = mlflow_sync.build_payload(context, done).tags
    assert (tags["approval_decision"], tags["approval_by"], tags["approval_at"]) == ("rejected", "admin", when)
    tags = mlflow_sync.build_payload(context, RetrainRecord(plan=plan, target=TARGET, approved=TIMED_OUT)).tags
    assert (tags["approval_decision"], tags["approval_by"], tags["approval_at"]) == ("timed_out", "", "")
    assert "approval_decision" not in mlflow_sync.build_payload(context, RetrainRecord(plan=plan, target=TARGET)).tags
