"""The original specification's "training-jobs" API (second dialect): every path and shape in one place.

`/api/v2/ai/nlp/...` with OAuth2 scopes ai:nlp:read ai:nlp:write ai:training:execute ai:models:rollback.
Not Cognigy's real API; spoken where a gateway exposes it. The specification defines five calls: the token POST,
POST /training/jobs, GET /training/jobs/{jobId}, GET /models/{id}/versions/{vid}/metrics and POST
/models/{id}/rollback; a run without a held-out set uses nothing else (README "The specification's API").
Marked "extension" below: calls the specification lacks, offered by the emulator and used only when a run gives
a held-out set to score (the serving version and per-utterance predictions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

from include.cognigy.model import JobState, JobStatus, Target
from include.cognigy.rest_v2 import seg
from include.cognigy.transport import Transport

PREFIX = "/api/v2/ai/nlp"

_STATE: dict[str, JobState] = {
    "queued": "queued",
    "running": "running",
    "completed": "succeeded",
    "failed": "failed",
    "rolled_back": "cancelled",
}


class VersionMetrics(TypedDict):
    """`GET .../versions/{vid}/metrics`, normalised: finite floats or None, JSON-safe throughout."""

    precision: float | None
    recall: float | None
    f1: float | None
    bias_score: float | None
    intent_distribution: dict[str, float]  # intent name -> share or count, as the server sent it
    raw: dict[str, Any]  # the answer itself (JSON-safe copy: NaN/Infinity become None)


# Spellings seen for each metric (the specification's camelCase first).
_METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "precision": ("precision", "macroPrecision", "precisionMacro"),
    "recall": ("recall", "macroRecall", "recallMacro"),
    "f1": ("f1", "f1Score", "f1_score", "fScore", "macroF1"),
    "bias_score": ("biasScore", "bias_score", "bias"),
}
# A metric given per average ({"macro": 0.8, "micro": 0.9}) is read in this order.
_AVERAGES = ("macro", "overall", "value", "weighted", "micro")
MLFLOW_METRIC_PREFIX = "platform."
SPEC_F1_BASELINE = 0.85  # the specification's accuracy delta is f1Score − 0.85


def _number(value: Any) -> float | None:
    """A finite float from a number or numeric string; None for anything else (bool, NaN, text, ...)."""
    if isinstance(value, Mapping):
        for key in _AVERAGES:
            if key in value:
                return _number(value[key])
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


def _json_safe(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def parse_metrics(data: Any) -> VersionMetrics:
    """Normalise a metrics answer: `precision`, `recall`, `f1`, `bias_score` (finite floats or None),
    `intent_distribution` ({intent: finite float}, non-numeric entries dropped) and `raw` (JSON-safe)."""
    answer = data if isinstance(data, Mapping) else {}
    values: dict[str, float | None] = {}
    for name, keys in _METRIC_KEYS.items():
        values[name] = next((v for v in (_number(answer.get(k)) for k in keys if k in answer) if v is not None), None)
    raw_dist = answer.get("intentDistribution", answer.get("intent_distribution"))
    distribution: dict[str, float] = {}
    if isinstance(raw_dist, Mapping):
        for intent, share in raw_dist.items():
            number = _number(share)
            if number is not None:
                distribution[str(intent)] = number
    elif isinstance(raw_dist, list):  # [{"intent"|"name": ..., "count"|"share"|"value": ...}]
        for item in raw_dist:
            if isinstance(item, Mapping):
                intent = item.get("intent", item.get("name"))
                number = _number(next((item[k] for k in ("count", "share", "value") if k in item), None))
                if intent is not None and number is not None:
                    distribution[str(intent)] = number
    return VersionMetrics(
        precision=values["precision"],
        recall=values["recall"],
        f1=values["f1"],
        bias_score=values["bias_score"],
        intent_distribution=distribution,
        raw=_json_safe(answer) if isinstance(data, Mapping) else {},
    )


def mlflow_platform_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """`platform.precision`, `platform.recall`, `platform.f1`, `platform.bias_score` (those present) and
    `platform.intents` (how many intents the distribution names): ready for MLflow `log_metrics`."""
    out = {
        f"{MLFLOW_METRIC_PREFIX}{name}": float(metrics[name])
        for name in ("precision", "recall", "f1", "bias_score")
        if isinstance(metrics.get(name), int | float) and not isinstance(metrics.get(name), bool)
    }
    distribution = metrics.get("intent_distribution")
    if isinstance(distribution, Mapping) and distribution:
        out[f"{MLFLOW_METRIC_PREFIX}intents"] = float(len(distribution))
    return out


def job_path(job_id: str) -> str:
    return f"{PREFIX}/training/jobs/{seg(job_id)}"


def parse_job(data: dict[str, Any]) -> JobStatus:
    raw = str(data.get("status", ""))
    return JobStatus(
        job_id=str(data["jobId"]),
        state=_STATE.get(raw, "running"),
        progress=data.get("progress"),
        reason=data.get("failureReason"),
        raw_status=raw,
        created_at=data.get("startedAt"),
        finished_at=data.get("completedAt"),
        version_id=data.get("modelVersionId"),
        extra={"modelId": data.get("modelId")},
    )


class TrainingJobsApi:
    dialect = "training-jobs"

    def __init__(self, transport: Transport) -> None:
        self.t = transport

    def model(self, target: Target) -> dict[str, Any]:
        """Extension: {modelId, activeVersionId, versions}."""
        return self.t.json("GET", f"{PREFIX}/models/{seg(target.model_id)}", f"GET model {target.model_id}", safe=True)

    def start_training(self, body: dict[str, Any], idempotency_key: str) -> JobStatus:
        data = self.t.json(
            "POST",
            f"{PREFIX}/training/jobs",
            f"POST training job (model {body.get('modelId')})",
            safe=False,
            json=body,
            headers={"Idempotency-Key": idempotency_key},
        )
        return parse_job(data)

    def job_status(self, job_id: str) -> JobStatus:
        return parse_job(self.t.json("GET", job_path(job_id), f"GET training job {job_id}", safe=True))

    def metrics(self, target: Target, version_id: str) -> VersionMetrics:
        """The server's own metrics of a version, normalised by :func:`parse_metrics` (reported, not trusted)."""
        data = self.t.json(
            "GET",
            f"{PREFIX}/models/{seg(target.model_id)}/versions/{seg(version_id)}/metrics"
            "?include_bias_detection=true&include_precision_recall=true",
            f"GET metrics (model {target.model_id}, version {version_id})",
            safe=True,
        )
        return parse_metrics(data)

    def predict(self, target: Target, version_id: str, text: str) -> list[dict[str, Any]]:
        """Extension: score one utterance against one version."""
        data = self.t.json(
            "POST",
            f"{PREFIX}/models/{seg(target.model_id)}/versions/{seg(version_id)}/predict",
            f"POST predict (model {target.model_id}, version {version_id})",
            safe=True,
            json={"text": text},
        )
        return [{"name": s["name"], "score": s["score"], "negated": False} for s in data.get("scores", [])]

    def rollback(self, target: Target, version_id: str) -> dict[str, Any]:
        # Rolling back to the same version twice leaves the same state, so the call may be retried.
        return self.t.json(
            "POST",
            f"{PREFIX}/models/{seg(target.model_id)}/rollback",
            f"POST rollback (model {target.model_id} to version {version_id})",
            safe=True,
            json={"target_version_id": version_id},
        )
