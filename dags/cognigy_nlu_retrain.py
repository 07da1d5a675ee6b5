"""Nightly (or on-demand) retraining of Cognigy.AI NLU models with quality gates, rollback, MLflow and audit.

Wiring only: task bodies live in plugins/cognigy_airflow (Airflow-facing) and include/ (domain code).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TriggerRule, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from cognigy_airflow import steps
from cognigy_airflow.mlflow_operator import MlflowSyncOperator
from cognigy_airflow.operators import (
    CognigyPromoteOperator,
    CognigyRollbackOperator,
    CognigySubmitTrainingOperator,
    CognigyWaitForTrainingOperator,
)
from include import defaults
from include.fleet import TENANT_POOL
from include.gates import GATE_ORDER

DOC = f"""
### Cognigy NLU retrain
Retrains the intent model of Cognigy flows, one mapped `retrain` group per flow and locale, measures each new
model on a frozen held-out set against the model serving now, promotes it only if every blocking gate passes,
otherwise restores what served before and proves it. Every step writes a hash-chained audit record; every
retrain is an MLflow run.

**What runs.** Scheduled runs (02:00) retrain the **fleet**: the Airflow Variable `cognigy_fleet` (JSON) when
set, else `include/fleet.json`. Manual runs retrain the flow and locales of the form's *Target* section, or the
fleet when *Retrain the fleet* is ticked. Each fleet entry is its own request (own SHA-256) and may override
training and gate settings; every target's gate, rollback and MLflow sync stand on their own, so one failing
flow never rolls back another.

**Tasks** (per flow/locale, inside `retrain`; each later task skips itself when it has nothing to do):
`capture` (checks, rollback point, champion scores; or `unchanged`) → `submit` (candidate data into the staging
flow — or production, in place — and ONE training) → `wait_for_training` (deferred: no worker slot) → `evaluate`
(your held-out set + gates) → `promote` (staging, gates passed: production gets exactly the staged intents, ONE
training, verified) → `rollback` (only when production was changed and the new model must not stay) →
`mlflow_sync` → `finalize` (closing audit record, outcome, ungated exposure).
With a staging flow a rejected challenger never reaches production. A run fails when a training or a promotion
failed or a restore could not be verified — after auditing it; `watcher` makes a failure of any task fail the
run.

**Tenant budget.** Every process that calls Cognigy (workers and the triggerer) draws from ONE request budget
per tenant, set once in the connection extra `rate_limit` (default Cognigy's 1,000 requests / 5 min) and shared
through Redis (`rate_limit_storage` / `COGNIGY_RATE_LIMIT_STORAGE`) or a local SQLite file; training polls have
priority over scoring, and a 429 pauses everyone. The pool `{TENANT_POOL}` only bounds how many of these tasks
run at once (waits do not hold a slot); see docs/operations.md.

**Links.** `submit`, `wait_for_training` and `rollback` have a *Cognigy flow* button (the flow's NLU page and the
Cognigy task); `mlflow_sync` an *MLflow run* button.
"""

VALIDATE_DOC = """
#### validate
Checks the whole request (every fleet entry, when the fleet runs) against the specification's rules and the
platform's limits, reads the Cognigy connection's dialect, and returns the plan every later task follows: one
`{target, plan}` per flow/locale, each plan with its own request and SHA-256. Nothing is sent before it passes.

**Failure** means the request (or the fleet definition) is invalid: the log and the `request_rejected` audit record
list every problem by field, e.g. `fleet[1] (support DE): timeoutSeconds …`. Fix the form, the fleet file or the
Variable and trigger again. It does not retry.
"""

TARGETS_DOC = """
#### targets
Lists the flow/locale targets of the plan; the `retrain` group is mapped over them (one map index each).
A failure here is an Airflow problem (XCom), not a Cognigy one.
"""

CAPTURE_DOC = """
#### capture
Saves the rollback point (the flow's intents export for the locale, or the active version on training-jobs) in
the run's folder and scores the held-out set against the model serving now (the champion). Read-only on Cognigy.

**Failure**: the tenant could not be read (connection, credentials, rate limit after retries). Nothing changed on
Cognigy; `submit` does not run and no rollback is needed.
"""

SUBMIT_DOC = """
#### submit
Imports the training data (mode=overwrite, so repeatable) and starts exactly ONE training; a retry reattaches
to the training it started (task state store, then the tenant's task list) instead of starting another.
The *Cognigy flow* button opens the flow and the training task.

**Failure**: the import or the training start was refused or could not be confirmed. The flow's example sentences
may already be replaced; `rollback` restores the rollback point.
"""

WAIT_DOC = """
#### wait_for_training
Waits for the training in the triggerer (deferred, no worker slot) until it ends or the deadline passes; at the
deadline it cancels the Cognigy task. It returns the outcome (succeeded/failed/cancelled/deadline) rather than
failing, so the run still evaluates, rolls back and audits.

**Failure** of this task itself means the training's state could not be read at all; `rollback` follows.
"""

EVALUATE_DOC = """
#### evaluate
Scores the held-out set against the new model and runs every gate (precision/recall floors, P–R balance,
per-intent recall, bias across slices, non-inferiority vs the champion with McNemar's test, platform feedback);
writes the gate report and confusion matrix. A training that did not succeed counts as a failed gate.

**Failure**: scoring could not finish (tenant unreachable); `decide` then rolls back.
"""

PROMOTE_DOC = """
#### promote
Staging promotion only, and only when every blocking gate passed on the staging flow: imports exactly the staged
intents into the production flow/locale (chunked, verified by fingerprint), starts ONE training (deferred), then
verifies that production's held-out answers agree with the judged challenger's (≥ 95 % of a 100-utterance
sample). Skips itself in place, on rejection, or when nothing was retrained.

**Failure** (training error, deadline, disagreement): `rollback` restores the rollback point and the run fails.
"""

ROLLBACK_DOC = """
#### rollback
Stops this run's training if it still runs, imports the rollback point (overwrite), retrains (deferred) and
verifies: the serving state equals the rollback point and held-out predictions agree with the champion's.
Skips itself when the gates passed. The *Cognigy flow* button opens the restoring training.

**Failure** means **the rollback is not verified**: the log says how to restore the flow by hand. Only this
target is affected.
"""

MLFLOW_DOC = """
#### mlflow_sync
Writes the record to the durable outbox, then creates (or finds again on retry) one MLflow run per DAG run and
target — params, metrics, tags, gate report — and a registry version; a promoted model gets the `champion` alias.
The *MLflow run* button opens the run.

**Failure after its retries does not fail the retrain**: the record waits in the outbox and the resync DAG
pushes it when MLflow is back (`mlflow_sync_deferred` in the audit log).
"""

FINALIZE_DOC = """
#### finalize
Writes the closing `retrain_completed` audit record (outcome, Cognigy task, metrics, MLflow run, rollback
verified) and the run folder's `outcome.json`.

**Failure** is deliberate: this target's training failed or its rollback was not verified — the audit record is
written first. It does not retry.
"""

WATCHER_DOC = """
#### watcher
Runs only when some task failed, and fails the DAG run, so an all-done `finalize` cannot make a failed run look
successful.
"""

TARGET_SECTION = "Target (manual runs; scheduled runs retrain the fleet)"
TRAINING_SECTION = "Training"
GATES_SECTION = "Evaluation and quality gates"
TENANT_SECTION = "Tenant, pacing and connections"
RUN_SECTION = "Run"
UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
OBJECT_ID = "^[0-9a-f]{24}$"
CONN_ID = "^[A-Za-z0-9_.-]{1,250}$"


def _p(default, title: str, section: str, **schema) -> Param:
    return Param(default, title=title, section=section, **schema)


PARAMS = {
    # --- target -----------------------------------------------------------------------------------------
    "fleet": _p(False, "Retrain the fleet", TARGET_SECTION, type="boolean",
                description="Ticked: retrain every entry of the fleet (Variable cognigy_fleet, else "
                            "include/fleet.json) and ignore the four fields below. Scheduled runs always do."),
    "project_id": _p(defaults.DEMO_PROJECT_ID, "Project id", TARGET_SECTION, type="string", pattern=OBJECT_ID,
                     description="Cognigy project (24 hex characters)."),
    "flow_id": _p(defaults.DEMO_FLOW_ID, "Flow id", TARGET_SECTION, type="string", pattern=OBJECT_ID,
                  description="Cognigy flow whose intents are retrained (24 hex characters)."),
    "locales": _p(defaults.DEMO_LOCALES, "Locales", TARGET_SECTION, type="array", minItems=1, maxItems=20,
                  uniqueItems=True, items={"type": "string", "pattern": "^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"},
                  description="Locale names of the flow to retrain, one per line (e.g. en-US, de-DE); each is its "
                              "own target. training-jobs dialect: exactly one."),
    "model_id": _p(defaults.DEMO_MODEL_ID, "Model id", TARGET_SECTION, type="string", pattern=UUID,
                   description="Model identity (UUID): MLflow registry identity; the training-jobs dialect's model."),
    # --- training ---------------------------------------------------------------------------------------
    "mode": _p("full", "Training mode", TRAINING_SECTION, type="string", enum=["full", "quick"],
               values_display={"full": "full (NLU + embeddings)", "quick": "quick (faster, less accurate)"},
               description="Cognigy's intent training mode."),
    "training_data_source": _p("flow", "Training data", TRAINING_SECTION, type="string",
                               enum=["flow", "uri", "demo"],
                               values_display={"flow": "flow: retrain on the flow's sentences as they are",
                                               "uri": "uri: import my training file (below) first",
                                               "demo": "demo: the shipped demo set (emulator / make run only)"},
                               description="What the new model learns from. Nothing is imported for 'flow'."),
    "training_data_uri": _p("", "Training file", TRAINING_SECTION, type="string", maxLength=2048,
                            description="Source 'uri': CSV (text,intent) or JSONL ({text,intent}); a path or "
                                        "file://, s3://, gs://… URI; {locale} is replaced per locale. Imported "
                                        "with mode=overwrite: the flow ends with exactly these intents."),
    "promotion": _p("staging", "Promotion", TRAINING_SECTION, type="string", enum=["staging", "in_place"],
                    values_display={"staging": "staging: train and judge in the staging flow, then promote",
                                    "in_place": "in place: train production (customers meet the challenger "
                                                "before the gates judge it)"},
                    description="staging: production is changed only after every gate passed. in_place: for "
                                "tenants without a staging flow; customers talk to the challenger from the end "
                                "of its training until the gates reject it and a restoring training ends."),
    "staging_flow_id": _p(defaults.DEMO_STAGING_FLOW_ID, "Staging flow id", TRAINING_SECTION,
                          type=["null", "string"], pattern=f"^$|{OBJECT_ID}",
                          description="A flow no endpoint serves, with the target's locales (24 hex). Its intents "
                                      "are overwritten by every run."),
    "staging_project_id": _p(None, "Staging project id", TRAINING_SECTION, type=["null", "string"],
                             pattern=f"^$|{OBJECT_ID}",
                             description="Project of the staging flow when it is not the production project."),
    "retrain_unchanged": _p(False, "Retrain even if unchanged", TRAINING_SECTION, type="boolean",
                            description="Unticked: a flow whose intents did not change since its last successful "
                                        "training (and is not out of date) ends 'unchanged' after a few reads."),
    "samples_per_intent": _p(defaults.SAMPLES_PER_INTENT, "Sentences per intent", TRAINING_SECTION, type="integer",
                             minimum=1, maximum=200,
                             description="Example sentences per intent when no slice matrix is given "
                                         "(Cognigy: ≤ 200)."),
    "training_data_slice_matrix": _p({}, "Training data slice matrix", TRAINING_SECTION, type="object",
                                     maxProperties=2500,
                                     propertyNames={"minLength": 1, "maxLength": 200},
                                     additionalProperties={"type": "integer", "minimum": 1, "maximum": 200},
                                     description="Intent name → number of example sentences (1–200). Empty: every "
                                                 "intent × sentences per intent."),
    "max_dataset_size": _p(10000, "Max dataset size", TRAINING_SECTION, type="integer", minimum=100, maximum=500000,
                           description="Upper bound on all example sentences together; the training deadline must "
                                       "be at least size / 1000 × 10 s."),
    "timeout_seconds": _p(600, "Training deadline (s)", TRAINING_SECTION, type="integer", minimum=300, maximum=7200,
                          description="The wait cancels the training after this; capped at Cognigy's 10-minute "
                                      "training limit on the rest-v2 dialect."),
    "convergence_threshold": _p(0.01, "Convergence threshold", TRAINING_SECTION, type="number", minimum=0.001,
                                maximum=0.99, description="Specification field (training-jobs dialect)."),
    "max_gpu_memory_mb": _p(1024, "Max GPU memory (MB)", TRAINING_SECTION, type="integer", minimum=1, maximum=81920,
                            description="Specification field (training-jobs dialect; informational on Cognigy)."),
    "max_cpu_cores": _p(2, "Max CPU cores", TRAINING_SECTION, type="integer", minimum=1, maximum=32,
                        description="Specification field (training-jobs dialect)."),
    # Nullable: the UI form treats a non-null type as required and would block the Trigger button.
    "rollback_trigger_version_id": _p(None, "Rollback version id", TRAINING_SECTION, type=["null", "string"],
                                      pattern=f"^$|{UUID}",
                                      description="training-jobs: version to roll back to (UUID). Empty: the version "
                                                  "serving when the run starts."),
    # --- evaluation and gates ---------------------------------------------------------------------------
    "held_out_uri": _p("", "Held-out test set", GATES_SECTION, type="string", maxLength=2048,
                       description="Your labelled test set: CSV (text,intent[,slice columns]) or JSONL "
                                   "({text,intent,slices}); a path or file://, s3://, gs://… URI, {locale} replaced "
                                   "per locale. Extra columns are the bias gate's slices. 'demo' = the shipped "
                                   "demo test set (emulator only)."),
    "held_out_per_intent": _p(defaults.HELD_OUT_PER_INTENT, "Demo held-out utterances per intent", GATES_SECTION,
                              type="integer", minimum=1, maximum=200,
                              description="Only for held-out 'demo': utterances per intent."),
    "gate_profile": _p("default", "Gate profile", GATES_SECTION, type="string", enum=["default", "strict"],
                       values_display={"default": "default (floors 0.80, bias 0.15)",
                                       "strict": "strict: the specification (precision/recall ≥ 0.95, bias ≤ 0.15)"},
                       description="Named thresholds; a threshold below that you change from its default wins."),
    "allow_unevaluated_gates": _p([], "Gates allowed to be unevaluated", GATES_SECTION, type="array",
                                  items={"type": "string", "enum": list(GATE_ORDER)},
                                  uniqueItems=True,
                                  description="A gate that could not measure (e.g. bias without slice columns) "
                                              "blocks promotion unless named here; the report says 'not evaluated'."),
    "score_threshold": _p(0.3, "'No intent' score threshold", GATES_SECTION, type="number", minimum=0, maximum=1,
                          description="A top intent score below this counts as 'no intent'."),
    "precision_floor": _p(0.80, "Precision floor", GATES_SECTION, type="number", minimum=0, maximum=1,
                          description="Macro precision must be at least this."),
    "recall_floor": _p(0.80, "Recall floor", GATES_SECTION, type="number", minimum=0, maximum=1,
                       description="Macro recall must be at least this."),
    "pr_balance_tolerance": _p(0.05, "Precision–recall balance", GATES_SECTION, type="number", minimum=0, maximum=1,
                               description="Largest allowed |precision − recall|."),
    "per_intent_recall_floor": _p(0.60, "Per-intent recall floor", GATES_SECTION, type="number", minimum=0,
                                  maximum=1, description="Every intent's recall must be at least this."),
    "bias_ceiling": _p(0.15, "Bias ceiling", GATES_SECTION, type="number", minimum=0, maximum=1,
                       description="Largest allowed accuracy difference between slices (channel, length, locale)."),
    "max_accuracy_drop": _p(0.01, "Max accuracy drop vs champion", GATES_SECTION, type="number", minimum=0,
                            maximum=1, description="Non-inferiority margin against the model serving now."),
    "significance_alpha": _p(0.05, "Significance level", GATES_SECTION, type="number", minimum=0.0001, maximum=0.5,
                             description="McNemar's test: a drop is significant below this p-value."),
    "block_on_feedback_findings": _p(False, "Block on Cognigy feedback findings", GATES_SECTION, type="boolean",
                                     description="Ticked: the platform's intent feedback report's findings fail the "
                                                 "gate (else they are only reported)."),
    # --- tenant and connections -------------------------------------------------------------------------
    "requests_per_second": _p(2.6, "Requests per second (per task)", TENANT_SECTION, type="number", minimum=0.1,
                              maximum=100,
                              description="Optional cap per task, kept for compatibility. The tenant's limit is "
                                          "kept by the shared budget (connection extra rate_limit), whatever the "
                                          "slots; this only slows one task further."),
    "poll_min_seconds": _p(2.0, "Fastest poll (s)", TENANT_SECTION, type="number", minimum=1, maximum=60,
                           description="Shortest interval between two status reads of a training."),
    "poll_max_seconds": _p(30.0, "Slowest poll (s)", TENANT_SECTION, type="number", minimum=5, maximum=600,
                           description="Longest interval between two status reads (bounds the detection lag)."),
    "cognigy_conn_id": _p("cognigy_default", "Cognigy connection", TENANT_SECTION, type="string", pattern=CONN_ID,
                          description="Airflow connection of type cognigy (base URL, API key or OAuth2 client)."),
    "mlflow_conn_id": _p("mlflow_default", "MLflow connection", TENANT_SECTION, type="string", pattern=CONN_ID,
                         description="Airflow connection whose host is the MLflow tracking URI."),
    # --- run --------------------------------------------------------------------------------------------
    "dry_run": _p(False, "Dry run", RUN_SECTION, type="boolean",
                  description="Validate (and capture) only: nothing is changed on Cognigy."),
}  # fmt: skip

COGNIGY = {"pool": TENANT_POOL}  # concurrency per tenant; deferred waits hold no slot, the budget is shared (DOC)

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
    plan = task(steps.validate, retries=0, doc_md=VALIDATE_DOC)()

    @task_group(group_id="retrain")
    def retrain(target: dict, plan: dict) -> None:
        captured = task(steps.capture, doc_md=CAPTURE_DOC, **COGNIGY)(target=target, plan=plan)
        submitted = CognigySubmitTrainingOperator(
            task_id="submit", target=target, plan=plan, captured=captured, doc_md=SUBMIT_DOC, **COGNIGY
        )
        waited = CognigyWaitForTrainingOperator(
            task_id="wait_for_training", target=target, plan=plan, submitted=submitted.output, doc_md=WAIT_DOC,
            **COGNIGY,
        )  # fmt: skip
        evaluated = task(steps.evaluate, trigger_rule=TriggerRule.ALL_DONE, doc_md=EVALUATE_DOC, **COGNIGY)(
            target, plan, captured, submitted.output, waited.output
        )
        promoted = CognigyPromoteOperator(
            task_id="promote", target=target, plan=plan, captured=captured, evaluated=evaluated,
            doc_md=PROMOTE_DOC, **COGNIGY,
        )  # fmt: skip
        rolled = CognigyRollbackOperator(
            task_id="rollback",
            target=target,
            plan=plan,
            captured=captured,
            waited=waited.output,
            evaluated=evaluated,
            promoted=promoted.output,
            # ALL_DONE: a failed submit, wait or promotion must still restore the rollback point (the operator
            # skips itself when production was not changed or the new model stays).
            trigger_rule=TriggerRule.ALL_DONE,
            doc_md=ROLLBACK_DOC,
            **COGNIGY,
        )
        synced = MlflowSyncOperator(
            task_id="mlflow_sync",
            target=target,
            plan=plan,
            captured=captured,
            submitted=submitted.output,
            waited=waited.output,
            evaluated=evaluated,
            promoted=promoted.output,
            rolled_back=rolled.output,
            # ALL_DONE: a failed rollback is recorded in MLflow too (status FAILED); the operator skips itself when
            # there is nothing to record. (ALL_DONE_MIN_ONE_SUCCESS never fires inside a mapped group in 3.3.2.)
            trigger_rule=TriggerRule.ALL_DONE,
            doc_md=MLFLOW_DOC,
        )
        final = task(steps.finalize, trigger_rule=TriggerRule.ALL_DONE, retries=0, doc_md=FINALIZE_DOC)(
            target, plan, captured, submitted.output, waited.output, evaluated, promoted.output, rolled.output,
            synced.output,
        )  # fmt: skip
        captured >> submitted
        evaluated >> promoted >> rolled >> synced >> final

    targets = task(steps.list_targets, task_id="targets", doc_md=TARGETS_DOC)(plan)
    retrain.expand_kwargs(targets)  # each element: {"target": ..., "plan": that target's own plan}

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, doc_md=WATCHER_DOC)
    def watcher() -> None:
        raise AirflowFailException("a task failed; see the failed task's log and the audit trail")

    list(dag.tasks) >> watcher()
