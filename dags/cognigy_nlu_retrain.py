"""Nightly (or on-demand) retraining of Cognigy.AI NLU models with quality gates, rollback, MLflow and audit.

Wiring only: task bodies live in plugins/cognigy_airflow (Airflow-facing) and include/ (domain code).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TriggerRule, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import steps
from cognigy_airflow.operators import (
    CognigyRollbackOperator,
    CognigySubmitTrainingOperator,
    CognigyWaitForTrainingOperator,
)
from include import defaults

DOC = """
### Cognigy NLU retrain
Retrains the intent model of a Cognigy flow for each locale, measures it on a frozen held-out set against
the model serving now, promotes it only if every blocking gate passes, otherwise restores what served
before and proves it. Every step writes a hash-chained audit record; every retrain is an MLflow run.

**Tasks** (per flow/locale, inside `retrain`): `capture` (rollback point + champion scores) → `submit`
(import training data, start ONE training) → `wait_for_training` (deferred: no worker slot) → `evaluate`
(held-out scoring + gates) → `decide` → `rollback` | `mlflow_sync` → `finalize` (closing audit record).
A run fails when a training failed or a rollback could not be verified — after auditing it.
"""

PARAMS = {
    "flow_id": Param(defaults.DEMO_FLOW_ID, type="string", pattern="^[0-9a-f]{24}$",
                     description="Cognigy flow id (24 hex)."),
    "project_id": Param(defaults.DEMO_PROJECT_ID, type="string", pattern="^[0-9a-f]{24}$",
                        description="Cognigy project id (24 hex)."),
    "locales": Param(defaults.DEMO_LOCALES, type="array", minItems=1, uniqueItems=True,
                     items={"type": "string", "pattern": "^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"},
                     description="Locale names to retrain, e.g. en-US, de-DE."),
    "mode": Param("full", type="string", enum=["full", "quick"], description="Cognigy training mode."),
    "model_id": Param(defaults.DEMO_MODEL_ID, type="string", format="uuid",
                      description="Model identity (registry name; training-jobs dialect model)."),
    "training_data_source": Param("dataset", type="string", enum=["dataset", "flow"],
                                  description="dataset: import the shipped data set first; flow: retrain as is."),
    "samples_per_intent": Param(defaults.SAMPLES_PER_INTENT, type="integer", minimum=1, maximum=200,
                                description="Example sentences per intent (when no matrix is given)."),
    "training_data_slice_matrix": Param({}, type="object",
                                        description="Intent -> sample count; empty = every intent × samples_per_intent."),
    "convergence_threshold": Param(0.01, type="number", minimum=0.001, maximum=0.99),
    "max_gpu_memory_mb": Param(1024, type="integer", minimum=1),
    "max_cpu_cores": Param(2, type="integer", minimum=1, maximum=32),
    "timeout_seconds": Param(600, type="integer", minimum=300, maximum=7200,
                             description="Training deadline; capped at Cognigy's 10-minute limit."),
    "max_dataset_size": Param(10000, type="integer", minimum=100, maximum=500000),
    "rollback_trigger_version_id": Param("", type="string", description="training-jobs: version to roll back to."),
    "held_out_per_intent": Param(defaults.HELD_OUT_PER_INTENT, type="integer", minimum=1, maximum=200,
                                 description="Held-out utterances per intent scored for each model."),
    "score_threshold": Param(0.3, type="number", minimum=0, maximum=1,
                             description="Top score below this counts as 'no intent'."),
    "precision_floor": Param(0.80, type="number", minimum=0, maximum=1, description="Macro precision floor."),
    "recall_floor": Param(0.80, type="number", minimum=0, maximum=1, description="Macro recall floor."),
    "pr_balance_tolerance": Param(0.05, type="number", minimum=0, maximum=1, description="Max |P − R|."),
    "per_intent_recall_floor": Param(0.60, type="number", minimum=0, maximum=1),
    "bias_ceiling": Param(0.15, type="number", minimum=0, maximum=1,
                          description="Max accuracy difference between slices (channel, length, locale)."),
    "max_accuracy_drop": Param(0.01, type="number", minimum=0, maximum=1,
                               description="Non-inferiority margin vs the champion."),
    "significance_alpha": Param(0.05, type="number", minimum=0.0001, maximum=0.5),
    "block_on_feedback_findings": Param(False, type="boolean"),
    "requests_per_second": Param(2.6, type="number", minimum=0.1, maximum=100,
                                 description="Client pacing (tenant default 1000/5 min ≈ 3.3/s)."),
    "dry_run": Param(False, type="boolean", description="Validate and stop: nothing is sent to Cognigy."),
    "cognigy_conn_id": Param("cognigy_default", type="string"),
    "mlflow_conn_id": Param("mlflow_default", type="string"),
}  # fmt: skip

with DAG(
    dag_id="cognigy_nlu_retrain",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    doc_md=DOC,
    tags=["cognigy", "nlu", "mlops"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True},
) as dag:
    plan = task(steps.validate, retries=0, doc_md="Validates the request; nothing is sent before it passes.")()

    @task_group(group_id="retrain")
    def retrain(target: dict, plan: dict) -> None:
        captured = task(steps.capture, doc_md="Rollback point + champion held-out scores.")(target=target, plan=plan)
        submitted = CognigySubmitTrainingOperator(
            task_id="submit", target=target, plan=plan, doc_md="Imports training data and starts one training."
        )
        waited = CognigyWaitForTrainingOperator(
            task_id="wait_for_training",
            target=target,
            plan=plan,
            submitted=submitted.output,
            doc_md="Deferred wait; cancels the task at the deadline.",
        )
        evaluated = task(steps.evaluate, trigger_rule=TriggerRule.ALL_DONE, doc_md="Held-out evaluation and gates.")(
            target, plan, captured, submitted.output, waited.output
        )
        branch = task.branch(steps.decide, doc_md="Promote or roll back, from the gate report only.")(
            evaluated, group="retrain"
        )
        rolled = CognigyRollbackOperator(
            task_id="rollback",
            target=target,
            plan=plan,
            captured=captured,
            waited=waited.output,
            evaluated=evaluated,
            doc_md="Restore + retrain + verify.",
        )
        synced = task(
            steps.mlflow_sync,
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            doc_md="One MLflow run + registry version; outbox when MLflow is down.",
        )(target, plan, captured, submitted.output, waited.output, evaluated, rolled.output)
        final = task(
            steps.finalize,
            trigger_rule=TriggerRule.ALL_DONE,
            retries=0,
            doc_md="Closing audit record; fails the run if training/rollback failed.",
        )(target, plan, captured, submitted.output, waited.output, evaluated, rolled.output, synced)
        captured >> submitted
        branch >> [rolled, synced]
        rolled >> synced >> final

    targets = task(steps.list_targets, task_id="targets", doc_md="One mapped retrain per flow/locale.")(plan)
    retrain.partial(plan=plan).expand(target=targets)

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, doc_md="Fails the run when any task failed.")
    def watcher() -> None:
        raise AirflowFailException("a task failed; see the failed task's log and the audit trail")

    list(dag.tasks) >> watcher()
