"""Retrain one Cognigy.AI bot's NLU model (one flow, one locale) with quality gates, a release that only a passed
model reaches, rollback, MLflow and audit. Wiring only: the form is `cognigy_airflow.form`, the task docs are
dags/docs/*.md, the task bodies live in plugins/cognigy_airflow (Airflow-facing) and include/ (domain code).
Fleets: `cognigy_nlu_fleet` triggers one run of this DAG per bot and locale."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import branches
from cognigy_airflow.approval import CognigyApprovalOperator
from cognigy_airflow.capture import capture
from cognigy_airflow.evaluate import evaluate
from cognigy_airflow.finalize import finalize
from cognigy_airflow.form import PARAMS, doc
from cognigy_airflow.mlflow_sync import MlflowSyncOperator
from cognigy_airflow.promote import CognigyPromoteOperator
from cognigy_airflow.release import CognigySnapshotReleaseOperator
from cognigy_airflow.rollback import CognigyRollbackOperator
from cognigy_airflow.submit import CognigySubmitTrainingOperator
from cognigy_airflow.validate import validate_run
from cognigy_airflow.wait_for_training import WaitForTraining
from include.request.fleet import TENANT_POOL, TENANT_PRIORITY

DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True,
                "weight_rule": "absolute"}  # fmt: skip
RUNS_AT_ONCE = 32  # a fleet night's runs overlap; the pool `cognigy_tenant` and the tenant's budget pace them


def tenant(task_id: str) -> dict:
    """A task that calls Cognigy: in the tenant's pool (concurrency only; a deferred wait holds no slot, the request
    budget is shared), ahead of scoring when it starts or ends a training (TENANT_PRIORITY)."""
    priority = TENANT_PRIORITY[task_id]
    return {"task_id": task_id, "doc_md": doc(task_id), "pool": TENANT_POOL, "priority_weight": priority}


AFTER_ANY = TriggerRule.ALL_DONE  # runs whatever happened before it: a branch that must decide, or the audit
AFTER_BRANCH = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS  # runs on the path a branch took (its siblings skipped)

with DAG(
    dag_id="cognigy_nlu_retrain",
    schedule=None,  # nights are cognigy_nlu_fleet's
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=RUNS_AT_ONCE,
    params=PARAMS,
    doc_md=doc("cognigy_nlu_retrain"),
    tags=["cognigy", "nlu", "mlops"],
    default_args=DEFAULT_ARGS,
) as dag:
    validated = task(validate_run, task_id="validate", retries=0, multiple_outputs=True, doc_md=doc("validate"))()
    run = {"target": validated["target"], "plan": validated["plan"]}

    captured = task(capture, **tenant("capture"))(**run)
    submitted = CognigySubmitTrainingOperator(**run, captured=captured, **tenant("submit"))
    # Not in the tenant pool: it calls Cognigy once, then waits deferred; resuming must not queue for a slot.
    waited = WaitForTraining(
        **run,
        submitted=submitted.output,
        task_id="wait_for_training",
        doc_md=doc("wait_for_training"),
        priority_weight=TENANT_PRIORITY["wait_for_training"],
    )
    evaluated = task(evaluate, **tenant("evaluate"))(**run, waited=waited.output)

    # The gates have spoken: approve | promote -> release | release | rollback | mlflow_sync (branches.py)
    decide = task.branch(branches.decide, trigger_rule=AFTER_ANY, retries=0, doc_md=doc("decide"))(
        **run, evaluated=evaluated
    )
    approve = CognigyApprovalOperator(**run, evaluated=evaluated, doc_md=doc("approve"))
    promote = CognigyPromoteOperator(**run, evaluated=evaluated, trigger_rule=AFTER_BRANCH, **tenant("promote"))
    release = CognigySnapshotReleaseOperator(
        **run, promoted=promote.output, trigger_rule=AFTER_BRANCH, **tenant("release")
    )
    # After the release: did the judged model reach customers? rollback | mlflow_sync
    confirm = task.branch(branches.confirm, trigger_rule=AFTER_ANY, retries=0, doc_md=doc("confirm"))(
        **run, released=release.output
    )
    rollback = CognigyRollbackOperator(**run, trigger_rule=AFTER_BRANCH, **tenant("rollback"))
    synced = MlflowSyncOperator(
        task_id="mlflow_sync", **run, rolled_back=rollback.output, trigger_rule=AFTER_ANY, doc_md=doc("mlflow_sync")
    )
    audited = task(finalize, task_id="audit", trigger_rule=AFTER_ANY, retries=0, doc_md=doc("audit"))(
        **run, synced=synced.output
    )

    decide >> [approve, promote, release, confirm, rollback, synced]
    approve >> [promote, release, confirm, rollback, synced]
    promote >> release >> confirm >> [rollback, synced]
    rollback >> synced >> audited

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, doc_md=doc("watcher"))
    def watcher() -> None:
        raise AirflowFailException("a task failed; see the failed task's log and the audit trail")

    list(dag.tasks) >> watcher()
