"""Thresholds of the promotion gates: ``GateConfig`` and its named profiles (``GATE_PROFILES``).

Loads pydantic only (no numpy, scipy or scikit-learn)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from include.evaluation.names import GATE_ORDER, GATE_PROFILES


class GateConfig(BaseModel):
    """Thresholds of the promotion gates. Defaults are defensible starting points, not universal truths."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    precision_floor: float = Field(
        0.80, ge=0.0, le=1.0, description="Minimum macro precision over the true intents of the held-out set."
    )
    recall_floor: float = Field(
        0.80, ge=0.0, le=1.0, description="Minimum macro recall over the true intents of the held-out set."
    )
    pr_balance_tolerance: float = Field(0.05, ge=0.0, le=1.0, description="Maximum |macro precision − macro recall|.")
    per_intent_recall_floor: float = Field(
        0.60, ge=0.0, le=1.0, description="Minimum recall of every intent with enough test utterances."
    )
    per_intent_f1_floor: float = Field(
        0.60, ge=0.0, le=1.0, description="Minimum F1 of every intent with enough test utterances."
    )
    per_intent_min_support: int = Field(
        5, ge=1, description="Test utterances an intent needs before per-intent gates judge it."
    )
    per_intent_pr_gap_warning: float = Field(
        0.20, ge=0.0, le=1.0, description="Warn when an intent's |precision − recall| exceeds this."
    )
    weak_intent_f1: float = Field(
        0.80, ge=0.0, le=1.0, description="An intent with F1 at or below this counts as weak (warning)."
    )
    weak_intent_max_share: float = Field(
        0.10, ge=0.0, le=1.0, description="Warn when more than this share of judged intents is weak."
    )
    max_leakage_share: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Maximum share of held-out utterances whose normalised text (casefolded, whitespace collapsed) also "
            "appears among the training sentences. A test set that overlaps training overstates accuracy, "
            "because the model is graded on sentences it has memorised; 1 % tolerates incidental short "
            "utterances such as greetings ('hi', 'thanks') that occur in both sets by chance."
        ),
    )
    max_unscored_share: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Maximum share of held-out utterances that were skipped or failed instead of scored.",
    )
    bias_ceiling: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="Maximum between-groups difference of accuracy within any slice dimension.",
    )
    bias_ratio_floor: float = Field(
        0.80, ge=0.0, le=1.0, description="Minimum ratio of the worst to the best group accuracy in a slice."
    )
    bias_min_group_size: int = Field(
        20, ge=1, description="Groups with fewer scored utterances are excluded from the bias gate (reported)."
    )
    bias_slices: list[str] | None = Field(
        None,
        description=(
            "Slice dimensions (keys of Prediction.slices) compared by the bias gate. None (default): every "
            "dimension present in the challenger's held-out predictions, so no slice is invented or silently "
            "dropped; a held-out set without slice columns leaves the bias gate not evaluated."
        ),
    )
    bias_require_ci_above_ceiling: bool = Field(
        False,
        description=(
            "Block on bias only when the bootstrap interval of the accuracy difference lies entirely above "
            "the ceiling (fewer false alarms on small groups, slower to catch real disparity)."
        ),
    )
    imbalance_ratio_max: float = Field(
        10.0, ge=1.0, description="Maximum training imbalance ratio: largest / smallest intent example count."
    )
    min_class_count: int = Field(5, ge=1, description="Minimum training examples of every intent.")
    max_accuracy_drop: float = Field(
        0.01, ge=0.0, le=1.0, description="Non-inferiority margin for accuracy and macro F1 vs the champion."
    )
    significance_alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Significance level of McNemar's exact test.")
    confidence_level: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the bootstrap intervals.")
    max_intent_f1_drop: float = Field(
        0.10, ge=0.0, le=1.0, description="Maximum F1 an intent may lose vs the champion when the change is real."
    )
    require_non_inferiority: bool = Field(
        False,
        description=(
            "Also block when non-inferiority is not shown, i.e. the lower bound of the macro-F1 delta interval "
            "is below −max_accuracy_drop (strict; small test sets will often fail it)."
        ),
    )
    bootstrap_resamples: int = Field(
        2000, ge=100, le=100_000, description="Resamples of the paired and the bias bootstrap."
    )
    seed: int = Field(0, ge=0, description="Seed of the bootstrap resampling, for reproducible reports.")
    block_on_feedback_findings: bool = Field(
        False, description="Make problem findings of the Cognigy feedback report block promotion."
    )
    allow_unevaluated: list[str] = Field(
        default_factory=list,
        description=(
            "Blocking gates that may be not evaluated without blocking promotion (e.g. champion_regression "
            "for the very first model of a flow). By default a blocking gate that cannot measure blocks."
        ),
    )

    @field_validator("bias_slices")
    @classmethod
    def _distinct_slices(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if any(not s.strip() for s in value):
            raise ValueError("slice names must be non-empty")
        if len(set(value)) != len(value):
            raise ValueError("slice names must be distinct")
        return value

    @field_validator("allow_unevaluated")
    @classmethod
    def _known_gates(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(GATE_ORDER))
        if unknown:
            raise ValueError(f"unknown gate(s) {unknown}; gates are {list(GATE_ORDER)}")
        return list(dict.fromkeys(value))

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> GateConfig:
        """A named set of thresholds (``GATE_PROFILES``), with ``overrides`` applied on top.

        ``default``: the field defaults. ``strict``: the specification — macro precision and recall ≥ 0.95,
        |P − R| ≤ 0.05, between-groups accuracy difference ≤ 0.15.
        """
        if name not in GATE_PROFILES:
            raise ValueError(f"unknown gate profile {name!r}; profiles are {list(GATE_PROFILES)}")
        values: dict[str, Any] = dict(_PROFILE_VALUES[name])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def spec_strict(cls, **overrides: Any) -> GateConfig:
        """Alias of ``GateConfig.profile("strict", **overrides)``."""
        return cls.profile("strict", **overrides)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of every threshold (sorted keys), for audits: same hash, same gates."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_SPEC_TOLERANCE = 0.05
_PROFILE_VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "strict": {
        "precision_floor": 1 - _SPEC_TOLERANCE,
        "recall_floor": 1 - _SPEC_TOLERANCE,
        "pr_balance_tolerance": _SPEC_TOLERANCE,
        "bias_ceiling": 0.15,
    },
}
