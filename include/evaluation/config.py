"""Thresholds of the promotion gates: ``GateConfig`` and its named profiles (``GATE_PROFILES``), and the
deployment's ``GatePolicy``, which the trigger form may only tighten (``resolve_gates``).

Loads pydantic only (no numpy, scipy or scikit-learn)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
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

    gate_policy: dict[str, Any] | None = Field(
        None,
        description=(
            "Provenance, not a threshold (left out of the fingerprint): the deployment's gate policy these "
            "thresholds come from (source, sha256 of its canonical JSON) and what the run tightened, or "
            "'form (no deployment policy)'."
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

        ``default`` (= ``strict``): the specification — precision and recall ≥ 1 − 0.05, |P − R| ≤ 0.05, bias
        ≤ 0.15. ``lenient``: the field defaults (floors 0.80), a looser profile chosen by name.
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
        return canonical_sha256(self.thresholds())

    def thresholds(self) -> dict[str, Any]:
        """Every threshold, as JSON values (the provenance `gate_policy` left out)."""
        return self.model_dump(mode="json", exclude={"gate_policy"})


def canonical_sha256(value: Any) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of a JSON value."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_SPEC_TOLERANCE = 0.05
SPEC_BIAS_CEILING = 0.15
_SPEC_VALUES: dict[str, Any] = {
    "precision_floor": 1 - _SPEC_TOLERANCE,
    "recall_floor": 1 - _SPEC_TOLERANCE,
    "pr_balance_tolerance": _SPEC_TOLERANCE,
    "bias_ceiling": SPEC_BIAS_CEILING,
}
# The specification's thresholds are the default profile (issue 25); `lenient` is GateConfig's field defaults.
_PROFILE_VALUES: dict[str, dict[str, Any]] = {"default": _SPEC_VALUES, "strict": _SPEC_VALUES, "lenient": {}}


# --- the deployment's gate policy ---------------------------------------------------------------------------
GATE_POLICY_VARIABLE = "cognigy_gate_policy"  # Airflow Variable holding the policy's JSON
GATE_POLICY_FILE_ENV = "COGNIGY_GATE_POLICY_FILE"  # a setting naming a reviewed JSON file instead
NO_POLICY = "form (no deployment policy)"
# Which way is stricter. A field in neither tuple (and not allow_unevaluated) is fixed by the policy.
TIGHTER_WHEN_HIGHER = (
    "precision_floor", "recall_floor", "per_intent_recall_floor", "per_intent_f1_floor", "bias_ratio_floor",
    "min_class_count", "weak_intent_f1", "significance_alpha", "block_on_feedback_findings",
    "require_non_inferiority",
)  # fmt: skip
TIGHTER_WHEN_LOWER = (
    "pr_balance_tolerance", "bias_ceiling", "max_accuracy_drop", "max_leakage_share", "max_unscored_share",
    "imbalance_ratio_max", "max_intent_f1_drop", "per_intent_min_support", "bias_min_group_size",
    "per_intent_pr_gap_warning", "weak_intent_max_share", "bias_require_ci_above_ceiling",
)  # fmt: skip
# What the trigger form calls a GateConfig field, where the names differ.
FORM_NAMES = {"allow_unevaluated": "allow_unevaluated_gates"}


class GatePolicyViolation(ValueError):
    """The policy cannot be read, or the run asks to loosen it. `errors()` as pydantic's, one per field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems

    def errors(self) -> list[dict[str, Any]]:
        return [{"loc": (field,), "msg": message} for field, message in self.problems]


@dataclass(frozen=True)
class GatePolicy:
    """The gate thresholds a deployment fixes: a JSON object of `GateConfig` fields, optionally "profile"
    (applied first) and "note"; without a profile the fields it leaves out keep `GateConfig`'s field defaults
    (the `lenient` values). With a policy, the policy is the deployment's default: a run's profile `default` adds
    nothing to it, `strict` tightens it to the specification's thresholds."""

    source: str
    document: dict[str, Any]

    @property
    def sha256(self) -> str:
        return canonical_sha256(self.document)

    @property
    def config(self) -> GateConfig:
        values = {k: v for k, v in self.document.items() if k not in ("profile", "note")}
        return GateConfig.profile(self.document.get("profile") or "lenient", **values)

    @classmethod
    def parse(cls, text: str, source: str) -> GatePolicy:
        """Parse and check a policy; `GatePolicyViolation` (field `gate_policy`) when it is not usable."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _unusable(source, f"not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise _unusable(source, "expected a JSON object of gate thresholds")
        keys = set(GateConfig.model_fields) - {"gate_policy"} | {"profile", "note"}
        unknown = sorted(set(document) - keys)
        if unknown:
            raise _unusable(source, f"unknown keys {unknown}")
        policy = cls(source, document)
        try:
            policy.config  # noqa: B018 - validates the thresholds
        except ValueError as exc:
            raise _unusable(source, str(exc).replace("\n", " ")[:500]) from None
        return policy

    @classmethod
    def load(cls, variable: str | None, file_setting: str | None) -> GatePolicy | None:
        """The deployment's policy: the Variable's JSON or the file the setting names (not both); None: none."""
        variable = (variable or "").strip() or None
        file_setting = (file_setting or "").strip() or None
        if variable and file_setting:
            raise _unusable(
                f"Variable {GATE_POLICY_VARIABLE} and {GATE_POLICY_FILE_ENV}={file_setting}",
                "two gate policies are set; keep one (the reviewed file, or the Variable)",
            )
        if variable:
            return cls.parse(variable, f"Variable {GATE_POLICY_VARIABLE}")
        if file_setting:
            source = f"file {file_setting}"
            try:
                text = Path(file_setting).read_text(encoding="utf-8")
            except OSError as exc:
                raise _unusable(source, f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None
            return cls.parse(text, source)
        return None

    @classmethod
    def deployment(cls, variable: str | None) -> GatePolicy | None:
        """`load` with the Variable's value and the file named by $COGNIGY_GATE_POLICY_FILE."""
        return cls.load(variable, os.environ.get(GATE_POLICY_FILE_ENV))

    def describe(self) -> str:
        return f"{self.source}, sha256 {self.sha256[:12]}…"


def _unusable(source: str, why: str) -> GatePolicyViolation:
    return GatePolicyViolation([("gate_policy", f"the deployment's gate policy ({source}) is unusable: {why}")])


def _looser(field: str, asked: Any, policy: Any) -> bool | None:
    """Is `asked` looser than `policy` for this field (None: the field has no direction, it is fixed)?"""
    if field in TIGHTER_WHEN_HIGHER:
        return asked < policy
    if field in TIGHTER_WHEN_LOWER:
        return asked > policy
    return None


def resolve_gates(profile: str, overrides: dict[str, Any], policy: GatePolicy | None) -> GateConfig:
    """The run's gates. No policy: the named profile with the overrides on top (the form decides). With a
    policy: its thresholds, tightened by the run's overrides and by the profile's values where those are stricter;
    an override looser than the policy (or naming a gate the policy does not allow unevaluated, or changing a field
    without a direction) raises `GatePolicyViolation` naming the field and the policy's value."""
    if policy is None:
        config = GateConfig.profile(profile, **overrides)
        config.gate_policy = {
            "source": NO_POLICY,
            "sha256": None,
            "tightened": {},
            "summary": f"gate policy: {NO_POLICY}",
        }
        return config
    base = policy.config
    values = base.thresholds()
    tightened: dict[str, dict[str, Any]] = {}
    problems: list[tuple[str, str]] = []
    if profile not in GATE_PROFILES:
        raise ValueError(f"unknown gate profile {profile!r}; profiles are {list(GATE_PROFILES)}")
    named = {} if profile == "default" else _PROFILE_VALUES[profile]  # the policy is the deployment's default
    for field, value in named.items():  # a named profile only ever tightens the policy
        if not _looser(field, value, values[field]) and value != values[field]:
            tightened[field] = {"policy": values[field], "run": value, "by": f"profile {profile}"}
            values[field] = value
    for field, value in overrides.items():
        name = FORM_NAMES.get(field, field)
        allowed = getattr(base, field)
        if field == "allow_unevaluated":
            extra = [g for g in value if g not in allowed]
            if extra:
                problems.append((name, f"{extra} may not be unevaluated: the deployment's gate policy allows only "
                                       f"{allowed} ({policy.describe()}); the form may only tighten it"))  # fmt: skip
            elif set(value) != set(allowed):
                tightened[field] = {"policy": list(allowed), "run": list(value), "by": "form"}
                values[field] = list(value)
            continue
        looser = _looser(field, value, allowed)
        if looser is None and value != allowed:
            problems.append((name, f"{value!r} differs from the deployment's gate policy ({allowed!r}, "
                                   f"{policy.describe()}), which fixes it"))  # fmt: skip
        elif looser:
            way = "at least" if field in TIGHTER_WHEN_HIGHER else "at most"
            problems.append((name, f"{value!r} is looser than the deployment's gate policy, which requires {way} "
                                   f"{allowed!r} ({policy.describe()}); the form may only tighten it"))  # fmt: skip
        elif value != values[field]:
            tightened[field] = {"policy": allowed, "run": value, "by": "form"}
            values[field] = value
    if problems:
        raise GatePolicyViolation(problems)
    changes = ", ".join(f"{k} {v['policy']}→{v['run']} ({v['by']})" for k, v in sorted(tightened.items()))
    summary = f"gate policy: {policy.describe()}" + (f"; tightened: {changes}" if changes else "; not tightened")
    provenance = {"source": policy.source, "sha256": policy.sha256, "tightened": tightened, "summary": summary}
    return GateConfig(**values, gate_policy=provenance)
