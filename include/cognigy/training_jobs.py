"""The original specification's "training-jobs" API (second dialect): every path and shape in one place.

`/api/v2/ai/nlp/...` with OAuth2 scopes ai:nlp:read ai:nlp:write ai:training:execute ai:models:rollback.
Not Cognigy's real API (see shared/reference/cognigy-rest-v2.md); spoken where a gateway exposes it.
Marked "extension" below: calls the specification lacks, offered by the emulator (and needed to
reconcile a lost submission and to score held-out utterances).
"""

from __future__ import annotations

from typing import Any

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

    def recent_trainings(self, target: Target) -> list[JobStatus]:
        """Extension: the model's jobs, newest first."""
        data = self.t.json(
            "GET",
            f"{PREFIX}/training/jobs?modelId={seg(target.model_id)}",
            f"GET training jobs of model {target.model_id}",
            safe=True,
        )
        items = data.get("items", data) if isinstance(data, dict) else data
        return [parse_job(item) for item in items]

    def metrics(self, target: Target, version_id: str) -> dict[str, Any]:
        return self.t.json(
            "GET",
            f"{PREFIX}/models/{seg(target.model_id)}/versions/{seg(version_id)}/metrics"
            "?include_bias_detection=true&include_precision_recall=true",
            f"GET metrics (model {target.model_id}, version {version_id})",
            safe=True,
        )

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
