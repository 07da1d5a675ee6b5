"""Write audit events with the Airflow identity of the task that caused them.

Every record carries the same governance fields, whatever the event (``null`` = not known at that step):
``ts`` (UTC), ``dag_id``/``run_id``/``task_id``/``map_index``/``try_number``, ``run_type`` and ``triggered_by``
(``schedule`` or ``user:<name>``), ``request_hash``, ``target`` (Cognigy project/flow/locale/model ids),
``cognigy_job_id``, ``metrics`` (the gate summary), ``latency_seconds`` (training), ``accuracy_delta``
(challenger − champion) and ``outcome``.

Facts learnt by an earlier task of the same run and target (the retrain's Cognigy task id, the metrics, the
training latency) are carried into later records, so a ``rollback_verified`` record alone tells which training
and which numbers it is about. They are kept in ``facts.json`` in the run's folder (per DAG run and target).
Rollback events may name their own Cognigy task (the restoring training) but never replace those facts.

The chain is keyed (HMAC-SHA256) with the password of the Airflow connection ``cognigy_audit_key`` (id from
``COGNIGY_RETRAIN_AUDIT_KEY_CONN_ID``), looked up here through the secrets backend and handed to the log; it is never
written beside the log nor logged. Without that connection the records are unkeyed (not tamper-evident, and
`verify` says so). Each task anchors the last record it wrote outside the log, in its XCom ``audit_anchor``
(``{"seq", "hash", "event", "key_id"}``).
"""

from __future__ import annotations

import os
from typing import Any

from include import settings
from include.cognigy.model import Target
from include.records.audit import EVENTS, AuditKey, AuditLog
from include.records.redaction import register_secret
from include.state import state_store

AUDIT_KEY_CONN_ID = "cognigy_audit_key"
AUDIT_ANCHOR_XCOM = "audit_anchor"
SINGLE_HOST_ENV = "COGNIGY_RETRAIN_SINGLE_HOST"
_KEYS: dict[str, AuditKey | None] = {}

TARGET_IDS = ("project_id", "flow_id", "locale", "model_id")
# Governance fields present in every record; carried forward within a run and target when a task knows them.
CARRIED_FIELDS = ("cognigy_job_id", "cognigy_version_id", "metrics", "latency_seconds", "accuracy_delta")
STANDARD_FIELDS = (*CARRIED_FIELDS, "outcome")


def run_type(context: Any) -> str:
    """The DAG run's type as plain text: scheduled, manual, backfill, asset_triggered, ..."""
    value = getattr(context["dag_run"], "run_type", "") or ""
    return str(getattr(value, "value", value))  # the Task SDK's enum prints as 'DagRunType.SCHEDULED'


def triggered_by(context: Any) -> str:
    """'schedule' for scheduled runs and backfills, 'asset' for asset-triggered runs, else 'user:<name>'."""
    kind = run_type(context)
    if kind in ("scheduled", "backfill"):
        return "schedule"
    if kind.startswith("asset"):
        return "asset"
    user = getattr(context["dag_run"], "triggering_user_name", None)
    return f"user:{user}" if user else "manual"


def retrain_trigger(context: Any) -> str:
    """MLflow tag ``retrain_trigger``: automated (schedule, backfill, asset) or manual (a person). A run of a fleet
    night (its `fleet` param, set by `cognigy_nlu_fleet`) is what started the night."""
    night = (context.get("params") or {}).get("fleet") or {}
    if night.get("trigger"):
        return night["trigger"]
    return "manual" if triggered_by(context).startswith(("user:", "manual")) else "automated"


def _target_ids(plan: dict[str, Any] | None, target: dict[str, Any] | None) -> dict[str, Any] | None:
    if target:
        return {k: target[k] for k in TARGET_IDS if k in target}
    request = (plan or {}).get("request") or {}
    if not request:
        return None
    return {
        "project_id": request.get("projectId"),
        "flow_id": request.get("flowId"),
        "locales": request.get("locales"),
        "model_id": request.get("modelId"),
    }


def _facts_file(ti: Any, plan: dict[str, Any] | None, target: dict[str, Any]) -> Any:
    attempt = (plan or {}).get("run_attempt", "")
    return settings.run_dir(ti.dag_id, ti.run_id, Target.from_dict(target).key, attempt) / "facts.json"


def _carry(
    ti: Any, event: str, plan: dict[str, Any] | None, target: dict[str, Any] | None, fields: dict[str, Any]
) -> dict[str, Any]:
    """Fill the carried fields from earlier records of this run and target; remember the retrain's new ones."""
    if not target:
        return {}
    path = _facts_file(ti, plan, target)
    try:
        facts = state_store.read_json(path) or {}
    except ValueError:
        facts = {}
    learnt = {} if event.startswith("rollback") else {k: v for k, v in fields.items() if _known(k, v)}
    if learnt:
        facts.update(learnt)
        state_store.write_json(path, facts, default=str)
    return facts


def _known(key: str, value: Any) -> bool:
    return key in CARRIED_FIELDS and value not in (None, {}, "")


def audit(
    context: Any,
    event: str,
    plan: dict[str, Any] | None = None,
    target: dict | None = None,
    *,
    carry: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """Append one record for ``event`` (see the module docstring for the fields every record has).

    ``carry=False`` for a record about another DAG run (the MLflow resync): nothing is read or remembered.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}: add it to include.records.audit.EVENTS")
    ti = context["ti"]
    record: dict[str, Any] = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "run_type": run_type(context),
        "triggered_by": triggered_by(context),
        "request_hash": (plan or {}).get("request_hash"),
        "target": _target_ids(plan, target),
    }
    facts = _carry(ti, event, plan, target, fields) if carry else {}
    for key in CARRIED_FIELDS:
        record[key] = facts.get(key)
    record["outcome"] = EVENTS[event][0]
    # A caller's empty value does not hide a fact an earlier task of the run already recorded.
    record.update({k: v for k, v in fields.items() if k not in CARRIED_FIELDS or _known(k, v)})
    written = audit_log().append(event, **record)
    anchor = {"seq": written["seq"], "hash": written["hash"], "event": event, "key_id": written.get("key_id")}
    if callable(getattr(ti, "xcom_push", None)):  # the last record this task wrote, kept outside the log
        ti.xcom_push(AUDIT_ANCHOR_XCOM, anchor)
    return written


def audit_key_conn_id() -> str:
    return os.environ.get("COGNIGY_RETRAIN_AUDIT_KEY_CONN_ID", "").strip() or AUDIT_KEY_CONN_ID


def audit_key() -> AuditKey | None:
    """The chain's HMAC key: the password of the Airflow connection ``cognigy_audit_key`` (any secrets backend);
    None when there is no such connection (the records are then unkeyed). Looked up once per process."""
    conn_id = audit_key_conn_id()
    if conn_id not in _KEYS:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            _KEYS[conn_id] = None
        else:
            if not conn.password:
                raise ValueError(f"the Airflow connection {conn_id!r} has no password: the audit key goes there")
            register_secret(conn.password)
            _KEYS[conn_id] = AuditKey(conn.password)
    return _KEYS[conn_id]


def refuse_per_host_stores(cognigy_conn_id: str | None = None) -> None:
    """At start-up (validate; fails the task, no retry): with a remote state store (``COGNIGY_RETRAIN_STATE_URI``),
    the audit trail and the tenant's rate budget must be shared too, not files each worker host keeps on its own.
    ``COGNIGY_RETRAIN_SINGLE_HOST=true`` says every Airflow process runs on one machine (then the files are shared)."""
    if not os.environ.get("COGNIGY_RETRAIN_STATE_URI", "").strip() or settings.state_uri().startswith("file:"):
        return
    if os.environ.get(SINGLE_HOST_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    problems = []
    if settings.audit_store()[0] == "file":
        problems.append(
            "the audit trail would be a JSON-lines file on each worker host: set COGNIGY_RETRAIN_AUDIT_URL or "
            "COGNIGY_RETRAIN_AUDIT_CONN_ID (docs/audit-database.md)"
        )
    if cognigy_conn_id:
        from airflow.sdk import BaseHook

        from include.cognigy.rate_limit import storage_url

        storage = storage_url(BaseHook.get_connection(cognigy_conn_id).extra_dejson.get("rate_limit_storage"))
        if str(storage).startswith(("sqlite", "memory")):
            problems.append(
                "the tenant's rate budget would be a SQLite file on each worker host: set COGNIGY_RATE_LIMIT_STORAGE "
                "or the connection extra rate_limit_storage to redis://... (docs/operations.md)"
            )
    if problems:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"COGNIGY_RETRAIN_STATE_URI is {settings.state_uri()!r} (shared by several hosts), but "
            + "; and ".join(problems)
            + f". On one machine only, set {SINGLE_HOST_ENV}=true."
        )


def audit_log() -> Any:
    """The configured audit trail (``settings.audit_store()``): the JSON-lines :class:`AuditLog`, or a
    :class:`include.records.audit_db.DatabaseAuditLog` from a SQLAlchemy URL or an Airflow connection (looked up here).
    Both have ``append(event, **fields) -> dict``."""
    kind, target = settings.audit_store()
    key = audit_key()
    if kind == "file":
        return AuditLog(target, key=key)
    from include.records.audit_db import DatabaseAuditLog, url_from_connection

    if kind == "url":
        return DatabaseAuditLog(target, key=key)
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(target)
    fields = {"host": conn.host, "port": conn.port, "login": conn.login, "schema": conn.schema}
    url = url_from_connection(conn.conn_type, **fields, password=conn.password, extra=conn.extra_dejson)
    return DatabaseAuditLog(url, known_secrets=[conn.password], key=key)
