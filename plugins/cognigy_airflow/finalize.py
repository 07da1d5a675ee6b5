"""The `audit` task: the retrain's closing audit record, what production now serves remembered, the alert sent,
and the run failed on the failing outcomes."""

from __future__ import annotations

import json
import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import notify
from cognigy_airflow.auditing import audit
from cognigy_airflow.record import resolve_plan, retrain_record
from cognigy_airflow.run_files import airflow_run_url, run_folder
from include import settings
from include.cognigy.model import Target
from include.results import RetrainRecord, meaning, run_fails
from include.state import state_store
from include.state.target_memory import champion_key, record_trained, store_champion


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
    verdict = record.release_verdict()
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
        release=verdict,
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
        "release": verdict,
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
