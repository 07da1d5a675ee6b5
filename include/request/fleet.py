"""The fleet: every flow and locale the nightly run retrains, and the tenant's concurrency budget.

The fleet is a JSON list of entries, read from the Airflow Variable `cognigy_fleet` when it is set, else from
`include/request/fleet.json`:

    [{"name": "support EN", "projectId": "<24 hex>", "flowId": "<24 hex>", "locales": ["en-US"],
      "modelId": "<uuid>", "overrides": {"samples_per_intent": 60, "recall_floor": 0.85},
      "note": "why this entry differs from the run's settings"}]

`overrides` takes the DAG's trigger-form param names (training and gate settings, see OVERRIDABLE); what an
entry does not override comes from the run's params. Each entry becomes one retraining request (its own
SHA-256), each of its locales one target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from include.request.retrain_request import OBJECT_ID, RetrainRequest, describe_errors

FLEET_VARIABLE = "cognigy_fleet"
DEFAULT_FLEET_PATH = Path(__file__).with_name("fleet.json")
MAX_ENTRIES = 500

# The Airflow pool every task that calls Cognigy runs in. It bounds CONCURRENCY (worker slots busy with one
# tenant), not the request rate: the tenant's rate limit is kept by the shared budget (include/cognigy/rate_limit.py,
# connection extra `rate_limit`). Deferred waits do not count (include_deferred off), so trainings overlap.
TENANT_POOL = "cognigy_tenant"
DEFAULT_POOL_SLOTS = 8
POOL_INCLUDE_DEFERRED = False
# Which waiting task gets a free tenant slot first (Airflow priority_weight, weight_rule "absolute"). A fleet's
# trainings run on Cognigy and are its long pole, so what starts or ends one goes first, then the champion's
# scoring (`capture`, which lets the next training start), then the challenger's (`evaluate`): scoring spends
# the shared budget whenever it runs, so putting it behind the trainings costs no budget. In place, a challenger
# that waits for its `evaluate` serves meanwhile: fleets that promote in place trade that exposure for speed.
TENANT_PRIORITY = {
    "wait_for_training": 6, "submit": 5, "promote": 5, "release": 5, "rollback": 5, "capture": 4, "evaluate": 3,
}  # fmt: skip
# Cognigy's default tenant limit: 1,000 API requests per 5 minutes.
TENANT_REQUESTS = 1000
TENANT_WINDOW_SECONDS = 300.0

# Trigger-form params a fleet entry may set for itself. Connection, pacing and run-wide switches are not here:
# they belong to the tenant and the run, not to one flow.
OVERRIDABLE = frozenset(
    {
        "mode", "training_data_source", "samples_per_intent", "training_data_slice_matrix",
        "convergence_threshold", "max_gpu_memory_mb", "max_cpu_cores", "timeout_seconds", "max_dataset_size",
        "rollback_trigger_version_id", "held_out_per_intent", "score_threshold",
        "precision_floor", "recall_floor", "pr_balance_tolerance", "per_intent_recall_floor", "bias_ceiling",
        "max_accuracy_drop", "significance_alpha", "block_on_feedback_findings",
        "training_data_uri", "held_out_uri", "promotion", "staging_flow_id", "staging_project_id",
        "retrain_unchanged", "gate_profile", "allow_unevaluated_gates",
        "approval", "approval_margin", "approval_timeout_minutes",
    }
)  # fmt: skip


class FleetInvalid(ValueError):
    """Every problem with a fleet definition at once, each naming the entry and field."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("fleet is invalid:\n" + "\n".join(f"  - {e}" for e in errors))


class FleetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, max_length=100, description="Label in logs and error messages.")
    note: str | None = Field(None, max_length=500, description="Why the entry overrides what it does (for reviewers).")
    projectId: str = Field(pattern=OBJECT_ID)
    flowId: str = Field(pattern=OBJECT_ID)
    locales: list[str] = Field(min_length=1, max_length=20)
    modelId: UUID
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _known_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - OVERRIDABLE)
        if unknown:
            raise ValueError(f"cannot override {unknown}; allowed: {sorted(OVERRIDABLE)}")
        return overrides

    def label(self, index: int) -> str:
        return f"fleet[{index}]" + (f" ({self.name})" if self.name else "")

    def params(self, run_params: dict[str, Any]) -> dict[str, Any]:
        """The run's params with this entry's target and overrides: the input of one retraining request."""
        merged = {k: v for k, v in run_params.items() if k != "request_json"}
        merged.update(self.overrides)
        merged.update(
            project_id=self.projectId, flow_id=self.flowId, locales=list(self.locales), model_id=str(self.modelId)
        )
        return merged


def parse_fleet(raw: Any) -> list[FleetEntry]:
    """A fleet from JSON text or a decoded list; FleetInvalid lists every problem (bad entries, repeats)."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise FleetInvalid([f"fleet: not valid JSON ({exc})"]) from None
    if not isinstance(raw, list):
        raise FleetInvalid([f"fleet: expected a JSON list of entries, got {type(raw).__name__}"])
    if not raw:
        raise FleetInvalid(["fleet: no entries; a fleet run would retrain nothing"])
    if len(raw) > MAX_ENTRIES:
        raise FleetInvalid([f"fleet: {len(raw)} entries; at most {MAX_ENTRIES}"])
    errors: list[str] = []
    entries: list[tuple[int, FleetEntry]] = []
    for index, item in enumerate(raw):
        try:
            entries.append((index, FleetEntry.model_validate(item)))
        except ValidationError as exc:
            errors.extend(f"fleet[{index}].{e}" for e in describe_errors(exc))
    seen: dict[tuple[str, str], int] = {}
    for index, entry in entries:
        for locale in entry.locales:
            key = (entry.flowId, locale)
            if key in seen:
                errors.append(
                    f"fleet[{index}]: flow {entry.flowId} locale {locale} is already retrained by entry "
                    f"{seen[key]}; one training per flow/locale and run"
                )
            seen.setdefault(key, index)
    if errors:
        raise FleetInvalid(errors)
    return [entry for _, entry in entries]


def shared_flow_problems(requests: list[tuple[str, RetrainRequest]]) -> list[str]:
    """Entries that would train in one flow: (label, request) of each entry, as `validate` built them.

    A staging flow takes the staged intents by overwrite, so two entries with the same staging flow and locale
    would overwrite each other's challengers, and an entry staging in another entry's production flow (same
    locale) would overwrite what that flow serves. One line per problem, naming both entries.
    """
    production: dict[tuple[str, str], str] = {}
    for label, request in requests:
        for target in request.targets():
            production.setdefault((target.flow_id, target.locale), label)
    staged: dict[tuple[str, str], str] = {}
    problems = []
    fix = "give each entry a staging flow of its own (overrides.staging_flow_id)"
    for label, request in requests:
        for target in request.targets():
            staging = request.staging_target(target)
            if staging is None:
                continue
            key = (staging.flow_id, staging.locale)
            where = f"{label}: promotion.stagingFlowId: staging flow {staging.flow_id} locale {staging.locale}"
            if key in staged:
                problems.append(
                    f"{where} is also the staging flow of {staged[key]}; their trainings would overwrite each "
                    f"other's intents: {fix}"
                )
            staged.setdefault(key, label)
            owner = production.get(key)
            if owner is not None and owner != label:
                problems.append(
                    f"{where} is the production flow of {owner}; its intents would be overwritten by every run: {fix}"
                )
    return problems


def load_fleet(variable_value: str | None, path: Path = DEFAULT_FLEET_PATH) -> tuple[list[FleetEntry], str]:
    """The fleet and where it came from: the Variable's JSON when set (non-empty), else the file."""
    if variable_value is not None and str(variable_value).strip():
        return parse_fleet(variable_value), f"Airflow Variable {FLEET_VARIABLE}"
    try:
        text = path.read_text()
    except OSError as exc:
        raise FleetInvalid([f"fleet: cannot read {path} ({exc.strerror})"]) from None
    return parse_fleet(text), str(path)


def max_requests_per_second(pool_slots: int, share: float = 0.8) -> float:
    """The pacing each task may use so that `pool_slots` tasks together stay within `share` of the tenant limit."""
    return share * TENANT_REQUESTS / TENANT_WINDOW_SECONDS / max(1, pool_slots)
