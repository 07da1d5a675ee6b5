"""Snapshots and the endpoints that serve customers (REST API v2.0): their routes and every response shape.

A snapshot freezes, for every flow and locale of a project, the model version that served when it was taken
and the intents. An endpoint's `entrypoint` is its project id (it serves the live flows: a retrain reaches
customers at once) or a snapshot id of that project (it serves the frozen versions until switched back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field

from emulator.deps import Paging, page, runtime
from emulator.engine import SNAPSHOT_SECONDS
from emulator.ids import iso
from emulator.problems import Problem, not_found
from emulator.rest_api import BASE, task_view
from emulator.runtime import Runtime
from emulator.store import Store, snapshot_in_use_detail, snapshot_limit_detail

router = APIRouter(prefix=BASE)
Rt = Annotated[Runtime, Depends(runtime)]
PATCHABLE_ENDPOINT_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "entrypoint": (str,),
    "flowId": (str,),
    "localeId": (str, type(None)),  # null: the flow's primary locale
    "active": (bool,),
}


# --- shapes -------------------------------------------------------------------------------------------
def snapshot_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "_id": snapshot["id"],
        "name": snapshot["name"],
        "description": snapshot["description"],
        "hash": snapshot["hash"],
        "createdAt": iso(snapshot["created_at"]),
        "createdBy": snapshot["created_by"],
        "isPackaged": False,  # packaging (export as a file) is not emulated
    }


def endpoint_view(rt: Runtime, endpoint: dict[str, Any]) -> dict[str, Any]:
    # `flowId` is the served flow's referenceId (UUID) here; a real tenant may answer the flow's `_id` instead
    # (the client accepts either). `localeId` is the served locale's referenceId.
    served = serving(rt.store, endpoint)
    return {
        "_id": endpoint["id"],
        "referenceId": endpoint["reference_id"],
        "name": endpoint["name"],
        "channel": endpoint["channel"],
        "URLToken": endpoint["url_token"],
        "flowId": served.flow["reference_id"],
        "localeId": served.locale["reference_id"],
        "entrypoint": endpoint["entrypoint"],
        "active": endpoint["active"],
        "projectId": endpoint["project_id"],
        "nluConnectorId": None,  # the built-in Cognigy NLU
    }


# --- what an endpoint serves --------------------------------------------------------------------------
class ServingError(ValueError):
    """An endpoint setting does not resolve to a served model; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Served:
    entrypoint: str
    snapshot: dict[str, Any] | None  # None: the project's live flows
    flow: dict[str, Any]  # id, reference_id, name, primary_locale_id (as frozen, for a snapshot)
    locale: dict[str, Any]  # the locales row
    model_id: str
    version_id: str | None  # None: nothing trained serves

    @property
    def key(self) -> tuple[str, str, str]:
        """What customers meet: (entrypoint, flow id, locale id)."""
        return self.entrypoint, self.flow["id"], self.locale["id"]


def resolve(store: Store, project_id: str, entrypoint: str, flow_id: str, locale_id: str | None) -> Served:
    """The model an endpoint of `project_id` with these settings serves (flow and locale by `_id` or referenceId;
    locale None: the flow's primary locale). Raises ServingError naming the field that does not resolve."""
    snapshot = None
    if entrypoint == project_id:
        flow = store.get_flow(flow_id) or store.get_flow_by_reference(flow_id)
        if flow is None or flow["project_id"] != project_id:
            raise ServingError("flowId", f"'{flow_id}' is not a flow of project '{project_id}'")
    else:
        snapshot = store.get_snapshot(entrypoint)
        if snapshot is None or snapshot["project_id"] != project_id:
            raise ServingError(
                "entrypoint", f"'{entrypoint}' is neither the project '{project_id}' nor a snapshot of it"
            )
        flow = store.snapshot_flow(entrypoint, flow_id)
        if flow is None:
            raise ServingError("flowId", f"snapshot '{entrypoint}' does not contain flow '{flow_id}'")
    wanted = locale_id or flow["primary_locale_id"]
    locale = store.get_locale(wanted) or store.get_locale_by_reference(wanted)
    model = None
    if locale is not None:
        if snapshot is None:
            live = store.model_for(flow["id"], locale["id"])
            model = None if live is None else {"model_id": live["id"], "version_id": live["active_version_id"]}
        else:
            model = store.snapshot_model(snapshot["id"], flow["id"], locale["id"])
    if locale is None or model is None:
        raise ServingError("localeId", f"flow '{flow['id']}' has no locale '{wanted}' in '{entrypoint}'")
    return Served(entrypoint, snapshot, flow, locale, model["model_id"], model["version_id"])


def serving(store: Store, endpoint: dict[str, Any]) -> Served:
    """What a stored endpoint serves right now."""
    try:
        return resolve(
            store, endpoint["project_id"], endpoint["entrypoint"], endpoint["flow_id"], endpoint["locale_id"]
        )
    except ServingError as exc:  # the store keeps endpoints resolvable; this is a broken state
        raise Problem(409, f"Endpoint '{endpoint['id']}' serves nothing: {exc}") from exc


def get_endpoint(rt: Runtime, endpoint_id: str) -> dict[str, Any]:
    endpoint = rt.store.get_endpoint(endpoint_id)
    if endpoint is None:
        raise not_found("Endpoint", endpoint_id)
    return endpoint


def _project(rt: Runtime, project_id: str) -> None:
    if not rt.store.project_exists(project_id):
        raise not_found("Project", project_id)


def check_snapshot_room(rt: Runtime, project_id: str) -> None:
    """400 when the project already has the most snapshots the `max_snapshots` knob allows."""
    count, limit = rt.store.count_snapshots(project_id), rt.knobs.get().max_snapshots
    if count >= limit:
        raise Problem(400, f"Invalid request: {snapshot_limit_detail(project_id, count, limit)}")


# --- snapshots ----------------------------------------------------------------------------------------
class SnapshotBody(BaseModel):
    projectId: str
    name: str = Field(min_length=1)  # names need not be unique
    description: str = ""


@router.post("/snapshots", status_code=201)
def create_snapshot(rt: Rt, body: SnapshotBody) -> dict[str, Any]:
    """A createSnapshot task; the snapshot (found by name in the list) exists once the task is done."""
    _project(rt, body.projectId)
    check_snapshot_room(rt, body.projectId)
    task = rt.engine.create_task(
        dialect="cognigy",
        task_type="createSnapshot",
        model=None,
        project_id=body.projectId,
        parameters={"projectId": body.projectId, "name": body.name, "description": body.description},
        payload=None,
        duration=SNAPSHOT_SECONDS,
    )
    return task_view(rt, task)


@router.get("/snapshots")
def list_snapshots(
    rt: Rt,
    projectId: str,
    paging: Paging,
) -> dict[str, Any]:
    """Oldest first."""
    _project(rt, projectId)
    snapshots, total = rt.store.list_snapshots(projectId, paging.limit, paging.skip)
    return page([snapshot_view(s) for s in snapshots], total, paging.limit, paging.skip)


def _snapshot(rt: Runtime, snapshot_id: str) -> dict[str, Any]:
    snapshot = rt.store.get_snapshot(snapshot_id)
    if snapshot is None:
        raise not_found("Snapshot", snapshot_id)
    return snapshot


@router.get("/snapshots/{snapshotId}")
def get_snapshot(rt: Rt, snapshotId: str) -> dict[str, Any]:
    return snapshot_view(_snapshot(rt, snapshotId))


@router.delete("/snapshots/{snapshotId}")
def delete_snapshot(rt: Rt, snapshotId: str) -> dict[str, Any]:
    """A deleteSnapshot task; refused while an endpoint serves the snapshot."""
    snapshot = _snapshot(rt, snapshotId)
    pointing = rt.store.list_endpoints(entrypoint=snapshotId)
    if pointing:
        raise Problem(400, f"Invalid request: {snapshot_in_use_detail(snapshotId, pointing)}")
    task = rt.engine.create_task(
        dialect="cognigy",
        task_type="deleteSnapshot",
        model=None,
        project_id=snapshot["project_id"],
        parameters={"snapshotId": snapshotId, "projectId": snapshot["project_id"]},
        payload=None,
        duration=SNAPSHOT_SECONDS,
    )
    return task_view(rt, task)


# --- endpoints ----------------------------------------------------------------------------------------
INDEX_ITEM_OMITS = frozenset({"entrypoint", "active"})


@router.get("/endpoints")
def list_endpoints(
    rt: Rt,
    projectId: str,
    paging: Paging,
) -> dict[str, Any]:
    _project(rt, projectId)
    # The official client's IEndpointIndexItem_2_0 carries neither `entrypoint` nor `active`: what an endpoint
    # serves is read with GET /endpoints/{id}.
    views = [endpoint_view(rt, endpoint) for endpoint in rt.store.list_endpoints(project_id=projectId)]
    items = [{k: v for k, v in view.items() if k not in INDEX_ITEM_OMITS} for view in views]
    return paging.of(items)


@router.get("/endpoints/{endpointId}")
def read_endpoint(rt: Rt, endpointId: str) -> dict[str, Any]:
    return endpoint_view(rt, get_endpoint(rt, endpointId))


def _check_patch(changes: dict[str, Any]) -> None:
    """400 naming the first field a PATCH may not set or gives a value of the wrong type."""
    allowed = ", ".join(PATCHABLE_ENDPOINT_FIELDS)
    for field, value in changes.items():
        if field not in PATCHABLE_ENDPOINT_FIELDS:
            raise Problem(400, f"Invalid request: {field}: cannot be changed with PATCH (allowed: {allowed})")
        types = PATCHABLE_ENDPOINT_FIELDS[field]
        if not isinstance(value, types) or (isinstance(value, str) and not value.strip()):
            expected = " or ".join("null" if t is type(None) else f"a non-empty {t.__name__}" for t in types)
            raise Problem(400, f"Invalid request: {field}: must be {expected}, got {value!r}")


@router.patch("/endpoints/{endpointId}")
def patch_endpoint(rt: Rt, endpointId: str, changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Change an endpoint at once (partial body); a change of what it serves goes into its history."""
    _check_patch(changes)
    with rt.store.transaction():
        endpoint = get_endpoint(rt, endpointId)
        before = serving(rt.store, endpoint)
        entrypoint = changes.get("entrypoint", endpoint["entrypoint"])
        locale_id = changes["localeId"] if "localeId" in changes else endpoint["locale_id"]
        try:
            after = resolve(
                rt.store, endpoint["project_id"], entrypoint, changes.get("flowId", endpoint["flow_id"]), locale_id
            )
        except ServingError as exc:
            raise Problem(400, f"Invalid request: {exc}") from exc
        columns: dict[str, Any] = {"entrypoint": entrypoint, "flow_id": after.flow["id"]}
        if "localeId" in changes:
            columns["locale_id"] = None if locale_id is None else after.locale["id"]
        columns.update({name: changes[name] for name in ("name", "active") if name in changes})
        rt.store.update_endpoint(endpointId, columns, rt.engine.clock(), served=(before.key, after.key))
        return endpoint_view(rt, get_endpoint(rt, endpointId))
