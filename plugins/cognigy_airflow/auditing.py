"""Write audit events with the Airflow identity of the task that caused them."""

from __future__ import annotations

from typing import Any

from include import settings
from include.audit import AuditLog


def triggered_by(context: Any) -> str:
    """'schedule' for scheduled runs, else the user (or 'manual'/'api') who triggered the run."""
    dag_run = context["dag_run"]
    run_type = str(getattr(dag_run, "run_type", "") or "")
    if "scheduled" in run_type or "backfill" in run_type:
        return "schedule"
    user = getattr(dag_run, "triggering_user_name", None)
    return f"user:{user}" if user else "manual"


def audit(context: Any, event: str, plan: dict[str, Any] | None = None, target: dict | None = None, **fields: Any):
    ti = context["ti"]
    record = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "triggered_by": triggered_by(context),
    }
    if plan:
        record["request_hash"] = plan.get("request_hash")
    if target:
        record["target"] = {k: target[k] for k in ("project_id", "flow_id", "locale", "model_id") if k in target}
    record.update(fields)
    return AuditLog(settings.audit_path()).append(event, **record)
