"""What the gates decide: ``GateResult`` (one gate) and ``GateReport`` (every gate, the metrics, the champion
comparison), their JSON round trip and the small summary kept in XCom."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from include.evaluation.config import GateConfig

GATE_STATUSES = ("passed", "failed", "not_evaluated")
GateStatus = Literal["passed", "failed", "not_evaluated"]


@dataclass
class GateResult:
    """One gate's verdict.

    ``status`` is "passed", "failed" or "not_evaluated" (the gate could not measure). ``passed`` stays for
    compatibility: True for "passed", and for "not_evaluated" only when ``allowed_unevaluated`` (the gate is
    listed in ``GateConfig.allow_unevaluated``). ``skipped`` is True exactly when the gate was not evaluated.
    """

    name: str
    passed: bool
    blocking: bool
    values: dict[str, Any]
    thresholds: dict[str, Any]
    reason: str
    warnings: list[str] = field(default_factory=list)
    skipped: bool = False
    status: GateStatus | None = None
    allowed_unevaluated: bool = False

    def __post_init__(self) -> None:
        if self.status is None:
            self.status = "not_evaluated" if self.skipped else "passed" if self.passed else "failed"
        if self.status not in GATE_STATUSES:
            raise ValueError(f"status must be one of {GATE_STATUSES}, got {self.status!r}")
        self.skipped = self.status == "not_evaluated"

    @property
    def blocks(self) -> bool:
        """True when this gate keeps the challenger from being promoted."""
        return self.blocking and not self.passed

    @property
    def result_label(self) -> str:
        """What a reader sees in the report's result column."""
        if self.status == "passed":
            return "pass"
        if self.status == "failed":
            return "FAIL" if self.blocking else "warn"
        if not self.blocking:
            return "not evaluated (not blocking)"
        if self.allowed_unevaluated:
            return "not evaluated (allowed by allow_unevaluated)"
        return "NOT EVALUATED (blocks)"

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "name": self.name,
                "status": self.status,
                "passed": self.passed,
                "blocking": self.blocking,
                "skipped": self.skipped,
                "allowed_unevaluated": self.allowed_unevaluated,
                "result": self.result_label,
                "values": self.values,
                "thresholds": self.thresholds,
                "reason": self.reason,
                "warnings": self.warnings,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        return cls(
            name=d["name"],
            passed=bool(d["passed"]),
            blocking=bool(d["blocking"]),
            values=dict(d.get("values") or {}),
            thresholds=dict(d.get("thresholds") or {}),
            reason=d["reason"],
            warnings=list(d.get("warnings") or []),
            skipped=bool(d.get("skipped", False)),
            status=d.get("status"),
            allowed_unevaluated=bool(d.get("allowed_unevaluated", False)),
        )


@dataclass
class GateReport:
    passed: bool
    gates: list[GateResult]
    metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None
    comparison: dict[str, Any] | None
    bias: dict[str, Any]
    training_distribution: dict[str, Any]
    config: GateConfig
    held_out: dict[str, Any] | None = None

    def gate(self, name: str) -> GateResult:
        for gate in self.gates:
            if gate.name == name:
                return gate
        raise KeyError(name)

    @property
    def failed_gates(self) -> list[str]:
        """Blocking gates that keep the challenger from being promoted: failed, or not evaluated and not allowed."""
        return [g.name for g in self.gates if g.blocks]

    @property
    def warning_gates(self) -> list[str]:
        """Non-blocking gates that failed."""
        return [g.name for g in self.gates if not g.blocking and g.status == "failed"]

    @property
    def not_evaluated_gates(self) -> dict[str, str]:
        """Every gate that could not measure, with the reason (blocking or not, allowed or not)."""
        return {g.name: g.reason for g in self.gates if g.status == "not_evaluated"}

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "passed": self.passed,
                "failed_gates": self.failed_gates,
                "warning_gates": self.warning_gates,
                "not_evaluated_gates": self.not_evaluated_gates,
                "gates": [g.to_dict() for g in self.gates],
                "held_out": self.held_out,
                "metrics": self.metrics,
                "champion_metrics": self.champion_metrics,
                "comparison": self.comparison,
                "bias": self.bias,
                "training_distribution": self.training_distribution,
                "config": self.config.model_dump(mode="json"),
                "config_fingerprint": self.config.fingerprint(),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateReport:
        return cls(
            passed=bool(d["passed"]),
            gates=[GateResult.from_dict(g) for g in d["gates"]],
            metrics=d["metrics"],
            champion_metrics=d.get("champion_metrics"),
            comparison=d.get("comparison"),
            bias=d.get("bias") or {},
            training_distribution=d.get("training_distribution") or {},
            config=GateConfig(**d["config"]),
            held_out=d.get("held_out"),
        )

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe dict for Airflow XCom (well under 2 kB)."""
        comparison = self.comparison or {}
        leakage = next((g for g in self.gates if g.name == "leakage"), None)
        return jsonable(
            {
                "passed": self.passed,
                "failed_gates": self.failed_gates,
                "warning_gates": self.warning_gates,
                "not_evaluated_gates": {
                    g.name: "not evaluated: "
                    + _shorten(g.values.get("not_evaluated_because") or g.reason, _SUMMARY_REASON_CHARS)
                    for g in self.gates
                    if g.status == "not_evaluated"
                },
                "accuracy": round_value(self.metrics.get("accuracy")),
                "macro_precision": round_value(self.metrics.get("macro", {}).get("precision")),
                "macro_recall": round_value(self.metrics.get("macro", {}).get("recall")),
                "macro_f1": round_value(self.metrics.get("macro", {}).get("f1")),
                "bias_score": round_value(self.bias.get("bias_score")),
                "leaked_share": round_value(leakage.values.get("leaked_share")) if leakage else None,
                "accuracy_delta": round_value(comparison.get("accuracy", {}).get("delta")),
                "macro_f1_delta": round_value(comparison.get("macro_f1", {}).get("delta")),
                "p_value": _significant(comparison.get("mcnemar", {}).get("p_value")),
                "verdict": comparison.get("verdict"),
                "n_scored": self.metrics.get("counts", {}).get("scored"),
                "held_out_sha256": (self.held_out or {}).get("sha256"),
                "config_fingerprint": self.config.fingerprint(),
            }
        )


_SUMMARY_REASON_CHARS = 100


def round_value(value: Any, digits: int = 4) -> Any:
    if isinstance(value, bool):
        return value
    return round(float(value), digits) if isinstance(value, int | float | np.number) else value


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _significant(value: Any, digits: int = 3) -> Any:
    """Round to significant digits, so that tiny p-values stay visible."""
    return float(f"{float(value):.{digits}g}") if isinstance(value, int | float | np.number) else value


def jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars/arrays converted, NaN and infinities become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json"))
    return value
