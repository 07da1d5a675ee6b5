"""Bodies of the DAG's Python tasks. Each reads what it needs, calls domain code in include/, audits, and
returns a small JSON-safe dict for XCom (never a secret, never a large payload: files hold those)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.sdk import BaseHook, Variable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cognigy_airflow.auditing import audit, retrain_trigger, triggered_by
from cognigy_airflow.hooks import CognigyHook
from include import dataset, settings
from include.cognigy.model import Target
from include.fleet import FLEET_VARIABLE, FleetInvalid, load_fleet
from include.gate_report import write_gate_report
from include.gates import GateConfig, evaluate_gates
from include.held_out import load_predictions, save_predictions, score_utterances
from include.mlflow_sync import (
    MAX_TAG_VALUE_LENGTH,
    MlflowAuth,
    RegistryAction,
    SyncPayload,
    audit_fields,
    configure_client,
    sync,
)
from include.outbox import Outbox
from include.redaction import redact_text
from include.retrain_request import RequestInvalid, parse_request

EXPERIMENT = "cognigy-nlu-retrain"
GATE_PARAMS = (
    "precision_floor", "recall_floor", "pr_balance_tolerance", "per_intent_recall_floor", "bias_ceiling",
    "max_accuracy_drop", "significance_alpha", "block_on_feedback_findings",
)  # fmt: skip


def _run_dir(context: Any, target: dict[str, Any]) -> Path:
    return settings.run_dir(context["ti"].dag_id, context["ti"].run_id, Target.from_dict(target).key)


# --- validate ------------------------------------------------------------------------------------------
def request_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The trigger form's flat params -> the retraining request (the specification's field names)."""
    matrix = params.get("training_data_slice_matrix") or {}
    if not matrix:
        locale = (params.get("locales") or ["en-US"])[0]
        try:
            intents = dataset.intents(locale)
        except ValueError:
            intents = []
        matrix = {name: int(params["samples_per_intent"]) for name in intents}
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
        "trainingData": {"source": params.get("training_data_source")},
        "heldOut": {"perIntent": params.get("held_out_per_intent"), "threshold": params.get("score_threshold")},
    }


def validate(**context: Any) -> dict[str, Any]:
    """Validate the run's request(s) before anything is sent anywhere; the plan every later task follows.

    Returns the run plan: ``{"fleet", "fleet_source", "request_hashes", "targets": [{"target", "plan"}, ...]}``
    where each target carries the plan of its own request (a fleet entry with overrides has its own request and
    SHA-256). Scheduled (and asset-triggered) runs retrain the fleet; manual runs the flow in the trigger form
    unless its `fleet` box is ticked. One invalid fleet entry rejects the whole run: nothing is sent.
    """
    params = dict(context["params"])
    config = CognigyHook(params["cognigy_conn_id"]).get_config()
    use_fleet = retrain_trigger(context) == "automated" or bool(params.get("fleet"))
    errors: list[str] = []
    entries: list[tuple[str, dict[str, Any]]] = [("", params)]
    source = "trigger form"
    if use_fleet:
        entries = []
        try:
            fleet, source = load_fleet(Variable.get(FLEET_VARIABLE, default=None))
            entries = [(entry.label(i), entry.params(params)) for i, entry in enumerate(fleet)]
            errors.extend(_override_errors(context, fleet))
        except FleetInvalid as exc:
            errors.extend(exc.errors)
    checked = []
    for label, entry_params in entries:
        plan, request, problems = _request_plan(entry_params, config, context)
        errors.extend(f"{label}: {p}" if label else p for p in problems)
        checked.append((plan, request))
    if errors:
        # The raw params' hash identifies what was refused (secrets never travel in params).
        raw = json.dumps(dict(context["params"]), sort_keys=True, separators=(",", ":"), default=str)
        audit(
            context,
            "request_rejected",
            {"request_hash": hashlib.sha256(raw.encode()).hexdigest()},
            None,
            errors=errors,
            fleet=use_fleet,
            fleet_source=source,
        )
        raise AirflowFailException("retraining request is invalid:\n" + "\n".join(f"  - {e}" for e in errors))

    targets: list[dict[str, Any]] = []
    for plan, request in checked:
        for warning in plan["warnings"]:
            context["ti"].log.warning(warning) if hasattr(context["ti"], "log") else None
        request_dir = settings.run_dir(context["ti"].dag_id, context["ti"].run_id, "_request")
        request_file = request_dir / f"request-{request.sha256[:16]}.json"
        request_file.write_text(request.canonical_json())
        plan["request_path"] = str(request_file)
        audit(
            context,
            "retrain_initiated",
            plan,
            None,
            targets=[t.key for t in request.targets()],
            dialect=config.dialect,
            warnings=plan["warnings"],
            dry_run=plan["dry_run"],
            fleet=use_fleet,
            fleet_source=source,
        )
        targets.extend({"target": t.to_dict(), "plan": plan} for t in request.targets())
    return {
        "fleet": use_fleet,
        "fleet_source": source,
        "request_hashes": sorted({plan["request_hash"] for plan, _ in checked}),
        "targets": targets,
    }


def _override_errors(context: Any, fleet: list[Any]) -> list[str]:
    """Fleet overrides checked against the same JSON schema as the trigger form's fields."""
    dag_params = getattr(context.get("dag"), "params", None)
    errors = []
    for index, entry in enumerate(fleet):
        for name, value in entry.overrides.items():
            try:
                param = dag_params.get_param(name) if dag_params is not None else None
            except KeyError:
                param = None
            if param is None:
                continue
            try:
                type(param)(value, **param.schema).resolve()
            except Exception as exc:  # ParamValidationError: the message names the rule, not a secret
                errors.append(f"{entry.label(index)}: overrides.{name}: {str(exc).splitlines()[0][:300]}")
    return errors


def _request_plan(params: dict[str, Any], config: Any, context: Any) -> tuple[dict[str, Any], Any, list[str]]:
    """One retraining request from flat params: (its plan, the parsed request, problems found)."""
    errors: list[str] = []
    try:
        raw = params.get("request_json") or request_from_params(params)
    except (TypeError, ValueError) as exc:  # a fleet override of the wrong type (the form's schema stops these)
        return {}, None, [f"(request): {exc}"]
    request = None
    try:
        request = parse_request(raw)
    except RequestInvalid as exc:
        errors.extend(exc.errors)
    try:
        gates = GateConfig(**{k: params[k] for k in GATE_PARAMS if params.get(k) is not None})
    except Exception as exc:  # pydantic ValidationError
        errors.extend(f"gates.{e['loc'][0]}: {e['msg']}" for e in getattr(exc, "errors", lambda: [])())
        gates = None
    if request and config.dialect == "training-jobs" and len(request.locales) != 1:
        errors.append("locales: the training-jobs dialect trains one model (modelId) per run; give one locale")
    if errors or request is None or gates is None:
        return {}, None, errors

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
        "conn_id": params["cognigy_conn_id"],
        "mlflow_conn_id": params["mlflow_conn_id"],
        "dialect": config.dialect,
        "console_url": config.console_url or config.base_url,
        "dry_run": bool(params.get("dry_run")),
        "requests_per_second": params.get("requests_per_second"),
        "poll_min_seconds": params.get("poll_min_seconds", 2.0),
        "poll_max_seconds": params.get("poll_max_seconds", 30.0),
        "retrain_trigger": "automated" if triggered_by(context) == "schedule" else "manual",
    }
    return plan, request, []


def _positive_number(value: Any, name: str, errors: list[str]) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0:
        errors.append(f"{name}: must be a positive number of seconds, got {value!r}")
    return number


def list_targets(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The mapped task group's kwargs: one {"target", "plan"} per flow/locale (fleet or single flow)."""
    return plan["targets"]


# --- capture: rollback point + champion evaluation -----------------------------------------------------
def capture(target: dict[str, Any], plan: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Before any change: save what serves now, and score the held-out set against it (the champion)."""
    if plan.get("dry_run"):
        raise AirflowSkipException("dry run: the request is valid; nothing is sent to Cognigy")
    t = Target.from_dict(target)
    folder = _run_dir(context, target)
    point_file, champion_file = folder / "rollback_point.json", folder / "champion_predictions.jsonl"
    client = CognigyHook(plan["conn_id"], plan.get("requests_per_second")).get_client()
    if point_file.exists():  # a retry must not overwrite the rollback point with a later state
        point = json.loads(point_file.read_text())
    else:
        point = client.capture_rollback_point(t, plan["request"].get("rollbackTriggerVersionId"))
        tmp = point_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(point, ensure_ascii=False))
        tmp.replace(point_file)
    if point_file.exists() and champion_file.exists():  # scored before: what serves now may be the new model
        predictions, seconds = load_predictions(champion_file), 0.0
    else:
        held = dataset.held_out(t.locale, plan["request"]["heldOut"]["perIntent"])
        predictions, seconds = score_utterances(
            held, lambda s: client.score(t, s), plan["request"]["heldOut"]["threshold"]
        )
        tmp = champion_file.with_suffix(".tmp")
        save_predictions(tmp, predictions)
        tmp.replace(champion_file)
    counts = point.get("intents") and {i["name"]: len(i.get("exampleSentences") or []) for i in point["intents"]}
    audit(
        context,
        "rollback_point_captured",
        plan,
        target,
        rollback_point=str(point_file),
        fingerprint=point["fingerprint"],
        champion_scored=len(predictions),
        eval_seconds=round(seconds, 2),
    )
    return {
        "rollback_point_path": str(point_file),
        "fingerprint": point["fingerprint"],
        "champion_predictions_path": str(champion_file),
        "champion_eval_seconds": round(seconds, 2),
        "serving_counts": counts or None,
        "serving_version": point.get("versionId"),
    }


# --- evaluate ------------------------------------------------------------------------------------------
def evaluate(target, plan, captured, submitted, waited, **context: Any) -> dict[str, Any]:
    """Score the held-out set against the new model and run every gate; the branch decides from this only."""
    if plan.get("dry_run") or not captured:
        # No rollback point means `capture` did not finish, so nothing was changed and nothing is restored.
        raise AirflowSkipException("dry run" if plan.get("dry_run") else "no rollback point: nothing was changed")
    t = Target.from_dict(target)
    folder = _run_dir(context, target)
    if not waited or waited.get("state") != "succeeded":
        state = (waited or {}).get("state", "not run")
        reason = f"training {state}: {(waited or {}).get('reason') or 'no model to evaluate'}"
        audit(context, "validation_failed", plan, target, reason=reason, cognigy_job_id=(waited or {}).get("job_id"))
        return {"passed": False, "training_state": state, "reason": reason, "summary": {}, "artifacts": {}}
    client = CognigyHook(plan["conn_id"], plan.get("requests_per_second")).get_client()
    held = dataset.held_out(t.locale, plan["request"]["heldOut"]["perIntent"])
    version = waited.get("version_id")
    predictions, seconds = score_utterances(
        held, lambda s: client.score(t, s, version_id=version), plan["request"]["heldOut"]["threshold"]
    )
    save_predictions(folder / "challenger_predictions.jsonl", predictions)
    champion = load_predictions(Path(captured["champion_predictions_path"]))
    feedback = client.platform_feedback(t, version)
    counts = submitted.get("training_counts") or captured.get("serving_counts") or {}
    report = evaluate_gates(
        predictions, champion, dataset.intents(t.locale), counts, feedback, GateConfig(**plan["gates"])
    )
    paths = write_gate_report(report, folder / "report")
    summary = report.summary()
    event = "validation_passed" if report.passed else "validation_failed"
    audit(
        context,
        event,
        plan,
        target,
        cognigy_job_id=waited["job_id"],
        metrics=summary,
        accuracy_delta=summary.get("accuracy_delta"),
        latency_seconds=waited.get("latency_seconds"),
        gate_report=str(paths["gate_report.json"]) if "gate_report.json" in paths else None,
    )
    return {
        "passed": report.passed,
        "training_state": "succeeded",
        "summary": summary,
        "reason": "all blocking gates passed" if report.passed else f"failed: {', '.join(report.failed_gates)}",
        "eval_seconds": round(seconds, 2),
        "artifacts": {k: str(v) for k, v in paths.items()},
    }


def decide(evaluated: dict[str, Any], group: str, **context: Any) -> str:
    """Branch on the gate report only: promote (MLflow sync) or roll back."""
    return f"{group}.mlflow_sync" if evaluated and evaluated.get("passed") else f"{group}.rollback"


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


def build_payload(context, target, plan, captured, submitted, waited, evaluated, rolled_back) -> SyncPayload:
    """Everything MLflow gets for one DAG run and target: params, metrics, tags, artifacts, registry action."""
    ti = context["ti"]
    t = Target.from_dict(target)
    summary = (evaluated or {}).get("summary") or {}
    trained = (waited or {}).get("state") == "succeeded"
    promoted = bool(evaluated and evaluated.get("passed"))
    outcome = "promoted" if promoted else ("rejected" if trained else f"training_{(waited or {}).get('state')}")
    if not promoted:  # rolled_back is None when the rollback task failed
        outcome += "_rolled_back" if (rolled_back or {}).get("verified") else "_rollback_unverified"
    counts = (submitted or {}).get("training_counts") or (captured or {}).get("serving_counts") or {}
    metrics = {
        "training_latency_seconds": (waited or {}).get("latency_seconds"),
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
        "eval_seconds": (evaluated or {}).get("eval_seconds"),
        "champion_eval_seconds": (captured or {}).get("champion_eval_seconds"),
        "gates_failed": len(summary["failed_gates"]) if "failed_gates" in summary else None,
    }
    report_file = ((evaluated or {}).get("artifacts") or {}).get("gate_report.json")
    if report_file and Path(report_file).exists():
        full = json.loads(Path(report_file).read_text())
        for intent, row in (full.get("metrics", {}).get("per_intent") or {}).items():
            for name in ("precision", "recall", "f1", "support"):
                metrics[_metric_key("intent", intent, name)] = row.get(name)
    artifacts = {name: path for name, path in ((evaluated or {}).get("artifacts") or {}).items()}
    artifacts["request.json"] = plan["request_path"]  # the canonical JSON of the whole request
    if captured:
        artifacts["rollback_point.json"] = captured["rollback_point_path"]
    params = {**json_params(plan), "target.locale": t.locale}
    job_id = (waited or submitted or {}).get("job_id")
    version_id = (waited or {}).get("version_id") or ""
    gate_result = "passed" if promoted else (evaluated or {}).get("reason", "not evaluated")
    tags = {
        "model_id": t.model_id, "flow_id": t.flow_id, "project_id": t.project_id, "locale": t.locale,
        "cognigy_task_id": job_id or "", "cognigy_version_id": version_id,
        "retrain_trigger": retrain_trigger(context) if context.get("dag_run") else plan["retrain_trigger"],
        "status": outcome, "request_hash": plan["request_hash"],
        "airflow_dag_id": ti.dag_id, "airflow_run_id": ti.run_id,
        "airflow_run_url": airflow_run_url(ti.dag_id, ti.run_id),
        "rollback_verified": str(bool(rolled_back and rolled_back.get("verified"))).lower(),
        "gate_result": gate_result[:MAX_TAG_VALUE_LENGTH],
    }  # fmt: skip
    registry = None
    if trained and job_id:
        registry = RegistryAction(
            model_name=registry_model_name(t),
            source=f"cognigy://{t.project_id}/{t.flow_id}/{t.locale}/{version_id or job_id}",
            version_key=job_id,
            tags={
                "cognigy_task_id": job_id,
                "cognigy_version_id": version_id,
                "request_hash": plan["request_hash"],
                "gate_result": gate_result[:250],
                "airflow_run_url": tags["airflow_run_url"],
            },
            promote=promoted,
            decided_at=(submitted or {}).get("submitted_at"),
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
    )


def registry_model_name(t: Target) -> str:
    """Registered model of one flow and locale: ``cognigy-<flowId>-<locale>``."""
    return f"cognigy-{t.flow_id}-{t.locale}"


def json_params(plan: dict[str, Any]) -> dict[str, str]:
    from include.retrain_request import RetrainRequest

    return RetrainRequest.model_validate(plan["request"]).flat_params()


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI ([api] base_url)."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def _metrics_summary(metrics: dict[str, float]) -> dict[str, float]:
    """The run-level metrics (no per-intent rows) for an audit record."""
    return {k: v for k, v in metrics.items() if not k.startswith("intent.")}


def mlflow_sync(target, plan, captured, submitted, waited, evaluated, rolled_back, **context: Any) -> dict[str, Any]:
    """Record this retrain in MLflow (one run per DAG run and target, found again on retry).

    The payload is written to a durable outbox first; when MLflow stays down past the task's retries the run
    still ends, the payload waits in the outbox, and the `cognigy_mlflow_resync` DAG pushes it later.
    """
    ti = context["ti"]
    payload = build_payload(context, target, plan, captured, submitted, waited, evaluated, rolled_back)
    outbox = Outbox(settings.outbox_dir())
    entry = outbox.put(payload)
    common = {
        "run_key": payload.run_key,
        "cognigy_job_id": payload.tags["cognigy_task_id"] or None,
        "cognigy_version_id": payload.tags["cognigy_version_id"] or None,
        "latency_seconds": payload.metrics.get("training_latency_seconds"),
        "accuracy_delta": payload.metrics.get("accuracy_delta"),
        "mlflow_status": payload.status,
        "retrain_outcome": payload.tags["status"],
    }
    secrets: list[str] = []
    try:
        uri, auth, secrets = mlflow_target(plan["mlflow_conn_id"])
        configure_client()
        result = sync(payload, uri, auth=auth)
    except Exception as exc:
        message = redact_text(f"{type(exc).__name__}: {exc}", secrets)[:500]
        if ti.try_number <= getattr(ti, "max_tries", 0):  # Airflow will try again
            context["task"].log.warning(
                "MLflow sync failed (try %s of %s): %s", ti.try_number, ti.max_tries + 1, message
            )
            raise RuntimeError(f"MLflow sync failed: {message}") from None
        audit(context, "mlflow_sync_deferred", plan, target, **common, outbox_entry=str(entry), error=message)
        context["task"].log.error("MLflow unreachable after %s tries; the record waits in %s", ti.try_number, entry)
        return {"synced": False, "deferred": True, "run_key": payload.run_key, "outbox_entry": str(entry)}
    outbox.done(payload.run_key)
    audit(
        context,
        "mlflow_synced",
        plan,
        target,
        **common,
        **audit_fields(payload, result),
    )
    return {
        "synced": True,
        "run_id": result.run_id,
        "run_url": result.run_url,
        "model_version": result.model_version,
        "champion_version": result.champion_version,
    }


# --- final audit ---------------------------------------------------------------------------------------
def finalize(target, plan, captured, submitted, waited, evaluated, rolled_back, synced, **context: Any) -> dict:
    """Write the retrain's closing audit record, then fail the run if training or rollback failed."""
    training = (waited or {}).get("state")
    promoted = bool(evaluated and evaluated.get("passed"))
    if plan and plan.get("dry_run"):
        outcome = "dry_run"
    elif promoted:
        outcome = "promoted"
    elif rolled_back and rolled_back.get("verified"):
        outcome = "rejected_rolled_back" if training == "succeeded" else f"training_{training}_rolled_back"
    else:
        outcome = "incomplete"
    summary = (evaluated or {}).get("summary") or {}
    record = audit(
        context,
        "retrain_completed",
        plan,
        target,
        outcome=outcome,
        training_state=training,
        cognigy_job_id=(waited or submitted or {}).get("job_id"),
        latency_seconds=(waited or {}).get("latency_seconds"),
        metrics=summary,
        accuracy_delta=summary.get("accuracy_delta"),
        gate_reason=(evaluated or {}).get("reason"),
        mlflow_run_id=(synced or {}).get("run_id"),
        mlflow_deferred=bool((synced or {}).get("deferred")),
        rollback_verified=bool(rolled_back and rolled_back.get("verified")),
    )
    result = {
        "outcome": outcome,
        "audit_seq": record.get("seq"),
        "audit_path": str(settings.audit_path()),
        "job_id": (waited or submitted or {}).get("job_id"),
        "training_state": training,
        "latency_seconds": (waited or {}).get("latency_seconds"),
        "summary": summary,
        "mlflow_run_id": (synced or {}).get("run_id"),
        "mlflow_run_url": (synced or {}).get("run_url"),
        "target": target,
    }
    Path(_run_dir(context, target) / "outcome.json").write_text(json.dumps(result, indent=2))
    if outcome == "incomplete" or (training and training != "succeeded"):
        raise AirflowFailException(
            f"retrain of {Target.from_dict(target).key} ended as {outcome} "
            f"(training {training}); see the audit log {settings.audit_path()}"
        )
    return result
