"""Bodies of the DAG's Python tasks. Each reads what it needs, calls domain code in include/, audits, and
returns a small JSON-safe dict for XCom (never a secret, never a large payload: files hold those)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow.auditing import audit, triggered_by
from cognigy_airflow.hooks import CognigyHook
from include import dataset, settings
from include.cognigy.model import Target
from include.gate_report import write_gate_report
from include.gates import GateConfig, evaluate_gates
from include.held_out import load_predictions, save_predictions, score_utterances
from include.mlflow_sync import MlflowAuth, RegistryAction, SyncPayload, configure_client, sync
from include.outbox import Outbox
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
    """Validate the run's request before anything is sent anywhere; the plan every later task follows."""
    params = dict(context["params"])
    raw = params.get("request_json") or request_from_params(params)
    errors: list[str] = []
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
    config = CognigyHook(params["cognigy_conn_id"]).get_config()
    if request and config.dialect == "training-jobs" and len(request.locales) != 1:
        errors.append("locales: the training-jobs dialect trains one model (modelId) per run; give one locale")
    if errors or request is None or gates is None:
        audit(context, "request_rejected", None, None, errors=errors)
        raise AirflowFailException("retraining request is invalid:\n" + "\n".join(f"  - {e}" for e in errors))

    deadline, warning = request.training_deadline_seconds(config.dialect)
    plan = {
        "request": request.model_dump(mode="json"),
        "request_hash": request.sha256,
        "spec_body": request.spec_body(),
        "targets": [t.to_dict() for t in request.targets()],
        "deadline_seconds": deadline,
        "warnings": [warning] if warning else [],
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
    for warning in plan["warnings"]:
        context["ti"].log.warning(warning) if hasattr(context["ti"], "log") else None
    request_file = settings.run_dir(context["ti"].dag_id, context["ti"].run_id, "_request") / "request.json"
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
    )
    return plan


def list_targets(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return plan["targets"]


# --- capture: rollback point + champion evaluation -----------------------------------------------------
def capture(target: dict[str, Any], plan: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Before any change: save what serves now, and score the held-out set against it (the champion)."""
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
    held = dataset.held_out(t.locale, plan["request"]["heldOut"]["perIntent"])
    predictions, seconds = score_utterances(held, lambda s: client.score(t, s), plan["request"]["heldOut"]["threshold"])
    save_predictions(champion_file, predictions)
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
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    uri = conn.host if "://" in (conn.host or "") else f"{conn.schema or 'http'}://{conn.host}"
    if conn.port:
        uri = f"{uri}:{conn.port}"
    token = extra.get("token")
    auth = MlflowAuth(
        username=conn.login or None,
        password=conn.password or None,
        token=token,
        insecure_tls=bool(extra.get("insecure_tls", False)),
        ca_bundle=extra.get("ca_bundle"),
    )
    return uri.rstrip("/"), auth, auth.secret_values()


def build_payload(context, target, plan, captured, submitted, waited, evaluated, rolled_back) -> SyncPayload:
    ti = context["ti"]
    t = Target.from_dict(target)
    summary = (evaluated or {}).get("summary") or {}
    trained = (waited or {}).get("state") == "succeeded"
    promoted = bool(evaluated and evaluated.get("passed"))
    outcome = "promoted" if promoted else ("rejected" if trained else f"training_{(waited or {}).get('state')}")
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
        "dataset_size": sum(((submitted or {}).get("training_counts") or {}).values()) or None,
        "eval_seconds": (evaluated or {}).get("eval_seconds"),
        "champion_eval_seconds": (captured or {}).get("champion_eval_seconds"),
    }
    report_file = ((evaluated or {}).get("artifacts") or {}).get("gate_report.json")
    if report_file and Path(report_file).exists():
        full = json.loads(Path(report_file).read_text())
        for intent, row in (full.get("metrics", {}).get("per_intent") or {}).items():
            metrics[f"intent.{intent}.f1"] = row.get("f1")
            metrics[f"intent.{intent}.recall"] = row.get("recall")
    artifacts = {name: path for name, path in ((evaluated or {}).get("artifacts") or {}).items()}
    artifacts["request.json"] = plan["request_path"]
    if captured:
        artifacts["rollback_point.json"] = captured["rollback_point_path"]
    params = {**json_params(plan), "target.locale": t.locale}
    job_id = (waited or submitted or {}).get("job_id")
    tags = {
        "model_id": t.model_id, "flow_id": t.flow_id, "project_id": t.project_id, "locale": t.locale,
        "cognigy_job_id": job_id or "", "cognigy_version_id": (waited or {}).get("version_id") or "",
        "retrain_trigger": plan["retrain_trigger"], "status": outcome, "request_hash": plan["request_hash"],
        "airflow_dag_id": ti.dag_id, "airflow_run_id": ti.run_id,
        "airflow_run_url": airflow_run_url(ti.dag_id, ti.run_id),
        "rollback_verified": str(bool(rolled_back and rolled_back.get("verified"))),
        "gate_result": "passed" if promoted else (evaluated or {}).get("reason", "not evaluated"),
    }  # fmt: skip
    registry = None
    if trained and job_id:
        registry = RegistryAction(
            model_name=f"cognigy-{t.flow_id}-{t.locale}",
            source=f"cognigy://{t.project_id}/{t.flow_id}/{t.locale}/{job_id}",
            version_key=job_id,
            tags={"cognigy_job_id": job_id, "request_hash": plan["request_hash"], "gate": tags["gate_result"][:250]},
            promote=promoted,
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


def json_params(plan: dict[str, Any]) -> dict[str, str]:
    from include.retrain_request import RetrainRequest

    return RetrainRequest.model_validate(plan["request"]).flat_params()


def airflow_run_url(dag_id: str, run_id: str) -> str:
    import os
    from urllib.parse import quote

    base = os.environ.get("AIRFLOW__API__BASE_URL", "http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def mlflow_sync(target, plan, captured, submitted, waited, evaluated, rolled_back, **context: Any) -> dict[str, Any]:
    """Record this retrain in MLflow (one run per DAG run and target, found again on retry).

    The payload is written to a durable outbox first; when MLflow stays down past the task's retries the run
    still ends, the payload waits in the outbox, and the `cognigy_mlflow_resync` DAG pushes it later.
    """
    ti = context["ti"]
    payload = build_payload(context, target, plan, captured, submitted, waited, evaluated, rolled_back)
    outbox = Outbox(settings.outbox_dir())
    outbox.put(payload)
    uri, auth, _ = mlflow_target(plan["mlflow_conn_id"])
    configure_client()
    try:
        result = sync(payload, uri, auth=auth)
    except Exception as exc:
        if ti.try_number <= getattr(ti, "max_tries", 0):  # Airflow will try again
            raise
        audit(
            context,
            "mlflow_sync_deferred",
            plan,
            target,
            run_key=payload.run_key,
            outbox=str(settings.outbox_dir()),
            error=type(exc).__name__,
        )
        return {"synced": False, "deferred": True, "run_key": payload.run_key}
    outbox.done(payload.run_key)
    context["task"].mlflow_run_url = result.run_url
    audit(
        context,
        "mlflow_synced",
        plan,
        target,
        mlflow_run_id=result.run_id,
        mlflow_run_url=result.run_url,
        model_version=result.model_version,
        champion_version=result.champion_version,
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


def _elapsed(since: float) -> float:
    return round(time.time() - since, 3)
