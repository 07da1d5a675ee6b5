"""Bodies of the DAG's Python tasks. Each reads what it needs, calls domain code in include/, audits, and
returns a small JSON-safe dict for XCom (never a secret, never a large payload: files hold those)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.sdk import BaseHook, Variable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from cognigy_provider.hooks.cognigy import CognigyHook

from cognigy_airflow import notify
from cognigy_airflow.auditing import audit, refuse_per_host_stores, retrain_trigger
from cognigy_airflow.data_files import HELD_OUT, TRAINING, freeze_request_data, load_frozen, training_intents
from cognigy_airflow.record import plan_reference, resolve_plan, retrain_record
from include import settings
from include.cognigy import poll_policy, releases, rest_v2
from include.cognigy.client import CognigyClient
from include.cognigy.errors import CognigyError, NotFound
from include.cognigy.model import Target
from include.cognigy.training_jobs import SPEC_F1_BASELINE, mlflow_platform_metrics
from include.data import dataset
from include.data.labelled_data import check_intents
from include.evaluation.held_out import load_predictions, save_predictions, score_utterances
from include.records.mlflow_tracking import (
    MAX_TAG_VALUE_LENGTH,
    MlflowAuth,
    RegistryAction,
    SyncPayload,
    anchor_audit_head,
    audit_fields,
    configure_client,
    sync,
)
from include.records.outbox import Outbox
from include.records.redaction import redact_text
from include.request.retrain_request import RequestInvalid, RetrainRequest, parse_request
from include.results import Captured, Evaluated, RetrainRecord, Synced, meaning, run_fails
from include.state import state_store
from include.state.target_memory import (
    cached_champion,
    champion_key,
    last_trained,
    record_trained,
    released_snapshots,
    store_champion,
)

log = logging.getLogger(__name__)

EXPERIMENT = "cognigy-nlu-retrain"
# How long a judge waits for other trainings of the flow/locale to end before it says "not proven".
PROOF_WAIT_SECONDS = 300.0
APPROVAL_FIELDS = ("approval", "approval_margin", "approval_timeout_minutes")  # include.evaluation.approval
GATE_PARAMS = (
    "precision_floor", "recall_floor", "pr_balance_tolerance", "per_intent_recall_floor", "bias_ceiling",
    "max_accuracy_drop", "significance_alpha", "block_on_feedback_findings",
)  # fmt: skip


def run_folder(context: Any, plan: dict[str, Any], target: dict[str, Any] | str) -> Any:
    """This run attempt's folder for one target (or "_request") in the state store: see `settings.run_dir`."""
    key = target if isinstance(target, str) else Target.from_dict(target).key
    return settings.run_dir(context["ti"].dag_id, context["ti"].run_id, key, plan.get("run_attempt", ""))


# --- validate ------------------------------------------------------------------------------------------
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


# --- capture: rollback point + champion evaluation -----------------------------------------------------
def request_of(plan: dict[str, Any]) -> RetrainRequest:
    return RetrainRequest.model_validate(plan["request"])


def training_target(plan: dict[str, Any], target: dict[str, Any]) -> Target:
    """The flow that trains and is judged: the staging flow, or production itself (in place)."""
    t = Target.from_dict(target)
    return request_of(plan).staging_target(t) or t


def check_staging(client: CognigyClient, production: Target, staging: Target) -> dict[str, Any]:
    """Refuse a staging flow that could hurt customers or judge the wrong thing (read-only; raises)."""
    problems = []
    if (staging.project_id, staging.flow_id) == (production.project_id, production.flow_id):
        problems.append(f"staging flow {staging.flow_id} is the production flow")
    try:  # the flow exists and has this locale (an export of a missing locale may answer an empty list)
        client.training_out_of_date(staging)
        client.flow_intents(staging)
    except NotFound as exc:
        problems.append(f"staging flow {staging.flow_id} / locale {staging.locale}: {exc}")
    if not problems:
        serving = client.endpoints_serving(staging)
        if serving:
            problems.append(
                f"staging flow {staging.flow_id} is served by endpoint(s) {', '.join(sorted(serving))}: customers "
                "would meet every challenger; point those endpoints elsewhere or name another staging flow"
            )
    if problems:
        raise AirflowFailException("staging flow refused (nothing was changed): " + "; ".join(problems))
    return {"flow_id": staging.flow_id, "project_id": staging.project_id}


def capture(target: dict[str, Any], plan: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Before any change: prove the rollback point restorable, check the data against the flow, decide whether
    anything changed since the last training, and score the held-out set against what serves now (the champion).
    Read-only on Cognigy."""
    plan = resolve_plan(plan)
    if plan.get("dry_run"):
        raise AirflowSkipException("dry run: the request is valid; nothing is sent to Cognigy")
    t = Target.from_dict(target)
    request = request_of(plan)
    folder = run_folder(context, plan, target)
    point_file, champion_file = folder / "rollback_point.json", folder / "champion_predictions.jsonl"
    client = CognigyHook(plan["conn_id"], plan.get("requests_per_second")).get_client()
    data = plan["data"][t.locale]
    held, training = load_frozen(data[HELD_OUT]), load_frozen(data[TRAINING])
    staging = request.staging_target(t)
    staged = check_staging(client, t, staging) if staging else None

    if state_store.exists(point_file):  # a retry must not overwrite the rollback point with a later state
        stored = state_store.read_bytes(point_file)
        point = json.loads(stored)
    else:
        point = client.capture_rollback_point(  # training-jobs without a held-out set: the spec's calls only
            t, request.rollbackTriggerVersionId and str(request.rollbackTriggerVersionId), read_serving=held is not None
        )
        if point["kind"] == "intents-export" and (problems := rest_v2.check_restorable(point["intents"])):
            raise AirflowFailException(f"the rollback point of {t.key} could not be restored: {'; '.join(problems)}")
        # Created once (a try racing this one keeps the first), then read back before any change to Cognigy.
        try:
            stored, _ = state_store.create_or_read_verified(point_file, json.dumps(point, ensure_ascii=False).encode())
            point = json.loads(stored)
        except (state_store.StateNotIntact, ValueError) as exc:
            raise AirflowFailException(f"the rollback point {point_file} did not read back intact: {exc}") from None

    # The judged intents: the training file's (uri/demo), else what the flow holds.
    flow_intents = [i["name"] for i in point.get("intents") or []]
    known = training.intents if training else flow_intents
    if (
        held
        and known
        and (problems := check_intents(held, known, "the training data" if training else f"flow {t.flow_id}"))
    ):
        raise AirflowFailException(
            "the held-out set does not fit this flow (nothing was changed):\n  - " + "\n  - ".join(problems[:50])
        )

    out_of_date = client.training_out_of_date(t)
    release = release_path(client, t, plan)
    endpoints = [e["name"] for e in release["endpoints"]] if release else client.endpoints_serving(t)
    candidate = (
        point["fingerprint"]
        if training is None
        else rest_v2.fingerprint(rest_v2.intents_file(training_intents(request, training)))
    )
    last = last_trained(t.key)
    common = {
        "rollback_point_path": str(point_file),
        "rollback_point_sha256": state_store.sha256(stored),  # checked again wherever the point is read
        "fingerprint": point["fingerprint"],
        "candidate_fingerprint": candidate,
        "training_out_of_date": out_of_date,
        "endpoints": endpoints,
        "staging": staged,
        "release": release,
        "held_out": (data[HELD_OUT] or {}).get("summary"),
        "training_data": (data[TRAINING] or {}).get("summary"),
    }
    if (
        not request.retrainUnchanged
        and point["kind"] == "intents-export"
        and not out_of_date
        and last is not None
        and last["fingerprint"] == candidate == point["fingerprint"]
    ):
        audit(
            context,
            "retrain_unchanged",
            plan,
            target,
            fingerprint=point["fingerprint"],
            last_trained_run=last["run_id"],
        )
        return Captured(**common, unchanged=True, last_trained_run=last["run_id"]).to_xcom()

    if held is None:  # training-jobs, no held-out set: the gates judge the platform's metrics, no champion is scored
        audit(context, "rollback_point_captured", plan, target, rollback_point=str(point_file),
              rollback_version_id=point.get("versionId"), champion_scored=0, held_out=None)  # fmt: skip
        return Captured(**common, serving_version=point.get("versionId")).to_xcom()
    threshold = request.heldOut.threshold
    cache_key = champion_key(point["fingerprint"], held.sha256, threshold)
    cached = None if out_of_date or point["kind"] != "intents-export" else cached_champion(t.key, cache_key)
    serving_snapshot = (release or {}).get("serving_snapshot") or {}
    snapshot_key = serving_snapshot.get("hash") and champion_key(f"snapshot:{serving_snapshot['hash']}", held.sha256,
                                                                 threshold)  # fmt: skip
    cached = (snapshot_key and cached_champion(t.key, snapshot_key)) or cached  # a scored snapshot, by its hash
    scored_on = None  # in words: what the champion's predictions came from (scored now)
    if state_store.exists(champion_file):  # scored before this retry: what serves now may already be the new model
        predictions, seconds, via = load_predictions(champion_file), 0.0, "earlier try"
    elif cached is not None:
        predictions, seconds, via = load_predictions(cached), 0.0, "cache"
        save_predictions(champion_file, predictions)
    else:
        scorer, scored_on = champion_scorer(client, t, release, held)
        predictions, seconds = score_utterances(list(held.utterances), scorer, threshold)
        state_store.write_with(champion_file, lambda local: save_predictions(local, predictions))
        via = "scored"
        live_flow = scored_on.startswith("the live flow")  # the cache is keyed by the live flow's intents
        if live_flow and not out_of_date and point["kind"] == "intents-export":
            store_champion(t.key, cache_key, champion_file)
        elif not live_flow and snapshot_key:  # the snapshot itself was scored: keyed by its hash
            store_champion(t.key, snapshot_key, champion_file)
    counts = point.get("intents") and {i["name"]: len(i.get("exampleSentences") or []) for i in point["intents"]}
    audit(
        context,
        "rollback_point_captured",
        plan,
        target,
        rollback_point=str(point_file),
        fingerprint=point["fingerprint"],
        champion_scored=len(predictions),
        champion_via=via,
        eval_seconds=round(seconds, 2),
        held_out=held.summary(),
        training_data=training.summary() if training else None,
        endpoints=endpoints,
        staging=staged,
        release=release,
        champion_scored_on=scored_on,
    )
    return Captured(
        **common,
        champion_predictions_path=str(champion_file),
        champion_eval_seconds=round(seconds, 2),
        champion_via=via,
        champion_scored_on=scored_on,
        serving_counts=counts or None,
        serving_version=point.get("versionId"),
    ).to_xcom()


def release_path(client: CognigyClient, t: Target, plan: dict[str, Any]) -> dict[str, Any] | None:
    """rest-v2: how a change reaches the customers of this flow (`releases.ReleasePath`), refusing mixed or
    unreadable endpoints and, on the snapshot path, an agent whose snapshot limit leaves no room (read-only)."""
    if not client.v2:
        return None
    try:
        path = releases.release_path(client.v2, t)
        if path.path == "snapshot":
            own = released_snapshots(t.project_id)
            room = releases.room(client.v2, t.project_id, own, keep_last=plan["keep_released_snapshots"])
            releases.check_room(room, plan["snapshot_limit"])
    except releases.ReleaseRefused as exc:
        raise AirflowFailException(f"{t.key}: {exc}") from None
    return path.to_dict()


def champion_scorer(
    client: CognigyClient, t: Target, release: dict[str, Any] | None, held: Any
) -> tuple[Callable[[str], Any], str]:
    """How the champion is scored, and what on (in words). Snapshot path: the serving snapshot itself if the
    platform scores a snapshot id as a project (not confirmed), else the live flow as it stands before the run."""
    live = (lambda s: client.score(t, s)), f"the live flow {t.flow_id}"
    snapshot = (release or {}).get("serving_snapshot")
    if not snapshot or not held.utterances:
        return live
    frozen = replace(t, project_id=snapshot["id"])
    try:
        client.score(frozen, held.utterances[0].text)
    except CognigyError as exc:
        log.info("snapshot %s could not be scored (%s): scoring the live flow as the champion", snapshot["id"], exc)
        return live[0], f"the live flow {t.flow_id} (the platform did not score snapshot {snapshot['name']!r})"
    return (lambda s: client.score(frozen, s)), f"snapshot {snapshot['name']!r}"


# --- evaluate ------------------------------------------------------------------------------------------
def evaluate(target: dict[str, Any], plan: dict[str, Any], waited: Any, **context: Any) -> dict[str, Any]:
    """Score the held-out set against the challenger (the staging flow, or production in place) and run every
    gate; `promote` and `rollback` act on this result only."""
    plan = resolve_plan(plan)
    from include.evaluation.config import GateConfig
    from include.evaluation.gates import evaluate_gates
    from include.evaluation.report import write_gate_report

    record = retrain_record(context, target, plan, waited=waited)
    captured, submitted, waited = record.captured, record.submitted, record.waited
    if plan.get("dry_run") or not captured:
        # No rollback point means `capture` did not finish, so nothing was changed and nothing is restored.
        raise AirflowSkipException("dry run" if plan.get("dry_run") else "no rollback point: nothing was changed")
    if captured.unchanged:
        raise AirflowSkipException("unchanged since the last successful training: nothing to judge")
    if not waited or waited.state != "succeeded":
        state = waited.state if waited else "not run"
        reason = f"training {state}: {(waited and waited.reason) or 'no model to evaluate'}"
        audit(context, "validation_failed", plan, target, reason=reason, cognigy_job_id=waited and waited.job_id)
        return Evaluated(passed=False, training_state=state, reason=reason, decided_at=time.time()).to_xcom()
    t, judged = Target.from_dict(target), training_target(plan, target)
    folder = run_folder(context, plan, target)
    request = request_of(plan)
    client = CognigyHook(plan["conn_id"], plan.get("requests_per_second")).get_client()
    # Nothing is scored before the platform shows that the judged flow serves the training of the staged intents.
    proof = client.prove_training(judged, waited.job_id, submitted.fingerprint, wait_seconds=PROOF_WAIT_SECONDS)
    if not proof.proven:
        reason = f"not evaluated: the challenger's training is not proven ({proof.why_not()})"
        audit(context, "validation_failed", plan, target, reason=reason, cognigy_job_id=waited.job_id,
              training_proof=proof.to_dict())  # fmt: skip
        return Evaluated(passed=False, training_state="unproven", reason=reason, decided_at=time.time()).to_xcom()
    held = load_frozen(plan["data"][t.locale][HELD_OUT])
    version = waited.version_id
    if held is None:  # training-jobs without a held-out set: the specification's gates on the platform's numbers
        return _evaluate_platform_reported(context, client, judged, plan, target, waited, folder)
    predictions, seconds = score_utterances(
        list(held.utterances), lambda s: client.score(judged, s, version_id=version), request.heldOut.threshold
    )
    save_predictions(folder / "challenger_predictions.jsonl", predictions)
    champion = load_predictions(state_store.path_of(captured.champion_predictions_path))
    feedback = client.platform_feedback(judged, version)
    server = feedback.get("serverMetrics") if isinstance(feedback, dict) else None
    platform_metrics = None
    if server:  # XCom keeps the headline numbers; the whole answer is a report file
        state_store.write_text(folder / "report" / "platform_metrics.json", json.dumps(server, indent=2, default=str))
        dist = server.get("intent_distribution")
        platform_metrics = {k: server.get(k) for k in ("precision", "recall", "f1", "bias_score")}
        platform_metrics["intents"] = len(dist) if isinstance(dist, dict) else None
    trained = trained_intents(folder)
    counts = {k: len(v) for k, v in trained.items()} if trained else (submitted and submitted.training_counts) or {}
    labels = sorted(set(held.intents) | set(counts))
    report = evaluate_gates(
        predictions,
        champion,
        labels,
        counts,
        feedback,
        GateConfig(**plan["gates"]),
        training_texts=trained,
        held_out=held.summary(),
    )
    with state_store.local_dir(folder / "report") as out:  # the report's writers want local files
        written = write_gate_report(report, out)
    paths = {name: folder / "report" / Path(path).name for name, path in written.items()}
    summary = report.summary()
    event = "validation_passed" if report.passed else "validation_failed"
    audit(
        context,
        event,
        plan,
        target,
        cognigy_job_id=waited.job_id,
        metrics=summary,
        accuracy_delta=summary.get("accuracy_delta"),
        latency_seconds=waited.latency_seconds,
        judged_flow=judged.flow_id,
        held_out=held.summary(),
        platform_metrics=platform_metrics,
        gate_report=str(paths["gate_report.json"]) if "gate_report.json" in paths else None,
    )
    return Evaluated(
        passed=report.passed,
        training_state="succeeded",
        summary=summary,
        reason="all blocking gates passed" if report.passed else f"failed: {', '.join(report.failed_gates)}",
        eval_seconds=round(seconds, 2),
        artifacts={k: str(v) for k, v in paths.items()},
        platform_metrics=platform_metrics,  # training-jobs: the server's own /metrics, recorded beside ours
        decided_at=time.time(),
    ).to_xcom()


def _evaluate_platform_reported(
    context: Any,
    client: CognigyClient,
    judged: Target,
    plan: dict[str, Any],
    target: dict[str, Any],
    waited: Any,
    folder: Any,
) -> dict[str, Any]:
    """training-jobs, no held-out set (no predict call in the specification): the version's `/metrics` judged by
    `platform_reported_gates`; its `[VALIDATION]` warnings go to the task log, the report says "platform-reported".
    A version whose metrics cannot be read (404: "not found or metrics generation failed") is not evaluated."""
    from include.evaluation.config import GateConfig
    from include.evaluation.gates import platform_reported_gates

    try:
        server = client.platform_feedback(judged, waited.version_id).get("serverMetrics") or {}
    except NotFound as exc:
        server = {}
        context["task"].log.warning("[VALIDATION] metrics of version %s could not be read: %s", waited.version_id, exc)
    report = platform_reported_gates(server, GateConfig(**plan["gates"]))
    for warning in report["warnings"]:
        context["task"].log.warning("%s", warning)
    report["model_version_id"] = waited.version_id
    report["platform_metrics"] = server
    report_file = folder / "report" / "gate_report.json"
    state_store.write_text(report_file, json.dumps(report, indent=2, default=str))
    summary = report["summary"]
    platform_metrics = {k: server.get(k) for k in ("precision", "recall", "f1", "bias_score")} if server else None
    if platform_metrics is not None:
        dist = server.get("intent_distribution")
        platform_metrics["intents"] = len(dist) if isinstance(dist, dict) else None
    passed = bool(server) and report["passed"]
    reason = "all blocking gates passed (platform-reported)" if passed else (
        f"failed (platform-reported): {', '.join(report['failed_gates']) or 'metrics not readable'}")  # fmt: skip
    audit(context, "validation_passed" if passed else "validation_failed", plan, target, cognigy_job_id=waited.job_id,
          model_version_id=waited.version_id, metrics=summary, accuracy_delta=summary.get("accuracy_delta"),
          latency_seconds=waited.latency_seconds, gate_source="platform-reported", warnings=report["warnings"],
          platform_metrics=platform_metrics, gate_report=str(report_file), reason=reason)  # fmt: skip
    return Evaluated(
        passed=passed,
        training_state="succeeded",
        summary=summary,
        reason=reason,
        artifacts={"gate_report.json": str(report_file)},
        platform_metrics=platform_metrics,
        decided_at=time.time(),
    ).to_xcom()


def trained_intents(folder: Any) -> dict[str, list[str]] | None:
    """Intent -> example sentences the challenger was trained on (written by `submit`), if known."""
    staged = state_store.read_json(folder / STAGED_INTENTS)
    if staged is None:
        return None
    return {i["name"]: list(i.get("exampleSentences") or []) for i in staged}


def read_rollback_point(captured: Captured | dict[str, Any]) -> dict[str, Any]:
    """The rollback point `capture` stored, checked against the checksum it recorded (when it did)."""
    if isinstance(captured, dict):  # capture's XCom as Airflow hands it over
        location, expected = captured["rollback_point_path"], captured.get("rollback_point_sha256")
    else:
        location, expected = captured.rollback_point_path, captured.rollback_point_sha256
    data = state_store.read_bytes(state_store.path_of(location))
    if expected and state_store.sha256(data) != expected:
        raise AirflowFailException(f"the rollback point {location} changed since it was captured (checksum differs)")
    return json.loads(data)


STAGED_INTENTS = "challenger_intents.json"


# --- MLflow --------------------------------------------------------------------------------------------
def mlflow_target(conn_id: str) -> tuple[str, MlflowAuth | None, list[str]]:
    """Tracking URI, auth and the secret values to keep out of logs, from an Airflow connection.

    host: tracking URI (``https://mlflow.example.com`` or ``host`` + schema/port fields); login/password:
    basic auth; extra: ``{"token": ..., "insecure": true, "ca_bundle": "/path/ca.pem"}``.
    """
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"connection {conn_id!r} has no host (the MLflow tracking URI)")
    scheme = conn.schema if conn.schema in ("http", "https") else "http"
    uri = host if "://" in host else f"{scheme}://{host}"
    parts = urlsplit(uri)
    if conn.port and parts.port is None:
        uri = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
    auth = MlflowAuth(
        username=conn.login or None,
        password=conn.password or None,
        token=extra.get("token") or None,
        insecure_tls=_truthy(extra.get("insecure", extra.get("insecure_tls", False))),
        ca_bundle=extra.get("ca_bundle") or None,
    )
    return uri.rstrip("/"), auth, auth.secret_values()


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


_METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]+")


def _metric_key(*parts: str) -> str:
    """MLflow metric names allow letters, digits and ``_-. :/`` only (intent names may hold anything)."""
    return ".".join(_METRIC_KEY_UNSAFE.sub("_", p) for p in parts)[:250]


def build_payload(context: Any, record: RetrainRecord) -> SyncPayload:
    """Everything MLflow gets for one DAG run and target: params, metrics, tags, artifacts, registry action."""
    ti = context["ti"]
    plan, t = record.plan, Target.from_dict(record.target)
    captured, submitted, waited, evaluated = record.captured, record.submitted, record.waited, record.evaluated
    summary = evaluated.summary if evaluated else {}
    outcome = record.outcome()
    promoted = outcome == "promoted"
    counts = (submitted and submitted.training_counts) or (captured and captured.serving_counts) or {}
    if plan.get("dialect") == "training-jobs" and not counts:  # the job body's matrix is the training set
        counts = dict(plan["request"].get("trainingDataSliceMatrix") or {})
    metrics = {
        "training_latency_seconds": waited and waited.latency_seconds,
        "accuracy": summary.get("accuracy"),
        "precision": summary.get("macro_precision"),
        "recall": summary.get("macro_recall"),
        "f1_score": summary.get("macro_f1"),
        "bias_score": summary.get("bias_score"),
        "accuracy_delta": summary.get("accuracy_delta"),
        "macro_f1_delta": summary.get("macro_f1_delta"),
        "mcnemar_p_value": summary.get("p_value"),
        "dataset_size": sum(counts.values()) or None,
        "held_out_scored": summary.get("n_scored"),
        "eval_seconds": evaluated and evaluated.eval_seconds,
        "champion_eval_seconds": captured and captured.champion_eval_seconds,
        "gates_failed": len(summary["failed_gates"]) if "failed_gates" in summary else None,
        "ungated_exposure_seconds": record.ungated_exposure_seconds(time.time()),
        "held_out_rows": ((captured and captured.held_out) or {}).get("rows"),
    }
    platform = (evaluated and evaluated.platform_metrics) or {}
    metrics.update(mlflow_platform_metrics(platform))
    if isinstance(platform.get("f1"), int | float):  # the specification's delta beside ours (the gate used `summary`'s)
        metrics["accuracy_delta_spec"] = platform["f1"] - SPEC_F1_BASELINE
    metrics["platform.intents"] = platform.get("intents")
    report_file = (evaluated.artifacts if evaluated else {}).get("gate_report.json")
    full = state_store.read_json(state_store.path_of(report_file)) if report_file else None
    if full is not None:
        for intent, row in (full.get("metrics", {}).get("per_intent") or {}).items():
            for name in ("precision", "recall", "f1", "support"):
                metrics[_metric_key("intent", intent, name)] = row.get(name)
    artifacts = dict(evaluated.artifacts) if evaluated else {}
    artifacts["request.json"] = plan["request_path"]  # the canonical JSON of the whole request
    if captured:
        artifacts["rollback_point.json"] = captured.rollback_point_path
    params = {**json_params(plan), "target.locale": t.locale}
    job_id = record.job_id
    version_id = (waited and waited.version_id) or ""
    gate_result = "passed" if promoted else (evaluated.reason if evaluated else "not evaluated")
    policy = plan.get("gates", {}).get("gate_policy") or {}  # the deployment's gate policy and any tightening
    tags = {
        "model_id": t.model_id, "flow_id": t.flow_id, "project_id": t.project_id, "locale": t.locale,
        "cognigy_job_id": job_id or "", "cognigy_version_id": version_id, "version_id": version_id,
        "retrain_trigger": plan.get("retrain_trigger") or retrain_trigger(context),
        "status": outcome, "request_hash": plan["request_hash"],
        "airflow_dag_id": ti.dag_id, "airflow_run_id": ti.run_id,
        "airflow_run_url": airflow_run_url(ti.dag_id, ti.run_id),
        "rollback_verified": str(bool(record.rolled_back and record.rolled_back.verified)).lower(),
        "gate_result": gate_result[:MAX_TAG_VALUE_LENGTH],
        "gates_hash": plan.get("gates_hash") or "", "gate_profile": plan.get("gate_profile") or "default",
        "gate_policy": str(policy.get("summary") or "")[:MAX_TAG_VALUE_LENGTH],
        "gate_policy_sha256": policy.get("sha256") or "",
        "promotion": plan.get("promotion") or "", "trained_flow_id": (submitted and submitted.trained_flow) or "",
        "held_out_sha256": ((captured and captured.held_out) or {}).get("sha256") or "",
        "gate_source": summary.get("gate_source") or ("held-out" if summary else ""),
        "accuracy_delta_source": str(summary.get("accuracy_delta_source")
                                     or ("challenger − champion accuracy on the held-out set" if summary else "")),
        **snapshot_tags(record),
    }  # fmt: skip
    if record.approved:  # the release waited for a person (opt-in): the decision, who made it, when
        by = record.approved.responded_by or {}
        tags.update(approval_decision=record.approved.decision, approval_by=str(by.get("name") or by.get("id") or ""),
                    approval_at=record.approved.responded_at or "")  # fmt: skip
    registry = None
    if record.training_state == "succeeded" and job_id:
        registry = RegistryAction(
            model_name=registry_model_name(t),
            source=f"cognigy://{t.project_id}/{t.flow_id}/{t.locale}/{version_id or job_id}",
            version_key=job_id,
            tags={
                "cognigy_job_id": job_id,
                "cognigy_version_id": version_id,
                "request_hash": plan["request_hash"],
                "gate_result": gate_result[:250],
                "airflow_run_url": tags["airflow_run_url"],
                **snapshot_tags(record),
            },
            promote=promoted,
            decided_at=submitted and submitted.submitted_at,
        )
    return SyncPayload(
        run_key=f"{ti.dag_id}/{ti.run_id}/{t.key}",
        experiment=EXPERIMENT,
        run_name=f"{t.locale} {ti.run_id}"[:250],
        params=params,
        metrics={k: float(v) for k, v in metrics.items() if v is not None},
        tags=tags,
        artifacts=artifacts,
        status="FINISHED" if promoted else "FAILED",
        registry=registry,
        datasets=_datasets(captured),
    )


def snapshot_tags(record: RetrainRecord) -> dict[str, str]:
    """MLflow tags naming the version customers meet: on the snapshot path, the snapshot (id, name, hash) serving
    after this run and the one that served before."""
    verdict = release_verdict(record)
    if not verdict:
        return {}
    now, before = verdict["snapshot"] or {}, verdict["previous"] or {}
    tags = {"release_path": verdict["path"]}
    if verdict["path"] == "snapshot":
        tags["snapshot_id"], tags["snapshot_hash"] = now.get("id") or "", now.get("hash") or ""
        tags["snapshot_name"], tags["previous_snapshot_id"] = (now.get("name") or "")[:250], before.get("id") or ""
    return tags


def _datasets(captured: Captured | None) -> list[dict[str, Any]]:
    """The held-out set that judged the model (and the training file, when one was imported)."""
    found = []
    for key, context in (("held_out", "evaluation"), ("training_data", "training")):
        summary = getattr(captured, key) if captured else None
        if summary:
            profile = {k: summary.get(k) for k in ("rows", "intents", "slices", "duplicates")}
            found.append({"name": summary["name"], "digest": summary["sha256"][:36], "source": summary["name"],
                          "context": context, "profile": profile})  # fmt: skip
    return found


def registry_model_name(t: Target) -> str:
    """Registered model of one flow and locale: ``cognigy-<flowId>-<locale>``."""
    return f"cognigy-{t.flow_id}-{t.locale}"


def json_params(plan: dict[str, Any]) -> dict[str, str]:
    from include.request.retrain_request import RetrainRequest

    return RetrainRequest.model_validate(plan["request"]).flat_params()


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI ([api] base_url)."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def record_in_mlflow(record: RetrainRecord, **context: Any) -> Synced:
    """Record this retrain in MLflow (one run per DAG run and target, found again on retry).

    The payload is written to a durable outbox first; when MLflow stays down past the task's retries the run
    still ends, the payload waits in the outbox, and the `cognigy_mlflow_resync` DAG pushes it later.
    """
    ti = context["ti"]
    plan, target = record.plan, record.target
    payload = build_payload(context, record)
    outbox = Outbox(settings.outbox_dir())
    entry = outbox.put(payload)
    common = {
        "run_key": payload.run_key,
        "cognigy_job_id": payload.tags["cognigy_job_id"] or None,
        "cognigy_version_id": payload.tags["cognigy_version_id"] or None,
        "latency_seconds": payload.metrics.get("training_latency_seconds"),
        "accuracy_delta": payload.metrics.get("accuracy_delta"),
        "mlflow_status": payload.status,
        "retrain_outcome": payload.tags["status"],
        "ungated_exposure_seconds": payload.metrics.get("ungated_exposure_seconds"),
    }
    secrets: list[str] = []
    try:
        uri, auth, secrets = mlflow_target(plan["mlflow_conn_id"])
        configure_client()
        with state_store.local_files(payload.artifacts) as files:  # MLflow logs local files
            result = sync(replace(payload, artifacts=files), uri, auth=auth)
    except Exception as exc:
        message = redact_text(f"{type(exc).__name__}: {exc}", secrets)[:500]
        if ti.try_number <= getattr(ti, "max_tries", 0):  # Airflow will try again
            context["task"].log.warning(
                "MLflow sync failed (try %s of %s): %s", ti.try_number, ti.max_tries + 1, message
            )
            raise RuntimeError(f"MLflow sync failed: {message}") from None
        audit(context, "mlflow_sync_deferred", plan, target, **common, outbox_entry=str(entry), error=message)
        outbox.release(payload.run_key)  # the resync DAG may take it at once
        context["task"].log.error("MLflow unreachable after %s tries; the record waits in %s", ti.try_number, entry)
        return Synced(synced=False, deferred=True, run_key=payload.run_key, outbox_entry=str(entry))
    outbox.done(payload.run_key)
    written = audit(
        context,
        "mlflow_synced",
        plan,
        target,
        **common,
        **audit_fields(payload, result),
    )
    try:  # the audit chain's head, anchored outside the log (the task's XCom audit_anchor holds it too)
        anchor_audit_head(uri, result.run_id, written, auth=auth)
    except Exception as exc:
        context["task"].log.warning("MLflow run not tagged with the audit anchor: %s", redact_text(str(exc), secrets))
    return Synced(
        synced=True,
        run_id=result.run_id,
        run_url=result.run_url,
        model_version=result.model_version,
        champion_version=result.champion_version,
    )


# --- final audit ---------------------------------------------------------------------------------------
def finalize(target: dict[str, Any], plan: dict[str, Any], synced: Any, **context: Any) -> dict[str, Any]:
    """Write the retrain's closing audit record and remember what production was trained on; then fail the run
    if the training failed, a promotion failed, or a restore is not verified."""
    plan = resolve_plan(plan)
    if not plan:  # validate refused the request (audited there as request_rejected): say so, fail the run
        ti = context["ti"]
        params = context.get("params") or {}
        asked = {"flow_id": params.get("flow_id") or "?", "locale": (params.get("locales") or ["?"])[0]}
        url = airflow_run_url(ti.dag_id, ti.run_id)
        notify.alert(context, {"outcome": "request_rejected", "target": asked, "airflow_run_url": url})
        raise AirflowFailException(f"the request was refused by validate; nothing was sent (see its log and the audit "
                                   f"record request_rejected: {settings.audit_location()})")  # fmt: skip
    record = retrain_record(context, target, plan, synced=synced)
    plan = record.plan
    captured, evaluated, synced = record.captured, record.evaluated, record.synced
    training = record.training_state
    outcome = record.outcome()
    exposure = record.ungated_exposure_seconds(time.time())
    summary = evaluated.summary if evaluated else {}
    t = Target.from_dict(target)
    folder = run_folder(context, plan, target)
    if outcome == "promoted":
        _remember_promotion(t, record, folder, context["ti"].run_id)
    audited = audit(
        context,
        "retrain_completed",
        plan,
        target,
        outcome=outcome,
        outcome_meaning=meaning(outcome),
        gates_hash=plan.get("gates_hash"),
        promotion=plan.get("promotion"),
        training_state=training,
        cognigy_job_id=record.job_id,
        promotion_job_id=record.promoted and record.promoted.job_id,
        latency_seconds=record.waited and record.waited.latency_seconds,
        metrics=summary,
        accuracy_delta=summary.get("accuracy_delta"),
        gate_reason=evaluated and evaluated.reason,
        held_out=captured and captured.held_out,
        ungated_exposure_seconds=exposure,
        mlflow_run_id=synced and synced.run_id,
        mlflow_deferred=bool(synced and synced.deferred),
        rollback_verified=bool(record.rolled_back and record.rolled_back.verified),
        release=release_verdict(record),
    )
    audit_kind, audit_target = settings.audit_store()
    result = {
        "outcome": outcome,
        "promotion": plan.get("promotion"),
        "audit_seq": audited.get("seq"),
        "audit_path": audit_target if audit_kind == "file" else None,
        "audit_location": settings.audit_location(),
        "job_id": record.job_id,
        "training_state": training,
        "latency_seconds": record.waited and record.waited.latency_seconds,
        "summary": summary,
        "ungated_exposure_seconds": exposure,
        "held_out": captured and captured.held_out,
        "mlflow_run_id": synced and synced.run_id,
        "mlflow_run_url": synced and synced.run_url,
        "release": release_verdict(record),
        "gate_policy": (plan.get("gates") or {}).get("gate_policy"),
        "target": target,
    }
    state_store.write_text(folder / "outcome.json", json.dumps(result, indent=2))
    if night := plan.get("fleet"):  # where the night's morning summary reads it
        from cognigy_airflow.fleet import night_outcome

        state_store.write_text(night_outcome(night, target), json.dumps(result, indent=2))
    ti = context["ti"]
    notify.alert(context, {**result, "gate_reason": evaluated and evaluated.reason,
                           "mlflow_deferred": bool(synced and synced.deferred),
                           "airflow_run_url": airflow_run_url(ti.dag_id, ti.run_id)})  # fmt: skip
    if run_fails(outcome):
        raise AirflowFailException(
            f"retrain of {t.key} ended as {outcome} (training {training}): {meaning(outcome)}; "
            f"see the audit trail: {settings.audit_location()}"
        )
    return result


def release_verdict(record: RetrainRecord) -> dict[str, Any] | None:
    """How the change reached customers, for the verdict: the path, and on the snapshot path the snapshot that
    serves now and the one that served before (the rollback point)."""
    release = record.captured and record.captured.release
    if not release:
        return None
    previous = release.get("serving_snapshot")
    released = record.released
    serving = released.snapshot if released and released.released else previous
    return {
        "path": release["path"],
        "endpoints": [e["name"] for e in release.get("endpoints") or []],
        "snapshot": serving,
        "previous": previous,
        "released": bool(released and released.released and release["path"] == "snapshot"),
        "switched_back": released.switched_back if released else None,
        "champion_scored_on": record.captured.champion_scored_on if record.captured else None,
    }


def _remember_promotion(t: Target, record: RetrainRecord, folder: Any, run_id: str) -> None:
    """Production now serves the challenger's intents: remember them (for `unchanged`) and keep the
    challenger's held-out predictions as the champion's for that state (not scored again next time)."""
    fingerprint = record.submitted and record.submitted.fingerprint
    held = (record.captured and record.captured.held_out) or {}
    if not fingerprint or record.plan.get("dialect") != "rest-v2":
        return
    record_trained(t.key, fingerprint, run_id)
    challenger = folder / "challenger_predictions.jsonl"
    if held.get("sha256") and state_store.exists(challenger):
        key = champion_key(fingerprint, held["sha256"], record.plan["request"]["heldOut"]["threshold"])
        store_champion(t.key, key, challenger)
