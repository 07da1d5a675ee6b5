"""The real dialect: NICE Cognigy.AI REST API v2.0 (the server side of `include/cognigy/rest_v2.py`).

Every response shape of this dialect is built in this module (snapshots and endpoints in `emulator/snapshots.py`),
so a real tenant's answers can correct it in one place.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from emulator import classifier
from emulator.auth import AUDIENCE_REST, REST_SCOPE, granted_scopes
from emulator.deps import Paging, page, runtime
from emulator.engine import (
    IMPORT_MODES,
    IMPORT_SECONDS,
    TRAINING_LIMIT_REASON,
    TRAINING_LIMIT_SECONDS,
    TaskFinishedError,
    limit_violation,
    merge_intents,
)
from emulator.ids import intent_id, iso
from emulator.problems import Problem, not_found
from emulator.runtime import Runtime

BASE = "/new/v2.0"
router = APIRouter(prefix=BASE)
token_router = APIRouter()
Rt = Annotated[Runtime, Depends(runtime)]


# --- shapes -------------------------------------------------------------------------------------------
def task_view(rt: Runtime, task: dict[str, Any]) -> dict[str, Any]:
    changed = iso(task["last_changed"])
    return {
        "_id": task["id"],
        "name": task["type"],
        "type": task["type"],
        "status": task["status"],
        "currentStep": rt.engine.current_step(task),
        "totalStep": 100,
        "parameters": task["parameters"],
        "data": task["parameters"],
        "failReason": task["fail_reason"],
        "createdAt": iso(task["created_at"]),
        "lastChanged": changed,
        "lastChangedAt": changed,
        "lastRunAt": iso(task["started_at"]),
        "lastFinishedAt": iso(task["finished_at"]),
        "createdBy": task["created_by"],
        "lastChangedBy": task["created_by"],
        "projectId": task["project_id"],
    }


def locale_view(locale: dict[str, Any]) -> dict[str, Any]:
    return {
        "_id": locale["id"],
        "referenceId": locale["reference_id"],
        "name": locale["name"],
        "nluLanguage": locale["nlu_language"],
    }


def scores_view(
    rt: Runtime, flow: dict[str, Any], locale: dict[str, Any], model_id: str, version_id: str | None, sentence: str
) -> dict[str, Any]:
    """The nlu/scores answer from one model version (live or frozen in a snapshot); 409 when none is trained."""
    pipeline = None if version_id is None else rt.engine.pipeline(model_id, version_id)
    if pipeline is None:
        raise Problem(409, f"Flow '{flow['id']}' has no trained NLU model for locale '{locale['id']}'")
    return {
        "scores": [
            {
                "id": intent_id(flow["id"], locale["id"], name),
                "name": name,
                "score": score,
                "negated": False,
                "confirmationSentence": None,
                "confirmationSentences": [],
                "disambiguationSentence": None,
                "flow": flow["reference_id"],
            }
            for name, score in classifier.score(pipeline, sentence)
        ]
    }


# --- lookups ------------------------------------------------------------------------------------------
def _flow(rt: Runtime, flow_id: str) -> dict[str, Any]:
    flow = rt.store.get_flow(flow_id)
    if flow is None:
        raise not_found("Flow", flow_id)
    return flow


def _locale(rt: Runtime, flow: dict[str, Any], locale_id: str | None) -> dict[str, Any]:
    locale = rt.store.get_locale(locale_id or flow["primary_locale_id"])
    if locale is None or locale["project_id"] != flow["project_id"]:
        raise not_found("Locale", str(locale_id))
    return locale


def _model(rt: Runtime, flow: dict[str, Any], locale: dict[str, Any]) -> dict[str, Any]:
    model = rt.store.model_for(flow["id"], locale["id"])
    if model is None:
        raise not_found("NLU model of flow/locale", f"{flow['id']}/{locale['id']}")
    return model


def _serving(rt: Runtime, model: dict[str, Any]) -> dict[str, Any] | None:
    if model["active_version_id"] is None:
        return None
    return rt.store.get_version(model["id"], model["active_version_id"])


def _task(rt: Runtime, task_id: str) -> dict[str, Any]:
    task = rt.store.get_task(task_id)
    if task is None or task["dialect"] != "cognigy":
        raise not_found("Task", task_id)
    return task


# --- auth ---------------------------------------------------------------------------------------------
def _basic_credentials(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return client_id, secret


async def issue_token(request: Request, audience: str, scope_param_allowed: bool) -> JSONResponse:
    """OAuth2 client-credentials grant shared by both dialects (form-encoded body)."""
    rt: Runtime = request.app.state.runtime
    form = await request.form()
    grant_type = form.get("grant_type")
    if grant_type != "client_credentials":
        raise Problem(
            400,
            f"Invalid request: grant_type: must be 'client_credentials', got {grant_type!r}",
            error="unsupported_grant_type",
        )
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if client_id is None and secret is None:
        client_id, secret = _basic_credentials(request)
    if not rt.auth.client_ok(str(client_id or ""), str(secret or "")):
        raise Problem(401, "Invalid client credentials", error="invalid_client")
    requested = form.get("scope")
    if scope_param_allowed:
        scopes = granted_scopes(str(requested) if requested is not None else None)
        if not scopes:
            raise Problem(
                400,
                f"Invalid request: scope: none of the requested scopes are allowed ({requested})",
                error="invalid_scope",
            )
    else:
        scopes = (str(requested),) if requested else (REST_SCOPE,)
    ttl = rt.knobs.get().token_ttl_seconds
    token = rt.auth.issue(audience, scopes, ttl)
    body = {"access_token": token, "token_type": "Bearer", "expires_in": int(ttl), "scope": " ".join(scopes)}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@token_router.post("/auth/oauth2/token")
async def oauth2_token(request: Request) -> JSONResponse:
    return await issue_token(request, AUDIENCE_REST, scope_param_allowed=False)


# --- flows and locales --------------------------------------------------------------------------------
@router.get("/flows/{flowId}")
def get_flow(
    rt: Rt,
    flowId: str,
    includeFeedbackReport: bool = False,
    preferredLocaleId: str | None = None,
) -> dict[str, Any]:
    flow = _flow(rt, flowId)
    locale = _locale(rt, flow, preferredLocaleId)
    model = _model(rt, flow, locale)
    serving = _serving(rt, model)
    view: dict[str, Any] = {
        "_id": flow["id"],
        "referenceId": flow["reference_id"],
        "name": flow["name"],
        "projectId": flow["project_id"],
        "isTrainingOutOfDate": serving is None or serving["trained_revision"] != model["intents_revision"],
    }
    if includeFeedbackReport:
        view["feedbackReport"] = serving["feedback"]["flow"] if serving else None
    return view


@router.get("/flows")
def list_flows(
    rt: Rt,
    projectId: str,
    paging: Paging,
) -> dict[str, Any]:
    if not rt.store.project_exists(projectId):
        raise not_found("Project", projectId)
    items = [
        {"_id": f["id"], "referenceId": f["reference_id"], "name": f["name"], "projectId": f["project_id"]}
        for f in rt.store.list_flows(projectId)
    ]
    return paging.of(items)


@router.get("/locales")
def list_locales(
    rt: Rt,
    projectId: str,
    paging: Paging,
) -> dict[str, Any]:
    if not rt.store.project_exists(projectId):
        raise not_found("Project", projectId)
    items = [locale_view(locale) for locale in rt.store.list_locales(projectId)]
    return paging.of(items)


# --- intents ------------------------------------------------------------------------------------------
@router.get("/flows/{flowId}/intents")
def list_intents(
    rt: Rt,
    flowId: str,
    paging: Paging,
    includeFeedbackReport: bool = False,
    preferredLocaleId: str | None = None,
) -> dict[str, Any]:
    flow = _flow(rt, flowId)
    locale = _locale(rt, flow, preferredLocaleId)
    serving = _serving(rt, _model(rt, flow, locale))
    reports = serving["feedback"]["intents"] if serving else {}
    items = []
    for name, sentences in rt.store.intents(flow["id"], locale["id"]).items():
        item: dict[str, Any] = {
            "_id": intent_id(flow["id"], locale["id"], name),
            "name": name,
            "exampleSentenceCount": len(sentences),
            "isDisabled": False,
        }
        if includeFeedbackReport:
            item["feedbackReport"] = reports.get(name)
        items.append(item)
    return paging.of(items)


class TrainBody(BaseModel):
    localeId: str | None = None
    mode: Literal["full", "quick"] = "full"


@router.post("/flows/{flowId}/intents/train", status_code=201)
def train_intents(rt: Rt, flowId: str, body: TrainBody | None = None) -> dict[str, Any]:
    body = body or TrainBody()
    flow = _flow(rt, flowId)
    locale = _locale(rt, flow, body.localeId)
    model = _model(rt, flow, locale)
    task = rt.engine.create_task(
        dialect="cognigy",
        task_type="trainIntents",
        model=model,
        project_id=flow["project_id"],
        parameters={"flowId": flow["id"], "localeId": locale["id"], "mode": body.mode},
        payload=None,
        duration=rt.knobs.get().training_seconds,
        deadline=TRAINING_LIMIT_SECONDS,
        deadline_reason=TRAINING_LIMIT_REASON,
    )
    return task_view(rt, task)


class ExportBody(BaseModel):
    localeId: str | None = None
    format: Literal["json"] = "json"


@router.post("/flows/{flowId}/intents/export")
def export_intents(rt: Rt, flowId: str, body: ExportBody | None = None) -> list[dict[str, Any]]:
    body = body or ExportBody()
    flow = _flow(rt, flowId)
    locale = _locale(rt, flow, body.localeId)
    intents = rt.store.intents(flow["id"], locale["id"])
    return [
        {"name": name, "exampleSentences": list(intents[name]), "isDisabled": False, "tags": []}
        for name in sorted(intents)
    ]


def _parse_import_file(raw: bytes) -> dict[str, list[str]]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, f"Invalid request: file: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise Problem(400, "Invalid request: file: must be a JSON array of intents")
    intents: dict[str, list[str]] = {}
    for index, entry in enumerate(data):
        where = f"file[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise Problem(400, f"Invalid request: {where}.name: every intent needs a non-empty name")
        name = entry["name"]
        sentences = entry.get("exampleSentences", [])
        if not isinstance(sentences, list):
            raise Problem(400, f"Invalid request: {where}.exampleSentences: must be an array (intent '{name}')")
        texts = []
        for position, sentence in enumerate(sentences):
            text = sentence.get("text") if isinstance(sentence, dict) else sentence
            if not isinstance(text, str) or not text.strip():
                raise Problem(
                    400, f"Invalid request: {where}.exampleSentences[{position}]: not a sentence (intent '{name}')"
                )
            texts.append(text)
        if name in intents:
            raise Problem(400, f"Invalid request: {where}.name: duplicate intent '{name}'")
        intents[name] = texts
    return intents


@router.post("/flows/{flowId}/intents/import", status_code=201)
async def import_intents(request: Request, flowId: str) -> dict[str, Any]:
    rt: Runtime = request.app.state.runtime
    flow = _flow(rt, flowId)
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise Problem(
            400, "Invalid request: body: must be multipart/form-data with fields mode, flowId, localeId, file"
        )
    form = await request.form()
    mode = str(form.get("mode") or "skip")
    if mode not in IMPORT_MODES:
        raise Problem(400, f"Invalid request: mode: must be one of {', '.join(IMPORT_MODES)}, got {mode!r}")
    if form.get("flowId") not in (None, "", flow["id"]):
        raise Problem(400, f"Invalid request: flowId: form field {form.get('flowId')!r} differs from the path")
    locale = _locale(rt, flow, str(form.get("localeId") or "") or None)
    upload = form.get("file")
    if upload is None:
        raise Problem(400, "Invalid request: file: Field required")
    raw = await upload.read() if isinstance(upload, UploadFile) else str(upload).encode()
    incoming = _parse_import_file(raw)
    if (violation := limit_violation(incoming)) is not None:
        raise Problem(400, f"Invalid request: file: {violation}")
    current = rt.store.intents(flow["id"], locale["id"])
    if (violation := limit_violation(merge_intents(current, incoming, mode))) is not None:
        raise Problem(400, f"Invalid request: file: after the {mode} import: {violation}")
    task = rt.engine.create_task(
        dialect="cognigy",
        task_type="importIntents",
        model=_model(rt, flow, locale),
        project_id=flow["project_id"],
        parameters={"flowId": flow["id"], "localeId": locale["id"], "mode": mode},
        payload={"mode": mode, "intents": list(incoming.items())},
        duration=IMPORT_SECONDS,
    )
    return task_view(rt, task)


# --- tasks --------------------------------------------------------------------------------------------
@router.get("/tasks/{taskId}")
def get_task(rt: Rt, taskId: str) -> dict[str, Any]:
    return task_view(rt, _task(rt, taskId))


@router.get("/tasks")
def list_tasks(
    rt: Rt,
    paging: Paging,
    projectId: str | None = None,
    sort: str = "createdAt:desc",
) -> dict[str, Any]:
    field_name, _, direction = sort.partition(":")
    if field_name != "createdAt" or direction not in ("asc", "desc", ""):
        raise Problem(400, f"Invalid request: sort: only createdAt:asc|desc is supported, got {sort!r}")
    # Every kind of task (trainIntents, importIntents, createSnapshot, ...), paged; like the platform, no `type`
    # filter (it is not documented, so an unknown query parameter such as `type=` is ignored).
    limit_, skip_ = min(paging.limit, rt.knobs.get().task_page_cap), paging.skip
    tasks, total = rt.store.list_tasks(
        "cognigy", project_id=projectId, newest_first=direction != "asc", limit=limit_, skip=skip_
    )
    return page([task_view(rt, task) for task in tasks], total, limit_, skip_)


@router.post("/tasks/{taskId}/cancel")
def cancel_task(rt: Rt, taskId: str) -> dict[str, Any]:
    _task(rt, taskId)
    try:
        rt.engine.cancel(taskId)
    except TaskFinishedError as exc:
        raise Problem(400, f"Task '{taskId}' is already {exc} and cannot be cancelled") from exc
    return {}


# --- NLU scores ---------------------------------------------------------------------------------------
class ScoresBody(BaseModel):
    flowReferenceId: str
    localeReferenceId: str
    sentence: str = Field(min_length=1)


@router.post("/projects/{projectId}/nlu/scores")
def nlu_scores(rt: Rt, projectId: str, body: ScoresBody) -> dict[str, Any]:
    if not rt.store.project_exists(projectId):
        raise not_found("Project", projectId)
    flow = rt.store.get_flow_by_reference(body.flowReferenceId)
    if flow is None or flow["project_id"] != projectId:
        raise not_found("Flow with referenceId", body.flowReferenceId)
    locale = rt.store.get_locale_by_reference(body.localeReferenceId)
    if locale is None or locale["project_id"] != projectId:
        raise not_found("Locale with referenceId", body.localeReferenceId)
    model = _model(rt, flow, locale)
    if any(t["type"] == "trainIntents" and t["model_id"] == model["id"] for t in rt.store.open_tasks()):
        rt.stats.scored_while_training(f"{flow['id']}/{locale['name']}")
    return scores_view(rt, flow, locale, model["id"], model["active_version_id"], body.sentence)
