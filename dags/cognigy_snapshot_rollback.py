"""A person switches a bot back to an earlier Cognigy Snapshot from the Airflow UI.

Wiring only: the body is `cognigy_airflow.snapshot_rollback.switch_to_snapshot`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from cognigy_airflow.snapshot_rollback import switch_to_snapshot
from include import defaults

OBJECT_ID = "^[0-9a-f]{24}$"

DOC = """
### Cognigy snapshot rollback
Switches **every** endpoint that serves the flow to the snapshot you name (its id, or its exact name), reads each
endpoint back, and writes a `snapshot_rollback` audit record (who, when, which endpoints, what they served before,
why). Use it when a released snapshot misbehaves in production: the snapshot that served before is named in the
retrain's verdict (`previous`) and in its audit record `snapshot_released`.
"""

with DAG(
    dag_id="cognigy_snapshot_rollback",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "project_id": Param(defaults.DEMO_PROJECT_ID, type="string", pattern=OBJECT_ID, title="Project id"),
        "flow_id": Param(
            defaults.DEMO_FLOW_ID,
            type="string",
            pattern=OBJECT_ID,
            title="Flow id",
            description="Every endpoint serving this flow is switched.",
        ),
        "snapshot": Param("", type="string", minLength=1, title="Snapshot (id or exact name)"),
        "reason": Param("", type="string", minLength=1, title="Why (goes into the audit record)"),
        "cognigy_conn_id": Param("cognigy_default", type="string", title="Cognigy connection id"),
    },
    doc_md=DOC,
    tags=["cognigy", "nlu", "rollback"],
    default_args={"retries": 1},  # switching is repeatable
) as dag:
    task(switch_to_snapshot, task_id="switch_endpoints", doc_md="Switch, read back, audit.")(
        project_id="{{ params.project_id }}",
        flow_id="{{ params.flow_id }}",
        snapshot="{{ params.snapshot }}",
        cognigy_conn_id="{{ params.cognigy_conn_id }}",
        reason="{{ params.reason }}",
    )
