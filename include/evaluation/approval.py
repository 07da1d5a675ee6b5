"""Whether a passed challenger waits for a person before it is released (issue 24 item 3; opt-in).

``approval`` (a trigger param) is ``never`` (the default: the gates alone decide), ``borderline`` (a person
decides when a gate passed only just — within ``approval_margin`` of its threshold — or the gate report has a
warning-level finding: a non-blocking gate failed) or ``always`` (every release waits). A rejection, or no answer
within ``approval_timeout_minutes``, releases nothing.

Plain Python (pydantic only): the DAG's `decide` task and the `approve` operator both call
:func:`needs_approval`; nothing here imports Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

APPROVAL_MODES = ("never", "borderline", "always")
DEFAULT_MARGIN = 0.02
DEFAULT_TIMEOUT_MINUTES = 720  # 12 h: a nightly run is answered the next working morning or counts as rejected
MAX_TIMEOUT_MINUTES = 7 * 24 * 60


class ApprovalSettings(BaseModel):
    """When a release waits for a person, how close to a threshold counts as borderline, and how long it waits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["never", "borderline", "always"] = "never"
    margin: float = Field(DEFAULT_MARGIN, ge=0.0, le=1.0)
    timeout_minutes: int = Field(DEFAULT_TIMEOUT_MINUTES, ge=1, le=MAX_TIMEOUT_MINUTES)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> ApprovalSettings:
        """From the flat trigger params `approval`, `approval_margin`, `approval_timeout_minutes` (an absent or
        empty value: the default). Raises pydantic's ValidationError on a wrong value."""
        params = params or {}
        values: dict[str, Any] = {}
        for key, field in (("approval", "mode"), ("approval_margin", "margin"),
                           ("approval_timeout_minutes", "timeout_minutes")):  # fmt: skip
            value = params.get(key)
            if value is not None and value != "":
                values[field] = value
        return cls(**values)

    def to_params(self) -> dict[str, Any]:
        """The flat params these settings come from (for a plan or a DAG run conf)."""
        return {"approval": self.mode, "approval_margin": self.margin, "approval_timeout_minutes": self.timeout_minutes}


def needs_approval(
    record: Any, settings: ApprovalSettings, report: Mapping[str, Any] | None = None
) -> tuple[bool, str]:
    """Whether this retrain waits for a person before its release, and why (shown to the approver and logged).

    `record` is the target's :class:`~include.results.RetrainRecord` after `evaluate`. Only a challenger that
    would be released (something was retrained and every blocking gate passed) ever waits. `report`, when given,
    is the full gate report (gate_report.json): it adds the scoring coverage and per-intent floors to the margin
    checks, which the summary in XCom does not carry.
    """
    if settings.mode == "never":
        return False, "approval is off (approval=never): the gates alone decide"
    if not (record.retrained and record.passed):
        return False, "nothing to release: the gates did not pass (or nothing was retrained)"
    if settings.mode == "always":
        return True, "approval=always: every release waits for a person"
    evaluated = record.evaluated
    findings = borderline_findings(evaluated.summary, (record.plan or {}).get("gates") or {}, settings.margin, report)
    if findings:
        return True, "borderline: " + "; ".join(findings)
    return False, f"not borderline: every measured gate passed by more than {settings.margin:g} and no warning"


def borderline_findings(
    summary: Mapping[str, Any],
    gates: Mapping[str, Any],
    margin: float,
    report: Mapping[str, Any] | None = None,
) -> list[str]:
    """What makes a passed challenger borderline, in words: each passed gate whose measured value lies within
    `margin` of its threshold (a value at its best possible, 0 for a ceiling or 1 for a floor, never does), and
    each warning-level finding (a non-blocking gate that failed). `gates` are the run's thresholds
    (``GateConfig`` as JSON); a threshold it does not name falls back to GateConfig's default."""
    from include.evaluation.config import GateConfig

    config = GateConfig(**{k: v for k, v in gates.items() if k in GateConfig.model_fields})
    findings = [f"warning: the non-blocking gate {name} failed" for name in summary.get("warning_gates") or []]
    skipped = set(summary.get("not_evaluated_gates") or {}) | set(summary.get("failed_gates") or [])
    platform = summary.get("gate_source") == "platform-reported"
    checks: list[tuple[str, str, Any, float, str]] = [
        ("precision_recall_balance", "macro precision", summary.get("macro_precision"), config.precision_floor, ">="),
        ("precision_recall_balance", "macro recall", summary.get("macro_recall"), config.recall_floor, ">="),
        ("bias", "bias score", summary.get("bias_score"), config.bias_ceiling, "<="),
    ]
    if platform:  # the platform-reported gates name the metric, not the gate, when it fails
        skipped |= {"precision_recall_balance"} if {"precision", "recall"} & skipped else set()
        skipped |= {"bias"} if "bias_score" in skipped else set()
    else:
        p, r = summary.get("macro_precision"), summary.get("macro_recall")
        if _number(p) and _number(r):
            checks.append(("precision_recall_balance", "|precision − recall|", abs(p - r),
                           config.pr_balance_tolerance, "<="))  # fmt: skip
        checks += [
            ("leakage", "leaked share", summary.get("leaked_share"), config.max_leakage_share, "<="),
            ("champion_regression", "accuracy change vs the champion", summary.get("accuracy_delta"),
             -config.max_accuracy_drop, ">="),
            ("champion_regression", "macro-F1 change vs the champion", summary.get("macro_f1_delta"),
             -config.max_accuracy_drop, ">="),
        ]  # fmt: skip
        checks += _report_checks(report, config)
    for gate, what, value, threshold, op in checks:
        if gate in skipped or not _number(value):
            continue
        room = value - threshold if op == ">=" else threshold - value
        # at its best (or, vs the champion, at least as good): nothing borderline about it
        best = value >= 0.0 if gate == "champion_regression" else value >= 1.0 if op == ">=" else value <= 0.0
        if 0.0 <= room < margin and not best:
            findings.append(f"{gate}: {what} {value:.4g} is within {margin:g} of its threshold {threshold:.4g}")
    return findings


def _report_checks(report: Mapping[str, Any] | None, config: Any) -> list[tuple[str, str, Any, float, str]]:
    """Margin checks only the full gate report allows: scoring coverage and the per-intent floors."""
    if not report:
        return []
    checks: list[tuple[str, str, Any, float, str]] = []
    by_name = {g.get("name"): g for g in report.get("gates") or []}
    coverage = (by_name.get("scoring_coverage") or {}).get("values") or {}
    checks.append(("scoring_coverage", "unscored share", coverage.get("unscored_share"),
                   config.max_unscored_share, "<="))  # fmt: skip
    per_intent = ((report.get("metrics") or {}).get("per_intent")) or {}
    judged = {k: v for k, v in per_intent.items() if (v.get("support") or 0) >= config.per_intent_min_support}
    for stat, floor in (("recall", config.per_intent_recall_floor), ("f1", config.per_intent_f1_floor)):
        values = [(v.get(stat), k) for k, v in judged.items() if _number(v.get(stat))]
        if values:
            lowest, name = min(values)
            checks.append(("per_intent_floor", f"lowest intent {stat} ({name})", lowest, floor, ">="))
    return checks


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
