"""Maintenance: push MLflow records that waited in the outbox while MLflow was down.

Wiring only: the body is `cognigy_airflow.resync.resync_outbox`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from cognigy_airflow.resync import resync_outbox

DOC = """
### Cognigy MLflow resync
When MLflow was unreachable for every try of a retrain's `mlflow_sync` task, the retrain still finished
(audit event `mlflow_sync_deferred`) and its MLflow record waits in the outbox
(`mlflow_outbox/` in the state store: `$COGNIGY_RETRAIN_STATE_URI`, by default the local
`$COGNIGY_RETRAIN_STATE_DIR`). This DAG pushes every waiting record with the same idempotent
sync (no duplicate runs or model versions) and writes an `mlflow_synced` audit record for each one.
It fails while records remain, so a still-unreachable MLflow shows up as a failed run. A record that a
retrain's own `mlflow_sync` task is pushing at that moment (it holds the entry's lease) is left to it and counted
as `in_flight`: the two never push one record at once.
"""

with DAG(
    dag_id="cognigy_mlflow_resync",
    schedule="*/30 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"mlflow_conn_id": Param("mlflow_default", type="string", description="MLflow connection id.")},
    doc_md=DOC,
    tags=["cognigy", "mlflow", "maintenance"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
) as dag:
    task(resync_outbox, task_id="resync", doc_md="Push the MLflow outbox; audit each pushed record.")(
        conn_id="{{ params.mlflow_conn_id }}"
    )
