"""The second, made-up dialect: the seed tutorial's "training-jobs" API under /api/v2/ai/nlp.

It does not exist on Cognigy. Each model is the seeded flow in one locale; it shares the task engine, the model
versions and the serving pointer with the real dialect, so a completed job's version serves `nlu/scores` too.
Only bearer tokens from POST /oauth/token are accepted.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from emulator import classifier
from emulator.auth import AUDIENCE_JOBS
from emulator.deps import principal, runtime
from emulator.ids import iso
from emulator.problems import Problem, not_found
from emulator.rest_api import issue_token
from emulator.runtime import Runtime
from include.data import dataset

BASE = "/api/v2/ai/nlp"
router = APIRouter(prefix=BASE)
token_router = APIRouter()
Rt = Annotated[Runtime, Depends(runtime)]

READ, EXECUTE, ROLLBACK = "ai:nlp:read", "ai:training:execute", "ai:models:rollback"
STATUS_NAMES = {  # engine status -> this dialect's status
    "queued": "queued",
    "active": "running",
    "cancelling": "running",
    "done": "completed",
    "error": "failed",
    "cancelled": "failed",
    "rolled_back": "rolled_back",
}


def needs(scope: str) -> Any:
    """Route dependency: the bearer token must carry `scope` (checked before the body is validated)."""

    def check(request: Request) -> None:
        if scope not in principal(request).scopes:
            raise Problem(403, f"The access token lacks the required scope '{scope}'", requiredScope=scope)

    return Depends(check)


def _model(rt: Runtime, model_id: str) -> dict[str, Any]:
    model = rt.store.get_model(model_id)
    if model is None:
        raise not_found("Model", model_id)
    return model


def _locale_name(rt: Runtime, model: dict[str, Any]) -> str:
    locale = rt.store.get_locale(model["locale_id"])
    assert locale is not None
    return locale["name"]


def job_view(rt: Runtime, task: dict[str, Any]) -> dict[str, Any]:
    status = STATUS_NAMES[task["status"]]
    reason = task["fail_reason"] or ("cancelled" if task["status"] == "cancelled" else None)
    return {
        "jobId": task["id"],
        "modelId": task["model_id"],
        "status": status,
        "modelVersionId": task["version_id"],
        "startedAt": iso(task["created_at"]),
        "completedAt": iso(task["finished_at"]),
        "progress": rt.engine.current_step(task) / 100,
        "failureReason": reason if status == "failed" else None,
    }


@token_router.post("/oauth/token")
async def oauth_token(request: Request) -> JSONResponse:
    return await issue_token(request, AUDIENCE_JOBS, scope_param_allowed=True)


class ComputeConstraints(BaseModel):
    maxGpuMemory: float | str | None = None
    maxCpuCores: float | None = Field(default=None, gt=0)
    timeoutSeconds: float | None = Field(default=None, gt=0)


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    modelId: str = Field(min_length=1)
    trainingDataSliceMatrix: dict[str, int] | None = None
    convergenceThreshold: float | None = Field(default=None, gt=0)
    computeConstraints: ComputeConstraints | None = None
    maxDatasetSize: int | None = Field(default=None, ge=1)
    rollbackTriggerVersionId: str | None = None


@router.post("/training/jobs", status_code=202, dependencies=[needs(EXECUTE)])
def submit_job(
    rt: Rt,
    body: JobRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    request_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    stored_key = f"jobs:{idempotency_key}" if idempotency_key else None
    if stored_key and (replayed := _replay(rt, stored_key, request_hash)) is not None:
        return replayed
    model = _model(rt, body.modelId)
    locale = _locale_name(rt, model)
    try:
        examples = dataset.sample_training(locale, body.trainingDataSliceMatrix)
    except ValueError as exc:
        raise Problem(400, f"Invalid request: trainingDataSliceMatrix: {exc}") from exc
    try:
        classifier.check_trainable(examples)
    except classifier.TrainingDataError as exc:
        raise Problem(400, f"Invalid request: trainingDataSliceMatrix: {exc}") from exc
    size = sum(len(sentences) for sentences in examples.values())
    if body.maxDatasetSize is not None and size > body.maxDatasetSize:
        raise Problem(
            400, f"Invalid request: maxDatasetSize: the matrix selects {size} sentences > {body.maxDatasetSize}"
        )
    if body.rollbackTriggerVersionId and rt.store.get_version(model["id"], body.rollbackTriggerVersionId) is None:
        raise Problem(
            400, f"Invalid request: rollbackTriggerVersionId: version '{body.rollbackTriggerVersionId}' not found"
        )
    timeout = body.computeConstraints.timeoutSeconds if body.computeConstraints else None
    try:
        task = rt.engine.create_task(
            dialect="jobs",
            task_type="trainIntents",
            model=model,
            project_id=rt.store.get_flow(model["flow_id"])["project_id"],
            parameters=body.model_dump(mode="json"),
            payload={"matrix": body.trainingDataSliceMatrix},
            duration=rt.knobs.get().training_seconds,
            deadline=timeout,
            deadline_reason=f"Training exceeded computeConstraints.timeoutSeconds ({timeout:g} s)" if timeout else None,
            task_id=str(uuid.uuid4()),
            version_id=str(uuid.uuid4()),
            idempotency_key=stored_key,
            request_hash=request_hash,
        )
    except sqlite3.IntegrityError:  # a concurrent request with the same Idempotency-Key won the race
        replayed = _replay(rt, stored_key or "", request_hash)
        if replayed is None:
            raise
        return replayed
    return JSONResponse(_accepted(rt, task), status_code=202)


def _accepted(rt: Runtime, task: dict[str, Any]) -> dict[str, Any]:
    view = job_view(rt, task)
    return {key: view[key] for key in ("jobId", "status", "modelVersionId", "startedAt", "completedAt")}


def _replay(rt: Runtime, stored_key: str, request_hash: str) -> JSONResponse | None:
    task = rt.store.task_by_idempotency_key(stored_key)
    if task is None:
        return None
    if task["request_hash"] != request_hash:
        raise Problem(409, "Idempotency-Key was already used with a different request body")
    return JSONResponse(_accepted(rt, task), status_code=202, headers={"Idempotent-Replayed": "true"})


@router.get("/training/jobs/{jobId}", dependencies=[needs(READ)])
def get_job(rt: Rt, jobId: str) -> dict[str, Any]:
    task = rt.store.get_task(jobId)
    if task is None or task["dialect"] != "jobs":
        raise not_found("Training job", jobId)
    return job_view(rt, task)


@router.get("/training/jobs", dependencies=[needs(READ)])
def list_jobs(rt: Rt, modelId: str | None = None, limit: int = 100) -> dict[str, Any]:
    if modelId is not None:
        _model(rt, modelId)
    if not 1 <= limit <= 1000:
        raise Problem(400, f"Invalid request: limit: must be between 1 and 1000, got {limit}")
    tasks, total = rt.store.list_tasks("jobs", model_id=modelId, limit=limit)
    return {"items": [job_view(rt, task) for task in tasks], "total": total}


@router.get("/models/{modelId}", dependencies=[needs(READ)])
def get_model(rt: Rt, modelId: str) -> dict[str, Any]:
    model = _model(rt, modelId)
    return {
        "modelId": model["id"],
        "activeVersionId": model["active_version_id"],
        "versions": [
            {"versionId": v["version_id"], "createdAt": iso(v["created_at"]), "jobId": v["task_id"]}
            for v in rt.store.list_versions(model["id"])
        ],
    }


def _version(rt: Runtime, model: dict[str, Any], version_id: str) -> dict[str, Any]:
    version = rt.store.get_version(model["id"], version_id)
    if version is not None:
        return version
    tasks, _ = rt.store.list_tasks("jobs", model_id=model["id"])
    pending = next((t for t in tasks if t["version_id"] == version_id), None)
    if pending is not None:
        status = STATUS_NAMES[pending["status"]]
        raise Problem(409, f"Model version '{version_id}' is not available: its job {pending['id']} is {status}")
    raise not_found("Model version", version_id)


@router.get("/models/{modelId}/versions/{versionId}/metrics", dependencies=[needs(READ)])
def version_metrics(
    rt: Rt,
    modelId: str,
    versionId: str,
    include_bias_detection: bool = False,
    include_precision_recall: bool = False,
) -> dict[str, Any]:
    model = _model(rt, modelId)
    _version(rt, model, versionId)
    measured = rt.engine.metrics(model["id"], versionId)
    assert measured is not None
    answer: dict[str, Any] = {"f1Score": measured["f1Score"], "intentDistribution": measured["intentDistribution"]}
    if include_precision_recall:
        answer["precision"] = measured["precision"]
        answer["recall"] = measured["recall"]
    if include_bias_detection:
        answer["biasScore"] = measured["biasScore"]
    return answer


class PredictBody(BaseModel):
    text: str = Field(min_length=1)


@router.post("/models/{modelId}/versions/{versionId}/predict", dependencies=[needs(READ)])
def predict(rt: Rt, modelId: str, versionId: str, body: PredictBody) -> dict[str, Any]:
    model = _model(rt, modelId)
    _version(rt, model, versionId)
    pipeline = rt.engine.pipeline(model["id"], versionId)
    assert pipeline is not None
    scores = classifier.score(pipeline, body.text)
    return {"intent": scores[0][0], "score": scores[0][1], "scores": [{"name": n, "score": s} for n, s in scores]}


class RollbackBody(BaseModel):
    target_version_id: str = Field(min_length=1)


@router.post("/models/{modelId}/rollback", dependencies=[needs(ROLLBACK)])
def rollback(rt: Rt, modelId: str, body: RollbackBody) -> dict[str, Any]:
    model = _model(rt, modelId)
    if rt.store.get_version(model["id"], body.target_version_id) is None:
        raise not_found("Model version", body.target_version_id)
    with rt.store.transaction():
        current = rt.store.get_model(model["id"])
        assert current is not None
        replaced = current["active_version_id"]
        if replaced != body.target_version_id:
            rt.store.set_active_version(model["id"], body.target_version_id)
            produced_by = rt.store.get_version(model["id"], replaced)["task_id"] if replaced else None
            job = rt.store.get_task(produced_by) if produced_by else None
            if job is not None and job["dialect"] == "jobs":
                rt.store.update_task(
                    job["id"], only_if_status=("done",), status="rolled_back", last_changed=rt.engine.clock()
                )
    return {"modelId": model["id"], "activeVersionId": body.target_version_id, "status": "rolled_back"}
