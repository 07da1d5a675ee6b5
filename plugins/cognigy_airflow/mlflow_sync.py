"""The `mlflow_sync` task: one MLflow run per retrain (params, metrics, tags, artifacts, the registry's version),
through a durable outbox when MLflow is down."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowSkipException
from cognigy_provider.links.cognigy import MlflowRunLink

from cognigy_airflow.auditing import audit, retrain_trigger
from cognigy_airflow.record import PlanFromReference, retrain_record
from cognigy_airflow.run_files import airflow_run_url
from include import settings
from include.cognigy.model import Target
from include.cognigy.training_jobs import SPEC_F1_BASELINE, mlflow_platform_metrics
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
from include.results import Captured, RetrainRecord, Synced
from include.state import state_store

EXPERIMENT = "cognigy-nlu-retrain"


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
    versions = snapshot_tags(record)  # the snapshot serving now and before, on the run and its registry version
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
        **versions,
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
                **versions,
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
    verdict = record.release_verdict()
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


class MlflowSyncOperator(PlanFromReference, BaseOperator):
    """Record one retrain (DAG run × target) in MLflow; see `record_in_mlflow`. An operator rather than a `@task`
    so its page gets an "MLflow run" button: Airflow 3 stores a link's URL only for links on the operator class."""

    template_fields = ("target", "plan_ref", "rolled_back")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#e2f0d9"
    mlflow_run_url = ""  # read by MlflowRunLink when the task ends

    def __init__(self, *, target: Any, plan: Any, rolled_back: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target, self.plan_ref, self.rolled_back = target, plan, rolled_back

    def execute(self, context: Any) -> dict[str, Any]:
        record = retrain_record(context, self.target, self.plan, rolled_back=self.rolled_back)
        if not record.retrained:
            # Runs ALL_DONE (a failed rollback is recorded too); without a rollback point nothing was retrained.
            raise AirflowSkipException("nothing to record: dry run, unchanged, or the run stopped before any change")
        result = record_in_mlflow(record, **context)
        self.mlflow_run_url = result.run_url or ""
        return result.to_xcom()
