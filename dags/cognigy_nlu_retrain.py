"""Nightly (or on-demand) retraining of Cognigy.AI NLU models with quality gates, staging promotion, rollback,
MLflow and audit. Wiring only: the form is `cognigy_airflow.form`, the task docs are dags/docs/*.md, the task
bodies live in plugins/cognigy_airflow (Airflow-facing) and include/ (domain code)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, TriggerRule, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import steps
from cognigy_airflow.form import PARAMS, doc
from cognigy_airflow.mlflow_operator import MlflowSyncOperator
from cognigy_airflow.operators import (
    CognigyPromoteOperator,
    CognigyRollbackOperator,
    CognigySubmitTrainingOperator,
    CognigyWaitForTrainingOperator,
)
from include.request.fleet import TENANT_POOL

COGNIGY = {"pool": TENANT_POOL}  # concurrency per tenant; deferred waits hold no slot, the budget is shared
# weight_rule "upstream": a target's later steps outrank other targets' earlier ones, so a fleet moves each target
# on (its training overlaps the next captures' scoring) instead of capturing every target first
DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True,
                "weight_rule": "upstream"}  # fmt: skip
ALL_DONE = TriggerRule.ALL_DONE  # these tasks run whatever happened before and skip themselves when not needed

with DAG(
    dag_id="cognigy_nlu_retrain",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    doc_md=doc("cognigy_nlu_retrain"),
    tags=["cognigy", "nlu", "mlops"],
    default_args=DEFAULT_ARGS,
) as dag:
    plan = task(steps.validate, retries=0, doc_md=doc("validate"))()

    @task_group(group_id="retrain")
    def retrain(target: dict, plan: dict) -> None:
        # One line: each task gets its predecessor's typed result (include/results.py); the tasks that run
        # whatever happened before (ALL_DONE) read the earlier results of their target from its record.
        run = {"target": target, "plan": plan}
        captured = task(steps.capture, doc_md=doc("capture"), **COGNIGY)(**run)
        submitted = CognigySubmitTrainingOperator(
            task_id="submit", **run, captured=captured, doc_md=doc("submit"), **COGNIGY
        )
        waited = CognigyWaitForTrainingOperator(
            task_id="wait_for_training", **run, submitted=submitted.output, doc_md=doc("wait_for_training"), **COGNIGY
        )
        evaluated = task(steps.evaluate, trigger_rule=ALL_DONE, doc_md=doc("evaluate"), **COGNIGY)(
            **run, waited=waited.output
        )
        promoted = CognigyPromoteOperator(
            task_id="promote", **run, evaluated=evaluated, doc_md=doc("promote"), **COGNIGY
        )
        rolled = CognigyRollbackOperator(
            task_id="rollback",
            **run,
            promoted=promoted.output,
            trigger_rule=ALL_DONE,
            doc_md=doc("rollback"),
            **COGNIGY,
        )
        synced = MlflowSyncOperator(
            task_id="mlflow_sync", **run, rolled_back=rolled.output, trigger_rule=ALL_DONE, doc_md=doc("mlflow_sync")
        )
        task(steps.finalize, trigger_rule=ALL_DONE, retries=0, doc_md=doc("finalize"))(**run, synced=synced.output)

    targets = task(steps.list_targets, task_id="targets", doc_md=doc("targets"))(plan)
    retrain.expand_kwargs(targets)  # each element: {"target": ..., "plan": that target's own plan}

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, doc_md=doc("watcher"))
    def watcher() -> None:
        raise AirflowFailException("a task failed; see the failed task's log and the audit trail")

    list(dag.tasks) >> watcher()
