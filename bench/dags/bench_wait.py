"""Benchmark DAGs (not part of the product): one training, then three ways to wait for it.

- bench_wait_deferrable: the provider's CognigyTrainingSensor (deferrable; CognigyJobTrigger polls).
- bench_wait_poke: a sensor polling CognigyClient.job_status every 5 s in poke mode (holds its worker slot).
- bench_wait_reschedule: the same sensor in reschedule mode (frees the slot between pokes).
Used by bench.slot_seconds with AIRFLOW__CORE__DAGS_FOLDER pointing here.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import DAG, task
from airflow.sdk.bases.sensor import BaseSensorOperator
from cognigy_provider.hooks.cognigy import CognigyHook
from cognigy_provider.sensors.cognigy import CognigyTrainingSensor

from include import defaults
from include.cognigy.model import Target

CONN_ID = "cognigy_default"
POKE_SECONDS = 5.0  # the specification's base poll interval
TARGET = Target(defaults.DEMO_PROJECT_ID, defaults.DEMO_FLOW_ID, "en-US", defaults.DEMO_MODEL_ID)
JOB_ID = "{{ ti.xcom_pull(task_ids='submit')['job_id'] }}"
SUBMITTED_AT = "{{ ti.xcom_pull(task_ids='submit')['submitted_at'] }}"


class PollingTrainingSensor(BaseSensorOperator):
    """Done when the Cognigy task reaches a terminal status (the classic sensor the deferral replaces)."""

    template_fields = ("job_id",)

    def __init__(self, *, job_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id

    def poke(self, context: Any) -> bool:
        status = CognigyHook(CONN_ID).get_client().job_status(self.job_id)
        self.log.info("training %s: %s %s", self.job_id, status.raw_status, status.progress)
        return status.terminal


@task
def submit() -> dict[str, Any]:
    client = CognigyHook(CONN_ID).get_client()
    submitted_at = time.time()
    status = client.start_training(TARGET, mode="full", spec_body={}, idempotency_key=f"bench-{submitted_at}")
    return {"job_id": status.job_id, "submitted_at": submitted_at, "version_id": status.version_id}


for variant in ("deferrable", "poke", "reschedule"):
    with DAG(f"bench_wait_{variant}", schedule=None, catchup=False, tags=["bench"]) as dag:
        submitted = submit()
        if variant == "deferrable":
            wait = CognigyTrainingSensor(
                task_id="wait", cognigy_conn_id=CONN_ID, dialect="rest-v2", job_id=JOB_ID, started_at=SUBMITTED_AT,
                deadline_seconds=1800, poll_min_seconds=2.0, poll_max_seconds=30.0,
            )  # fmt: skip
        else:
            wait = PollingTrainingSensor(
                task_id="wait", job_id=JOB_ID, mode=variant, poke_interval=POKE_SECONDS, timeout=1800
            )
        submitted >> wait
    globals()[dag.dag_id] = dag
