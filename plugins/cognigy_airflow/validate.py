"""The `validate` task: the trigger form's params (or a fleet entry's request) checked and turned into the plan
every later task follows, before anything is sent anywhere."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowFailException
from cognigy_provider.hooks.cognigy import CognigyHook

from cognigy_airflow.auditing import audit, refuse_per_host_stores, retrain_trigger
from cognigy_airflow.data_files import freeze_request_data
from cognigy_airflow.record import plan_reference
from cognigy_airflow.run_files import run_folder
from include.cognigy import poll_policy, releases
from include.data import dataset
from include.records.redaction import redact_text
from include.request.retrain_request import RequestInvalid, parse_request
from include.state import state_store

APPROVAL_FIELDS = ("approval", "approval_margin", "approval_timeout_minutes")  # include.evaluation.approval
GATE_PARAMS = (
    "precision_floor", "recall_floor", "pr_balance_tolerance", "per_intent_recall_floor", "bias_ceiling",
    "max_accuracy_drop", "significance_alpha", "block_on_feedback_findings",
)  # fmt: skip


def request_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The trigger form's flat params -> the retraining request (the specification's field names)."""
    source = params.get("training_data_source") or "flow"
    matrix = params.get("training_data_slice_matrix") or {}
    if not matrix and source == "demo":
        locale = (params.get("locales") or ["en-US"])[0]
        try:
            intents = dataset.intents(locale)
        except ValueError:
            intents = []
        matrix = {name: int(params["samples_per_intent"]) for name in intents}
    held_uri = (params.get("held_out_uri") or "").strip()
    promotion = params.get("promotion") or "staging"
    return {
        "modelId": params.get("model_id"),
        "trainingDataSliceMatrix": matrix,
        "convergenceThreshold": params.get("convergence_threshold"),
        "computeConstraints": {
            "maxGpuMemory": params.get("max_gpu_memory_mb"),
            "maxCpuCores": params.get("max_cpu_cores"),
            "timeoutSeconds": params.get("timeout_seconds"),
        },
        "maxDatasetSize": params.get("max_dataset_size"),
        "rollbackTriggerVersionId": params.get("rollback_trigger_version_id") or None,
        "projectId": params.get("project_id"),
        "flowId": params.get("flow_id"),
        "locales": params.get("locales"),
        "mode": params.get("mode"),
        "trainingData": {"source": source, "uri": (params.get("training_data_uri") or "").strip() or None},
        "heldOut": {
            "source": "demo" if held_uri == "demo" else "uri",
            "uri": None if held_uri in ("", "demo") else held_uri,
            "perIntent": params.get("held_out_per_intent"),
            "threshold": params.get("score_threshold"),
        },
        "promotion": {
            "mode": promotion,
            "stagingFlowId": (params.get("staging_flow_id") or None) if promotion == "staging" else None,
            "stagingProjectId": (params.get("staging_project_id") or None) if promotion == "staging" else None,
        },
        "retrainUnchanged": bool(params.get("retrain_unchanged")),
    }


def gate_config(params: dict[str, Any]) -> Any:
    """The run's gates: the named profile (default: the specification's thresholds), with every form/fleet
    threshold that was filled in on top (empty: the profile's), and the gates allowed to be unevaluated.
    With a deployment gate policy (Variable `cognigy_gate_policy` or the file $COGNIGY_GATE_POLICY_FILE) the form
    may only tighten it: `GatePolicyViolation` names each field that would loosen it."""
    from include.evaluation.config import GATE_POLICY_VARIABLE, GateConfig, GatePolicy, resolve_gates  # task time

    defaults = GateConfig()
    overrides = {
        k: params[k]
        for k in GATE_PARAMS
        if params.get(k) is not None and (not isinstance(params[k], bool) or params[k] != getattr(defaults, k))
    }
    if params.get("allow_unevaluated_gates"):  # empty: the profile's (or the policy's) list
        overrides["allow_unevaluated"] = list(params["allow_unevaluated_gates"])
    policy = GatePolicy.deployment(Variable.get(GATE_POLICY_VARIABLE, default=None))
    return resolve_gates(params.get("gate_profile") or "default", overrides, policy)


def validate(**context: Any) -> dict[str, Any]:
    """Validate this run's request before anything is sent anywhere; returns ``{"target", "plan"}``: the one
    flow/locale this run retrains and the plan every later task follows.

    One run retrains one flow and locale. A fleet night (DAG `cognigy_nlu_fleet`) triggers one run per entry and
    locale, with the entry's request in the conf and the night in the `fleet` param.
    """
    params = dict(context["params"])
    refuse_per_host_stores(params["cognigy_conn_id"])  # remote state needs a shared audit trail and rate budget
    config = CognigyHook(params["cognigy_conn_id"]).get_config()
    night = params.get("fleet") or {}
    plan, request, errors = request_plan(params, config, context, run_attempt(context))
    if request is not None and len(request.locales) != 1:
        errors.append(
            f"locales: one run retrains one locale, got {len(request.locales)}; list several locales in a fleet "
            "entry (Variable cognigy_fleet) and trigger the DAG cognigy_nlu_fleet"
        )
    if errors:
        # The raw params' hash identifies what was refused (secrets never travel in params).
        raw = json.dumps(dict(context["params"]), sort_keys=True, separators=(",", ":"), default=str)
        audit(
            context,
            "request_rejected",
            {"request_hash": hashlib.sha256(raw.encode()).hexdigest()},
            None,
            errors=errors,
            fleet=bool(night),
            fleet_source=night.get("source"),
        )
        raise AirflowFailException("retraining request is invalid:\n" + "\n".join(f"  - {e}" for e in errors))

    for warning in plan["warnings"]:
        context["ti"].log.warning(warning) if hasattr(context["ti"], "log") else None
    request_file = run_folder(context, plan, "_request") / f"request-{request.sha256[:16]}.json"
    state_store.write_text(request_file, request.canonical_json())
    plan["request_path"] = str(request_file)
    plan["fleet"] = night or None
    (target,) = request.targets()
    audit(
        context,
        "retrain_initiated",
        plan,
        None,
        targets=[target.key],
        dialect=config.dialect,
        warnings=plan["warnings"],
        dry_run=plan["dry_run"],
        promotion=plan["promotion"],
        gates=plan["gates"],
        gates_hash=plan["gates_hash"],
        gate_policy=plan["gates"].get("gate_policy"),  # its source, sha256 and what this run tightened
        data=plan["data"],
        fleet=bool(night),
        fleet_source=night.get("source"),
        fleet_run_id=night.get("run_id"),
    )
    return {"target": target.to_dict(), "plan": plan}


def validate_run(**context: Any) -> dict[str, Any]:
    """The `validate` task: `validate`, with the plan written to the run's request folder and handed on by reference
    (its path and SHA-256), so every task's XCom and rendered fields stay small."""
    validated = validate(**context)
    folder = run_folder(context, validated["plan"], "_request")
    return {"target": validated["target"], "plan": plan_reference(validated["plan"], folder)}


def run_attempt(context: Any) -> str:
    """A fresh id for this attempt of the DAG run: a cleared run (same run_id) starts in a folder of its own,
    never reusing the old rollback point, champion predictions or training job."""
    clear_number = getattr(context.get("dag_run"), "clear_number", 0) or 0
    return f"c{clear_number}-{uuid.uuid4().hex[:12]}"


def request_plan(
    params: dict[str, Any], config: Any, context: Any, attempt: str
) -> tuple[dict[str, Any], Any, list[str]]:
    """One retraining request from flat params: (its plan, the parsed request, problems found)."""
    errors: list[str] = []
    try:
        raw = params.get("request_json") or request_from_params(params)
    except (TypeError, ValueError) as exc:  # a fleet override of the wrong type (the form's schema stops these)
        return {}, None, [f"(request): {exc}"]
    if config.dialect == "training-jobs" and not params.get("request_json"):
        raw = training_jobs_request(raw)
    request = None
    try:
        request = parse_request(raw)
    except RequestInvalid as exc:
        errors.extend(exc.errors)
    try:
        gates = gate_config(params)
    except Exception as exc:  # pydantic ValidationError
        errors.extend(f"gates.{e['loc'][0]}: {e['msg']}" for e in getattr(exc, "errors", lambda: [])())
        gates = None
    if request:
        errors.extend(request.platform_problems(config.dialect))  # Cognigy's limits apply to rest-v2 only
    if request and config.dialect == "training-jobs":
        if len(request.locales) != 1:
            errors.append("locales: the training-jobs dialect trains one model (modelId) per run; give one locale")
        if request.promotion.mode != "in_place":
            errors.append(
                "promotion: the training-jobs dialect trains a new model version and serves it by its rollback "
                "call; choose in_place (a rejected version is rolled back at once)"
            )
        if request.trainingData.source not in ("platform", "demo"):
            errors.append(
                "trainingData.source: the training-jobs dialect trains on the platform's data sliced by "
                "trainingDataSliceMatrix (platform; demo on the emulator); it imports no file"
            )
    if errors or request is None or gates is None:
        return {}, None, errors
    data_dir = run_folder(context, {"run_attempt": attempt}, "_request") / f"data-{request.sha256[:16]}"
    data, data_errors = freeze_request_data(request, data_dir)
    if data_errors:
        return {}, None, data_errors

    deadline, warning = request.training_deadline_seconds(config.dialect)
    warnings = [warning] if warning else []
    rollback_deadline = deadline
    if override := params.get("deadline_seconds_override"):
        # Test/ops override (not in the trigger form): a wait deadline below the request's 300 s minimum.
        # The rollback's retrain keeps the request's deadline, so a short override cannot strand a restore.
        deadline = _positive_number(override, "deadline_seconds_override", errors)
        warnings.append(
            f"deadline_seconds_override: the training wait ends after {deadline}s (request: {rollback_deadline}s)"
        )
    reconcile = params.get("reconcile_seconds")
    if reconcile is not None:
        reconcile = _positive_number(reconcile, "reconcile_seconds", errors)
    if errors:
        return {}, None, errors
    plan = {
        "request": request.model_dump(mode="json"),
        "request_hash": request.sha256,
        "spec_body": request.spec_body(),
        "targets": [t.to_dict() for t in request.targets()],
        "deadline_seconds": deadline,
        "rollback_deadline_seconds": rollback_deadline,
        "reconcile_seconds": reconcile,
        "warnings": warnings,
        "gates": gates.model_dump(mode="json"),
        "gates_hash": gates.fingerprint(),
        "run_attempt": attempt,
        "data": data,
        "promotion": request.promotion.mode,
        "gate_profile": params.get("gate_profile") or "default",
        "conn_id": params["cognigy_conn_id"],
        "mlflow_conn_id": params["mlflow_conn_id"],
        "dialect": config.dialect,
        "console_url": redact_text(config.console_url or config.base_url),  # no credentials in XCom or links
        "dry_run": bool(params.get("dry_run")),
        "approval": {k: params[k] for k in APPROVAL_FIELDS if params.get(k) is not None},
        "requests_per_second": params.get("requests_per_second"),
        "poll_min_seconds": params.get("poll_min_seconds", poll_policy.MIN_SECONDS),
        "poll_max_seconds": params.get("poll_max_seconds", poll_policy.MAX_SECONDS),
        "retrain_trigger": retrain_trigger(context),
        # snapshot releases (deployment settings, not in the form): the agent's snapshot limit, and how many of
        # this product's latest releases are never pruned
        "snapshot_limit": int(params.get("snapshot_limit") or releases.SNAPSHOT_LIMIT),
        "keep_released_snapshots": int(params.get("keep_released_snapshots", releases.KEEP_RELEASED)),
    }
    return plan, request, []


def training_jobs_request(raw: dict[str, Any]) -> dict[str, Any]:
    """The form's request in the training-jobs dialect's terms: the specification's example request with nothing
    else runs. Its model versions make every run in place (a rejected version is rolled back by its call); the
    form's default training source (flow) means the platform's data sliced by the matrix; no held-out set means
    the gates judge the platform's own metrics (scoring a held-out set needs the gateway's predict extension)."""
    raw = {**raw, "promotion": {"mode": "in_place"}}
    if raw["trainingData"]["source"] == "flow":
        raw["trainingData"] = {**raw["trainingData"], "source": "platform"}
    if raw["heldOut"]["source"] == "uri" and not raw["heldOut"]["uri"]:
        raw["heldOut"] = {**raw["heldOut"], "source": "none"}
    return raw


def _positive_number(value: Any, name: str, errors: list[str]) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0:
        errors.append(f"{name}: must be a positive number of seconds, got {value!r}")
    return number
