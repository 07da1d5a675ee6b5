"""A night of the fleet: one `cognigy_nlu_retrain` run per bot and locale, then one summary of the night.
Wiring only: the bodies are `cognigy_airflow.fleet`."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import fleet
from cognigy_airflow.form import PARAMS, TARGET_FIELDS, doc

with DAG(
    dag_id=fleet.FLEET_DAG_ID,
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={name: param for name, param in PARAMS.items() if name not in (*TARGET_FIELDS, "fleet")},
    doc_md=doc("cognigy_nlu_fleet"),
    tags=["cognigy", "nlu", "mlops", "fleet"],
) as dag:
    runs = task(fleet.plan_night, retries=0, doc_md=doc("plan_night"))()
    retrained = TriggerDagRunOperator.partial(
        task_id="retrain",
        trigger_dag_id=fleet.RETRAIN_DAG_ID,
        wait_for_completion=True,
        deferrable=True,  # the wait holds no worker slot
        poke_interval=10,
        allowed_states=["success"],
        failed_states=["failed"],
        retries=0,  # the run id is fixed: a second try could only find the run the first one triggered
        map_index_template="{{ task.note.split(' (fleet night')[0] }}",
        doc_md=doc("retrain"),
    ).expand_kwargs(runs)
    retrained >> task(fleet.morning_summary, trigger_rule=TriggerRule.ALL_DONE, retries=0,
                      execution_timeout=timedelta(minutes=10), doc_md=doc("morning_summary"))(runs)  # fmt: skip

    # A DAG run's state is its leaf tasks': without this, the all-done summary would make a night with a failed
    # retrain run look successful.
    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, doc_md=doc("watcher"))
    def watcher() -> None:
        raise AirflowFailException("a retrain run of the night failed (or a task of the night did); see `retrain`")

    list(dag.tasks) >> watcher()
