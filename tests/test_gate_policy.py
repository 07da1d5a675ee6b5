"""Who may loosen the gates (issue 26, item 7): a deployment fixes the gate policy (Airflow Variable
`cognigy_gate_policy`, or the reviewed file named by $COGNIGY_GATE_POLICY_FILE); the trigger form (and a fleet
entry's overrides) may then only tighten it. A loosening request is refused by `validate` naming the field and the
policy's value; the plan's gates, the audit record and the MLflow tags carry the policy's sha256 and the tightening.

`validate` runs in process with the real Airflow Variable resolution (the policy is given as `AIRFLOW_VAR_*`, the
way a deployment can); only the Cognigy hook (it would read the connection) and the audit writer are replaced: no
Cognigy call happens before validation passes anyway.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from devtools.airflow_env import DEMO_CONF
from include.evaluation.config import NO_POLICY, GateConfig, GatePolicy, GatePolicyViolation, resolve_gates
from include.results import RetrainRecord

POLICY = {"precision_floor": 0.9, "recall_floor": 0.88, "bias_ceiling": 0.1, "allow_unevaluated": ["bias"]}
POLICY_SHA256 = hashlib.sha256(json.dumps(POLICY, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`validate(**conf)` in process: returns (validate's result, the audit records written). With
    `night=True`: the fleet DAG's `plan_night` instead (every fleet entry checked as its own request)."""
    from cognigy_airflow import fleet, validate

    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("COGNIGY_RETRAIN_STATE_URI", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_COGNIGY_GATE_POLICY", raising=False)
    monkeypatch.delenv("COGNIGY_GATE_POLICY_FILE", raising=False)
    config = SimpleNamespace(dialect="rest-v2", console_url=None, base_url="http://cognigy.invalid")
    for module in (validate, fleet):
        monkeypatch.setattr(module, "CognigyHook", lambda *a, **k: SimpleNamespace(get_config=lambda: config))
    monkeypatch.setattr(validate, "refuse_per_host_stores", lambda *a: None, raising=False)

    def call(night: bool = False, **conf: Any) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
        from cognigy_airflow.form import PARAMS

        audited: list[tuple[str, dict[str, Any]]] = []
        for module in (validate, fleet):
            monkeypatch.setattr(module, "audit", lambda context, event, *a, **fields: audited.append((event, fields)))
        params = {**{name: param.value for name, param in PARAMS.items()}, **DEMO_CONF, **conf}
        context = {
            "params": params, "dag": None, "ti": SimpleNamespace(dag_id="d", run_id="r", log=None),
            "dag_run": SimpleNamespace(run_type="manual", clear_number=0, triggering_user_name="tester"),
        }  # fmt: skip
        try:
            return (fleet.plan_night if night else validate.validate)(**context), audited
        except AirflowFailException as exc:
            audited.append(("raised", {"message": str(exc)}))
            return None, audited

    return call


def set_policy(monkeypatch: pytest.MonkeyPatch, policy: dict[str, Any]) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_COGNIGY_GATE_POLICY", json.dumps(policy))


def only_plan(result: dict[str, Any]) -> dict[str, Any]:
    """The plan of the run's one flow/locale (validate returns {"target", "plan"})."""
    return result["plan"]


def test_without_a_policy_the_form_decides_as_before(run) -> None:
    result, audited = run(precision_floor=0.5, allow_unevaluated_gates=["bias"])
    assert result is not None, audited
    gates = GateConfig(**only_plan(result)["gates"])  # what `evaluate` rebuilds from the plan
    assert (gates.precision_floor, gates.allow_unevaluated) == (0.5, ["bias"])
    assert gates.gate_policy["summary"] == f"gate policy: {NO_POLICY}" == "gate policy: form (no deployment policy)"
    # the thresholds' hash is what it was before policies existed (provenance is not a threshold)
    assert only_plan(result)["gates_hash"] == GateConfig(precision_floor=0.5, allow_unevaluated=["bias"]).fingerprint()
    (initiated,) = [fields for event, fields in audited if event == "retrain_initiated"]
    assert initiated["gate_policy"]["source"] == NO_POLICY


def test_a_form_that_loosens_the_policy_is_refused_naming_field_and_policy_value(run, monkeypatch) -> None:
    set_policy(monkeypatch, POLICY)
    result, audited = run(precision_floor=0.5, bias_ceiling=0.3, allow_unevaluated_gates=["bias", "leakage"])
    assert result is None
    message = audited[-1][1]["message"]
    (rejected,) = [fields for event, fields in audited if event == "request_rejected"]
    errors = rejected["errors"]
    assert len(errors) == 3, errors
    assert errors[0].startswith("gates.precision_floor: 0.5 is looser than the deployment's gate policy, which ")
    assert "requires at least 0.9 (Variable cognigy_gate_policy, sha256 " + POLICY_SHA256[:12] in errors[0]
    assert errors[1].startswith("gates.bias_ceiling: 0.3 is looser") and "at most 0.1" in errors[1]
    assert errors[2].startswith("gates.allow_unevaluated_gates: ['leakage'] may not be unevaluated")
    assert "allows only ['bias']" in errors[2]
    assert all(e in message for e in errors)
    assert not [event for event, _ in audited if event == "retrain_initiated"]  # nothing went further


def test_the_form_may_tighten_and_the_plan_audit_and_mlflow_show_it(run, monkeypatch) -> None:
    set_policy(monkeypatch, POLICY)
    result, audited = run(precision_floor=0.95, allow_unevaluated_gates=[], block_on_feedback_findings=True)
    assert result is not None, audited
    plan = only_plan(result)
    gates = GateConfig(**plan["gates"])
    assert (gates.precision_floor, gates.recall_floor, gates.bias_ceiling) == (0.95, 0.88, 0.1)  # policy + tighter
    assert gates.allow_unevaluated == ["bias"]  # an empty form field keeps the policy's list
    assert gates.block_on_feedback_findings is True
    policy = gates.gate_policy
    assert policy["sha256"] == POLICY_SHA256 and policy["source"] == "Variable cognigy_gate_policy"
    assert policy["tightened"] == {
        "precision_floor": {"policy": 0.9, "run": 0.95, "by": "form"},
        "block_on_feedback_findings": {"policy": False, "run": True, "by": "form"},
    }
    assert policy["summary"] == (
        f"gate policy: Variable cognigy_gate_policy, sha256 {POLICY_SHA256[:12]}…; tightened: "
        "block_on_feedback_findings False→True (form), precision_floor 0.9→0.95 (form)"
    )
    (initiated,) = [fields for event, fields in audited if event == "retrain_initiated"]
    assert initiated["gate_policy"] == policy and initiated["gates"]["gate_policy"] == policy

    from cognigy_airflow import mlflow_sync

    target = result["target"]
    context = {"ti": SimpleNamespace(dag_id="d", run_id="r", map_index=-1)}
    payload = mlflow_sync.build_payload(context, RetrainRecord(plan=plan, target=target))
    assert payload.tags["gate_policy_sha256"] == POLICY_SHA256
    assert payload.tags["gate_policy"] == policy["summary"]
    assert payload.tags["gates_hash"] == gates.fingerprint()


def test_the_strict_profile_only_tightens_a_policy(run, monkeypatch) -> None:
    set_policy(monkeypatch, {"precision_floor": 0.97, "pr_balance_tolerance": 0.1})
    result, audited = run(gate_profile="strict")
    assert result is not None, audited
    gates = GateConfig(**only_plan(result)["gates"])
    assert gates.precision_floor == 0.97  # strict's 0.95 would loosen: the policy's stays
    assert (gates.recall_floor, gates.pr_balance_tolerance) == (0.95, 0.05)  # strict's are tighter: applied
    assert set(gates.gate_policy["tightened"]) == {"recall_floor", "pr_balance_tolerance"}


def test_a_reviewed_file_is_a_policy_and_two_policies_are_refused(run, monkeypatch, tmp_path) -> None:
    policy_file = tmp_path / "gate-policy.json"
    policy_file.write_text(json.dumps({"note": "reviewed 2026-12", "profile": "strict", "max_accuracy_drop": 0.0}))
    monkeypatch.setenv("COGNIGY_GATE_POLICY_FILE", str(policy_file))
    result, audited = run(max_accuracy_drop=0.02)
    assert result is None
    assert f"gates.max_accuracy_drop: 0.02 is looser than the deployment's gate policy, which requires at most 0.0 " \
           f"(file {policy_file}, sha256 " in audited[-1][1]["message"]  # fmt: skip
    result, audited = run()
    gates = GateConfig(**only_plan(result)["gates"])
    assert (gates.precision_floor, gates.max_accuracy_drop) == (0.95, 0.0)
    assert gates.gate_policy["source"] == f"file {policy_file}"

    set_policy(monkeypatch, POLICY)
    result, audited = run()
    assert result is None and "two gate policies are set" in audited[-1][1]["message"]


def test_an_unusable_policy_refuses_every_run(run, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_COGNIGY_GATE_POLICY", '{"precision_floor": 2}')
    result, audited = run()
    assert result is None
    assert (
        "gates.gate_policy: the deployment's gate policy (Variable cognigy_gate_policy) is unusable"
        in (audited[-1][1]["message"])
    )
    monkeypatch.setenv("AIRFLOW_VAR_COGNIGY_GATE_POLICY", '{"precision_flor": 0.9}')
    assert "unknown keys ['precision_flor']" in run()[1][-1][1]["message"]


def test_fleet_overrides_may_not_loosen_the_policy_either(run, monkeypatch) -> None:
    """The fleet DAG's `plan_night` checks every entry as its own request before anything is triggered."""
    from emulator import seed

    entry = {"projectId": seed.PROJECT_ID, "flowId": seed.FLOW_ID, "locales": ["en-US"], "name": "support EN",
             "modelId": seed.MODEL_IDS["en-US"], "overrides": {"recall_floor": 0.7}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_VAR_COGNIGY_FLEET", json.dumps([entry]))
    set_policy(monkeypatch, POLICY)
    result, audited = run(night=True)
    assert result is None
    message = audited[-1][1]["message"]
    assert "nothing was triggered" in message
    assert "fleet[0] (support EN): gates.recall_floor: 0.7 is looser than the deployment's gate policy, which " \
           "requires at least 0.88" in message  # fmt: skip
    (rejected,) = [fields for event, fields in audited if event == "request_rejected"]
    assert rejected["fleet"] is True

    entry["overrides"] = {"recall_floor": 0.9}  # tighter than the policy: the night goes ahead
    monkeypatch.setenv("AIRFLOW_VAR_COGNIGY_FLEET", json.dumps([entry]))
    runs, audited = run(night=True)
    assert runs is not None, audited
    (one,) = runs
    assert one["conf"]["recall_floor"] == 0.9 and one["conf"]["locales"] == ["en-US"]


def test_fields_without_a_direction_are_fixed_by_the_policy() -> None:
    policy = GatePolicy.parse(json.dumps({"seed": 3}), "test")
    with pytest.raises(GatePolicyViolation, match=r"seed: 4 differs from the deployment's gate policy \(3, test"):
        resolve_gates("default", {"seed": 4}, policy)
    assert resolve_gates("default", {"seed": 3}, policy).gate_policy["tightened"] == {}
