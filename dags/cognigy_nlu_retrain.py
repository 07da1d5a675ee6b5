"""Nightly (or on-demand) retraining of Cognigy.AI NLU models with quality gates, staging promotion, rollback,
MLflow and audit. Wiring only: the form is `cognigy_airflow.form`, the task docs are dags/docs/*.md, the task
bodies live in plugins/cognigy_airflow (Airflow-facing) and include/ (domain code)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, TriggerRule, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import notify, steps
from cognigy_airflow.form import PARAMS, doc
from cognigy_airflow.mlflow_operator import MlflowSyncOperator
from cognigy_airflow.operators import (
    CognigyPromoteOperator,
    CognigyRollbackOperator,
    CognigySnapshotReleaseOperator,
    CognigySubmitTrainingOperator,
    CognigyWaitForTrainingOperator,
)
from include.request.fleet import TENANT_POOL, TENANT_PRIORITY

DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True,
                "weight_rule": "absolute"}  # fmt: skip


def tenant(task_id: str) -> dict:
    """A task that calls Cognigy: in the tenant's pool (concurrency only; a deferred wait holds no slot, the request
    budget is shared), ahead of scoring when it starts or ends a training (TENANT_PRIORITY)."""
    return {"task_id": task_id, "pool": TENANT_POOL, "priority_weight": TENANT_PRIORITY[task_id]}


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
        captured = task(steps.capture, doc_md=doc("capture"), **tenant("capture"))(**run)
        submitted = CognigySubmitTrainingOperator(**run, captured=captured, doc_md=doc("submit"), **tenant("submit"))
        waited = CognigyWaitForTrainingOperator(
            **run, submitted=submitted.output, doc_md=doc("wait_for_training"), **tenant("wait_for_training")
        )
        evaluated = task(steps.evaluate, trigger_rule=ALL_DONE, doc_md=doc("evaluate"), **tenant("evaluate"))(
            **run, waited=waited.output
        )
        promoted = CognigyPromoteOperator(**run, evaluated=evaluated, doc_md=doc("promote"), **tenant("promote"))
        released = CognigySnapshotReleaseOperator(
            **run, promoted=promoted.output, trigger_rule=ALL_DONE, doc_md=doc("release"), **tenant("release")
        )
        rolled = CognigyRollbackOperator(
            **run, promoted=promoted.output, trigger_rule=ALL_DONE, doc_md=doc("rollback"), **tenant("rollback")
        )
        released >> rolled
        synced = MlflowSyncOperator(
            task_id="mlflow_sync", **run, rolled_back=rolled.output, trigger_rule=ALL_DONE, doc_md=doc("mlflow_sync")
        )
        task(steps.finalize, trigger_rule=ALL_DONE, retries=0, doc_md=doc("finalize"))(**run, synced=synced.output)

    targets = task(steps.list_targets, task_id="targets", doc_md=doc("targets"))(plan)
    retrained = retrain.expand_kwargs(targets)  # each element: {"target": ..., "plan": that target's own plan}
    retrained >> task(notify.morning_summary, trigger_rule=ALL_DONE, retries=0)(targets)  # the night's one summary

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, doc_md=doc("watcher"))
    def watcher() -> None:
        raise AirflowFailException("a task failed; see the failed task's log and the audit trail")

    list(dag.tasks) >> watcher()
