"""Admin routes for tests and operators: no auth, no rate limit, not counted as tenant traffic."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from emulator.deps import runtime
from emulator.ids import object_id
from emulator.knobs import KnobError
from emulator.problems import Problem, not_found
from emulator.rest_api import scores_view
from emulator.runtime import Runtime
from emulator.seed import API_USER_ID
from emulator.snapshots import (
    Served,
    ServingError,
    check_snapshot_room,
    endpoint_view,
    get_endpoint,
    resolve,
    serving,
    snapshot_view,
)
from emulator.tenant import HEX24, TenantError, build_flow, new_endpoint

router = APIRouter(prefix="/_emulator")
Rt = Annotated[Runtime, Depends(runtime)]
RATE_KNOBS = {"rate_limit_requests", "rate_limit_window_seconds"}


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/knobs")
def get_knobs(rt: Rt) -> dict[str, Any]:
    return rt.knobs.as_json()


@router.patch("/knobs")
def patch_knobs(rt: Rt, changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Partial update; lists (fault rules) are replaced as a whole. A rate-limit change empties the window."""
    try:
        _, changed = rt.knobs.patch(changes)
    except KnobError as exc:
        raise Problem(400, f"Invalid request: {exc}") from exc
    if changed & RATE_KNOBS:
        rt.limiter.clear()
    return rt.knobs.as_json()


@router.get("/stats")
def stats(rt: Rt) -> dict[str, Any]:
    return {**rt.stats.snapshot(), **rt.engine.stats()}


@router.post("/reset")
def reset(rt: Rt) -> dict[str, str]:
    rt.reset()
    return {"status": "reset"}


# --- tenant builder -------------------------------------------------------------------------------------
class LocaleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intents: dict[str, list[str]] = Field(default_factory=dict)
    trained: bool = True  # train synchronously so the flow serves at once (like the seed)


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: str = Field(pattern=HEX24)
    flow_id: str = Field(pattern=HEX24)
    name: str = Field(min_length=1)
    locales: dict[str, LocaleSpec] = Field(min_length=1)
    endpoint: str | None = Field(default=None, min_length=1)  # an endpoint of this name serving the flow
    endpoint_channel: str = Field(default="webchat", min_length=1)
    reference_id: str | None = Field(default=None, pattern=r"^[0-9a-fA-F-]{36}$")  # default: a fresh UUID


@router.post("/flows", status_code=201)
def create_flow(rt: Rt, spec: FlowSpec) -> dict[str, Any]:
    """Create or replace a flow (its locales created in the project when missing), trained when asked.

    Answers {project_id, flow_id (= _id), reference_id (= referenceId), name, locale_ids: {name: _id},
    locales: {name: {locale_id, reference_id, model_id, version_id, trained}}, endpoint: {...} | null}."""
    try:
        return build_flow(
            rt.store,
            project_id=spec.project_id,
            flow_id=spec.flow_id,
            name=spec.name,
            locales={name: (locale.intents, locale.trained) for name, locale in spec.locales.items()},
            endpoint=spec.endpoint,
            endpoint_channel=spec.endpoint_channel,
            now=rt.engine.clock(),
            reference_id=spec.reference_id,
        )
    except TenantError as exc:
        raise Problem(400, f"Invalid request: {exc}") from exc


# --- serving timeline -----------------------------------------------------------------------------------
@router.get("/timeline")
def timeline(rt: Rt, flowId: str, locale: str) -> dict[str, Any]:
    """Every period a trained model served the flow in that locale (locale NAME), and who could reach it.

    Entries: {task_id (null for the seed or a built flow), version_id, since, until (null: still serving)},
    times in epoch seconds, oldest first."""
    flow = rt.store.get_flow(flowId)
    if flow is None:
        raise not_found("Flow", flowId)
    found = rt.store.locale_by_name(flow["project_id"], locale)
    if found is None or rt.store.model_for(flow["id"], found["id"]) is None:
        raise not_found(f"Locale of flow {flowId}", locale)
    # only endpoints on the project reach the live flow (one on a snapshot serves the frozen version)
    live = rt.store.list_endpoints(flow_id=flow["id"], entrypoint=flow["project_id"])
    endpoints = [e["name"] for e in live if e["active"]]
    return {
        "flow_id": flow["id"],
        "locale": found["name"],
        "endpoint_served": bool(endpoints),
        "endpoints": endpoints,
        "entries": rt.store.serving_timeline(flow["id"], found["id"]),
    }


# --- snapshots and what endpoints serve -------------------------------------------------------------------
class AdminSnapshotSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projectId: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str = ""
    created_by: str = API_USER_ID


@router.post("/snapshots", status_code=201)
def add_snapshot(rt: Rt, spec: AdminSnapshotSpec) -> dict[str, Any]:
    """A snapshot of the project as it is now, without a task (obeys the max_snapshots knob). Answers the
    snapshot as `GET /snapshots/{id}` does."""
    if not rt.store.project_exists(spec.projectId):
        raise not_found("Project", spec.projectId)
    check_snapshot_room(rt, spec.projectId)
    now = rt.engine.clock()
    snapshot = rt.store.create_snapshot(
        object_id(now),
        project_id=spec.projectId,
        name=spec.name,
        description=spec.description,
        created_by=spec.created_by,
        created_at=now,
        limit=rt.knobs.get().max_snapshots,
    )
    return snapshot_view(snapshot)


def _serving_view(endpoint_id: str, served: Served) -> dict[str, Any]:
    snapshot = served.snapshot
    return {
        "endpoint": endpoint_id,
        "entrypoint": served.entrypoint,
        "kind": "project" if snapshot is None else "snapshot",
        "snapshot": None
        if snapshot is None
        else {"_id": snapshot["id"], "name": snapshot["name"], "hash": snapshot["hash"]},
        "flow_id": served.flow["id"],
        "locale": served.locale["name"],
        "model_id": served.model_id,
        "version_id": served.version_id,
    }


@router.get("/endpoints/{endpointId}/serving")
def endpoint_serving(rt: Rt, endpointId: str) -> dict[str, Any]:
    """What the endpoint serves right now: {endpoint, entrypoint, kind: project|snapshot, snapshot: {_id, name,
    hash} | null, flow_id, locale (NAME), model_id, version_id (null: nothing trained)}."""
    return _serving_view(endpointId, serving(rt.store, get_endpoint(rt, endpointId)))


class EndpointScoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sentence: str = Field(min_length=1)
    locale: str | None = Field(default=None, min_length=1)  # a locale NAME; default: the endpoint's locale


@router.post("/endpoints/{endpointId}/score")
def endpoint_score(rt: Rt, endpointId: str, body: EndpointScoreBody) -> dict[str, Any]:
    """Score a sentence with the model the endpoint serves (a snapshot's frozen version or the live one):
    {scores: [nlu/scores items], model_id, version_id}."""
    endpoint = get_endpoint(rt, endpointId)
    served = serving(rt.store, endpoint)
    if body.locale is not None:
        locale = rt.store.locale_by_name(endpoint["project_id"], body.locale)
        try:
            served = resolve(
                rt.store,
                endpoint["project_id"],
                served.entrypoint,
                served.flow["id"],
                (locale or {}).get("id", body.locale),
            )
        except ServingError as exc:
            raise not_found(f"Locale of endpoint {endpointId}", body.locale) from exc
    scored = scores_view(rt, served.flow, served.locale, served.model_id, served.version_id, body.sentence)
    return {**scored, "model_id": served.model_id, "version_id": served.version_id}


@router.get("/endpoints/{endpointId}/history")
def endpoint_history(rt: Rt, endpointId: str) -> dict[str, Any]:
    """Every change of what the endpoint serves, oldest first: {endpoint, entries: [{at (epoch seconds),
    old_entrypoint, new_entrypoint, old_flow_id, new_flow_id, old_locale_id, new_locale_id}]}."""
    get_endpoint(rt, endpointId)
    entries = [{k: v for k, v in row.items() if k != "endpoint_id"} for row in rt.store.endpoint_history(endpointId)]
    return {"endpoint": endpointId, "entries": entries}


class AdminEndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projectId: str = Field(pattern=HEX24)
    flowId: str = Field(pattern=HEX24)
    name: str = Field(min_length=1)
    channel: str = Field(default="webchat", min_length=1)


@router.post("/endpoints", status_code=201)
def add_endpoint(rt: Rt, spec: AdminEndpointSpec) -> dict[str, Any]:
    """Another endpoint serving a flow of the project (on the live project, the flow's primary locale); answers it
    as `GET /endpoints/{id}` does."""
    flow = rt.store.get_flow(spec.flowId)
    if flow is None or flow["project_id"] != spec.projectId:
        raise not_found("Flow of project", f"{spec.projectId}/{spec.flowId}")
    endpoint = new_endpoint(spec.name, spec.channel, rt.engine.clock())
    rt.store.add_endpoint(endpoint.id, endpoint.reference_id, endpoint.name, endpoint.channel, flow["id"],
                          spec.projectId, endpoint.url_token)  # fmt: skip
    return endpoint_view(rt, get_endpoint(rt, endpoint.id))
