"""Body of the `cognigy_mlflow_resync` DAG: push the MLflow outbox, audit each pushed payload.

A retrain whose MLflow sync failed on every try left its payload in the outbox (`mlflow_sync_deferred`).
:meth:`include.records.outbox.Outbox.resync` pushes each one with the same idempotent sync (the MLflow run is
found again by its run key, the model version by its Cognigy task id), so pushing twice creates nothing new.
Entries are leased (see :mod:`include.records.outbox`): one that the retrain's own ``mlflow_sync`` task (or another
resync) is pushing right now is skipped and counted as ``in_flight``, never pushed twice at once.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException

from cognigy_airflow.auditing import audit
from include import settings
from include.records.mlflow_tracking import SyncPayload, SyncResult, audit_fields, configure_client
from include.records.outbox import Outbox

TARGET_TAGS = ("project_id", "flow_id", "locale", "model_id")


def resync_outbox(conn_id: str = "mlflow_default", **context: Any) -> dict[str, Any]:
    """Push every pending payload to the MLflow of ``conn_id``; fail (so Airflow retries) if some stay."""
    from cognigy_airflow.mlflow_sync import mlflow_target

    outbox = Outbox(settings.outbox_dir())
    pending = outbox.pending()
    log = context["task"].log
    if not pending:
        log.info("outbox %s is empty: nothing to push", outbox.dir)
        return {"pending": 0, "pushed": 0, "left": 0, "in_flight": 0}
    uri, auth, _ = mlflow_target(conn_id)
    configure_client()

    def audited(payload: SyncPayload, result: SyncResult) -> None:
        tags, metrics = payload.tags, payload.metrics
        audit(
            context,
            "mlflow_synced",
            None,
            {k: tags[k] for k in TARGET_TAGS if k in tags},
            carry=False,
            via="outbox resync",
            run_key=payload.run_key,
            origin_dag_id=tags.get("airflow_dag_id"),
            origin_run_id=tags.get("airflow_run_id"),
            request_hash=tags.get("request_hash"),
            cognigy_job_id=tags.get("cognigy_job_id") or tags.get("cognigy_task_id") or None,  # older entries
            cognigy_version_id=tags.get("cognigy_version_id") or None,
            metrics={k: v for k, v in metrics.items() if not k.startswith("intent.")},
            latency_seconds=metrics.get("training_latency_seconds"),
            accuracy_delta=metrics.get("accuracy_delta"),
            retrain_outcome=tags.get("status"),
            mlflow_status=payload.status,
            **audit_fields(payload, result),
        )
        log.info("pushed %s -> MLflow run %s", payload.run_key, result.run_url)

    results = outbox.resync(uri, auth, on_synced=audited)
    # An entry another process holds a lease on is being pushed right now (the retrain's own mlflow_sync task,
    # or another resync): it is not this run's failure, and the next resync takes it if it is still there.
    in_flight = set(outbox.in_flight())
    left = [p for p in outbox.pending() if p.run_key not in in_flight]
    summary = {"pending": len(pending), "pushed": len(results), "left": len(left), "in_flight": len(in_flight)}
    if in_flight:
        log.info("being pushed by another process, left to it: %s", ", ".join(sorted(in_flight)))
    if left:
        raise AirflowException(
            f"{len(left)} MLflow payload(s) could not be pushed and stay in {outbox.dir}: "
            f"{', '.join(p.run_key for p in left)}"
        )
    return summary
