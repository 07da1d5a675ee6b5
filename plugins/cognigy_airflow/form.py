"""The trigger form of `cognigy_nlu_retrain`: every param with its section, title, schema and help text.

Defaults have one home each: the demo tenant's ids in `include.defaults`, gate thresholds in `GateConfig`
(the form shows them), the tenant pool in `include.request.fleet`. Fleet entries override the same names.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Param

from cognigy_airflow.approval import APPROVAL_PARAMS
from include import defaults
from include.cognigy import poll_policy
from include.evaluation.names import GATE_ORDER

DOCS = Path(__file__).resolve().parents[2] / "dags" / "docs"


def doc(name: str) -> str:
    """A task's (or the DAG's) documentation, kept as Markdown in dags/docs/<name>.md."""
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


TARGET_SECTION = "Target (required: the bot and locale to retrain)"
TRAINING_SECTION = "Training"
GATES_SECTION = "Evaluation and quality gates"
TENANT_SECTION = "Tenant, pacing and connections"
RUN_SECTION = "Run"
UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
OBJECT_ID = "^[0-9a-f]{24}$"
CONN_ID = "^[A-Za-z0-9_.-]{1,250}$"
NULL_NUMBER = ["null", "number"]  # nullable: the UI form treats a non-null type as required
PROFILE_VALUE = "Empty: the gate profile's value."


def _p(default, title: str, section: str, **schema) -> Param:
    return Param(default, title=title, section=section, **schema)


def _required(title: str, section: str, **schema) -> Param:
    """No default: the form will not trigger until it is filled in (nothing of the demo reaches a tenant)."""
    return Param(title=title, section=section, **schema)


PARAMS = {
    # --- target -----------------------------------------------------------------------------------------
    "project_id": _required("Project id", TARGET_SECTION, type="string", pattern=OBJECT_ID,
                            description="Cognigy project (24 hex characters), e.g. 6630a1b2c3d4e5f601234567."),
    "flow_id": _required("Flow id", TARGET_SECTION, type="string", pattern=OBJECT_ID,
                         description="Cognigy flow whose intents are retrained (24 hex characters), e.g. "
                                     "6630a1b2c3d4e5f601234568."),
    "locales": _required("Locale", TARGET_SECTION, type="array", minItems=1, maxItems=1,
                         items={"type": "string", "pattern": "^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"},
                         description="The one locale of the flow to retrain, e.g. en-US. Several locales or flows: "
                                     "list them in the fleet and trigger cognigy_nlu_fleet."),
    "model_id": _required("Model id", TARGET_SECTION, type="string", pattern=UUID,
                          description="Model identity (UUID): MLflow registry identity; the training-jobs dialect's "
                                      "model, e.g. 0b6f2c8e-5a4d-4e1f-9c3b-7d8e9f0a1b2c."),
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
    # Nullable: the UI form treats a non-null type as required and would block the Trigger button.
    "training_data_uri": _p(None, "Training file", TRAINING_SECTION, type=["null", "string"], maxLength=2048,
                            description="Source 'uri': CSV (text,intent) or JSONL ({text,intent}); a path under "
                                        "COGNIGY_RETRAIN_DATA_ROOTS or an s3://, gs://… URI; {locale} is replaced per "
                                        "locale. Imported "
                                        "with mode=overwrite: the flow ends with exactly these intents."),
    "promotion": _p("staging", "Promotion", TRAINING_SECTION, type="string", enum=["staging", "in_place"],
                    values_display={"staging": "staging: train and judge in the staging flow, then promote",
                                    "in_place": "in place: train production (customers meet the challenger "
                                                "before the gates judge it)"},
                    description="staging: production is changed only after every gate passed. in_place: for "
                                "tenants without a staging flow; customers talk to the challenger from the end "
                                "of its training until the gates reject it and a restoring training ends."),
    "staging_flow_id": _p(None, "Staging flow id", TRAINING_SECTION,
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
                             minimum=1, maximum=500000,
                             description="Example sentences per intent when no slice matrix is given "
                                         "(rest-v2: ≤ 200, checked by validate)."),
    "training_data_slice_matrix": _p({}, "Training data slice matrix", TRAINING_SECTION, type="object",
                                     maxProperties=2500,
                                     propertyNames={"minLength": 1, "maxLength": 200},
                                     additionalProperties={"type": "integer", "minimum": 1, "maximum": 500000},
                                     description="Intent name → number of example sentences (≥ 1; rest-v2: ≤ 200 "
                                                 "per intent, checked by validate). Empty: every intent × sentences "
                                                 "per intent."),
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
    "held_out_uri": _p(None, "Held-out test set", GATES_SECTION, type=["null", "string"], maxLength=2048,
                       description="Your labelled test set: CSV (text,intent[,slice columns]) or JSONL "
                                   "({text,intent,slices}); a path under COGNIGY_RETRAIN_DATA_ROOTS or an "
                                   "s3://, gs://… URI, {locale} replaced "
                                   "per locale. Extra columns are the bias gate's slices. 'demo' = the shipped "
                                   "demo test set (emulator only)."),
    "held_out_per_intent": _p(defaults.HELD_OUT_PER_INTENT, "Demo held-out utterances per intent", GATES_SECTION,
                              type="integer", minimum=1, maximum=200,
                              description="Only for held-out 'demo': utterances per intent."),
    "gate_profile": _p("default", "Gate profile", GATES_SECTION, type="string",
                       enum=["default", "strict", "lenient"],
                       values_display={"default": "default: the specification (precision/recall ≥ 0.95, "
                                                  "bias ≤ 0.15)",
                                       "strict": "strict: the same as default (kept for existing runs)",
                                       "lenient": "lenient: floors 0.80, bias 0.15"},
                       description="Named thresholds; a threshold below that you fill in wins (empty: the profile's). "
                                   "A deployment gate policy (docs/operations.md), when set, is the floor: this "
                                   "form may then only tighten it, and a looser value is refused."),
    "allow_unevaluated_gates": _p(None, "Gates allowed to be unevaluated", GATES_SECTION, type=["null", "array"],
                                  items={"type": "string", "enum": list(GATE_ORDER)},
                                  uniqueItems=True,
                                  description="A gate that could not measure (e.g. bias without slice columns) "
                                              "blocks promotion unless named here; the report says 'not evaluated'. "
                                              "With a deployment gate policy: only gates it allows."),
    "score_threshold": _p(0.3, "'No intent' score threshold", GATES_SECTION, type="number", minimum=0, maximum=1,
                          description="A top intent score below this counts as 'no intent'."),
    # Thresholds: empty (None) takes the gate profile's value; a value filled in is applied on top.
    "precision_floor": _p(None, "Precision floor", GATES_SECTION, type=NULL_NUMBER, minimum=0, maximum=1,
                          description=f"Macro precision must be at least this. {PROFILE_VALUE}"),
    "recall_floor": _p(None, "Recall floor", GATES_SECTION, type=NULL_NUMBER, minimum=0, maximum=1,
                       description=f"Macro recall must be at least this. {PROFILE_VALUE}"),
    "pr_balance_tolerance": _p(None, "Precision–recall balance", GATES_SECTION, type=NULL_NUMBER, minimum=0,
                               maximum=1, description=f"Largest allowed |precision − recall|. {PROFILE_VALUE}"),
    "per_intent_recall_floor": _p(None, "Per-intent recall floor", GATES_SECTION, type=NULL_NUMBER, minimum=0,
                                  maximum=1,
                                  description=f"Every intent's recall must be at least this. {PROFILE_VALUE}"),
    "bias_ceiling": _p(None, "Bias ceiling", GATES_SECTION, type=NULL_NUMBER, minimum=0, maximum=1,
                       description="Largest allowed accuracy difference between slices (channel, length, locale). "
                                   f"{PROFILE_VALUE}"),
    "max_accuracy_drop": _p(None, "Max accuracy drop vs champion", GATES_SECTION, type=NULL_NUMBER, minimum=0,
                            maximum=1,
                            description=f"Non-inferiority margin against the model serving now. {PROFILE_VALUE}"),
    "significance_alpha": _p(None, "Significance level", GATES_SECTION, type=NULL_NUMBER, minimum=0.0001,
                             maximum=0.5,
                             description=f"McNemar's test: a drop is significant below this p-value. {PROFILE_VALUE}"),
    "block_on_feedback_findings": _p(False, "Block on Cognigy feedback findings", GATES_SECTION, type="boolean",
                                     description="Ticked: the platform's intent feedback report's findings fail the "
                                                 "gate (else they are only reported)."),
    # --- tenant and connections -------------------------------------------------------------------------
    "requests_per_second": _p(2.6, "Requests per second (per task)", TENANT_SECTION, type="number", minimum=0.1,
                              maximum=100,
                              description="Optional cap per task, kept for compatibility. The tenant's limit is "
                                          "kept by the shared budget (connection extra rate_limit), whatever the "
                                          "slots; this only slows one task further."),
    "poll_min_seconds": _p(poll_policy.MIN_SECONDS, "Fastest poll (s)", TENANT_SECTION, type="number", minimum=1,
                           maximum=60,
                           description="Shortest interval between two status reads of a training."),
    "poll_max_seconds": _p(poll_policy.MAX_SECONDS, "Slowest poll (s)", TENANT_SECTION, type="number", minimum=5,
                           maximum=600,
                           description="Longest interval between two status reads (bounds the detection lag)."),
    "cognigy_conn_id": _p("cognigy_default", "Cognigy connection", TENANT_SECTION, type="string", pattern=CONN_ID,
                          description="Airflow connection of type cognigy (base URL, API key or OAuth2 client)."),
    "mlflow_conn_id": _p("mlflow_default", "MLflow connection", TENANT_SECTION, type="string", pattern=CONN_ID,
                         description="Airflow connection whose host is the MLflow tracking URI."),
    # --- run --------------------------------------------------------------------------------------------
    "dry_run": _p(False, "Dry run", RUN_SECTION, type="boolean",
                  description="Validate (and capture) only: nothing is changed on Cognigy."),
    "fleet": _p(None, "Fleet night", RUN_SECTION, type=["null", "object"],
                description="Set by cognigy_nlu_fleet for the runs of a fleet night; leave empty."),
    **APPROVAL_PARAMS,
}  # fmt: skip
TARGET_FIELDS = ("project_id", "flow_id", "locales", "model_id")  # the fleet entry's, never a fleet-wide setting
