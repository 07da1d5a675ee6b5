"""Releases as Cognigy Snapshots: what customers meet is a version, and rolling back is switching back to it.

On a tenant run as Cognigy recommends, production endpoints point at a Snapshot (an immutable copy of the agent,
trained NLU models included), not at the live project. There a retrain is judged in the live project (no customer
talks to it) and released by creating a snapshot and switching every serving endpoint to it; the snapshot that
served before is the rollback point.

- `release_path`: read what serves the target's flow and decide the path (or refuse, naming the endpoints).
- `make_room`: keep the agent under its snapshot limit by deleting only snapshots this product created.
- `release`: create the snapshot, find and check it, switch every endpoint, and switch all back on any failure.
- `switch_endpoints`: point endpoints at a snapshot and read each back.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from include.cognigy.errors import CognigyError, NotFound
from include.cognigy.model import Target
from include.cognigy.rest_v2 import Endpoint, RestV2Api, Snapshot

SNAPSHOT_LIMIT = 10  # per agent by default (dedicated installations may raise it)
KEEP_RELEASED = 2  # the last releases of this product that are never pruned (a rollback may need them)
SNAPSHOT_TASK_SECONDS = 300.0  # how long creating or deleting a snapshot may take before the release gives up
FIND_SECONDS = 60.0  # how long a created snapshot may take to show up in the list
NAME_LIMIT = 200

PathName = Literal["snapshot", "project"]


class ReleaseRefused(CognigyError):
    """What serves the flow cannot be released to safely (mixed or unreadable endpoints, no snapshot room):
    nothing was changed."""


class ReleaseFailed(CognigyError):
    """The release did not complete; `switched_back` tells whether every endpoint is proven back on the snapshot
    that served before."""

    def __init__(self, message: str, *, switched_back: bool, snapshot: Snapshot | None = None) -> None:
        super().__init__(message)
        self.switched_back = switched_back
        self.snapshot = snapshot


@dataclass
class ReleasePath:
    """How a target's change reaches customers.

    `snapshot`: every endpoint serving the flow points at the same snapshot (`serving`); a release is a new snapshot
    and an endpoint switch. `project`: the endpoints (if any) serve the live project; a release is a training of
    the live flow (staging or in place)."""

    path: PathName
    endpoints: list[Endpoint] = field(default_factory=list)
    serving: Snapshot | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "endpoints": [{"id": e.id, "name": e.name, "entrypoint": e.entrypoint, "flow_id": e.flow_id}
                          for e in self.endpoints],
            "serving_snapshot": self.serving.to_dict() if self.serving else None,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleasePath:
        serving = data.get("serving_snapshot")
        return cls(
            path=data["path"],
            endpoints=[Endpoint(e["id"], e["name"], e["entrypoint"], e.get("flow_id", "")) for e in data["endpoints"]],
            serving=Snapshot(serving["id"], serving["name"], serving.get("hash"), serving.get("created_at"))
            if serving
            else None,
        )


def release_path(api: RestV2Api, target: Target) -> ReleasePath:
    """Read what serves the target's flow. Endpoints that disagree (some on the project, some on a snapshot, or on
    different snapshots) are refused, naming them."""
    endpoints = api.serving_endpoints(target)
    entrypoints = {e.entrypoint for e in endpoints}
    if not endpoints or entrypoints == {target.project_id}:
        return ReleasePath("project", endpoints)
    if len(entrypoints) > 1:
        named = ", ".join(f"{e.name} ({e.id}) -> {e.entrypoint or 'nothing'}" for e in endpoints)
        raise ReleaseRefused(
            f"the endpoints serving flow {target.flow_id} disagree on what they serve: {named}; point them all at "
            "the project or at one snapshot, then run again (nothing was changed)"
        )
    (snapshot_id,) = entrypoints
    try:
        serving = api.snapshot(snapshot_id)
    except NotFound:
        names = ", ".join(e.name for e in endpoints)
        raise ReleaseRefused(
            f"endpoint(s) {names} point at {snapshot_id!r}, which is neither project {target.project_id} nor one of "
            "its snapshots (nothing was changed)"
        ) from None
    return ReleasePath("snapshot", endpoints, serving)


@dataclass
class Room:
    """The agent's snapshots against its limit: what may be deleted to make room, and what may not."""

    count: int
    deletable: list[Snapshot]
    foreign: list[Snapshot]


def room(api: RestV2Api, project_id: str, own: list[str], *, keep_last: int) -> Room:
    """`own`: ids of snapshots this product released, oldest first. Deletable: own, served by no endpoint of the
    project, not among the last `keep_last` released; oldest first."""
    serving = {e.entrypoint for e in api.endpoints(project_id)}
    existing = api.snapshots(project_id)
    protected = set(own[-keep_last:]) if keep_last > 0 else set()
    order = {sid: index for index, sid in enumerate(own)}
    deletable = [s for s in existing if s.id in order and s.id not in serving and s.id not in protected]
    deletable.sort(key=lambda s: order[s.id])
    return Room(len(existing), deletable, [s for s in existing if s.id not in order])


def check_room(room_now: Room, limit: int) -> None:
    """Refuse before training when one more snapshot cannot fit even after deleting every deletable one."""
    if room_now.count - len(room_now.deletable) >= limit:
        foreign = ", ".join(f"{s.name!r} ({s.id})" for s in room_now.foreign) or "none"
        raise ReleaseRefused(
            f"the agent holds {room_now.count} snapshots (limit {limit}) and this product may delete only "
            f"{len(room_now.deletable)} of them; snapshots it did not create: {foreign}. Delete some in Cognigy "
            "or raise the limit, then run again (nothing was changed)"
        )


def make_room(api: RestV2Api, room_now: Room, limit: int) -> list[Snapshot]:
    """Delete the oldest deletable snapshots until one more fits; returns what was deleted."""
    check_room(room_now, limit)
    deleted = []
    for snapshot in room_now.deletable[: max(0, room_now.count - limit + 1)]:
        with contextlib.suppress(NotFound):  # deleted by an earlier try
            wait_task(api, api.delete_snapshot(snapshot.id), f"deleting snapshot {snapshot.name!r}")
        deleted.append(snapshot)
    return deleted


def release(
    api: RestV2Api, target: Target, path: ReleasePath, name: str, description: str, *, tried_before: bool = False
) -> Snapshot:
    """Snapshot the project, check the snapshot (found by name, hash present), and switch every serving endpoint
    to it, reading each back. On any failure after the first switch, every endpoint is switched back to the
    snapshot that served before and read back (`ReleaseFailed.switched_back`). `tried_before`: an earlier try may
    have asked for this snapshot already; it is looked for (up to the task's time) before another is created."""
    assert path.path == "snapshot" and path.serving is not None
    created = find_by_name(api, target.project_id, name, wait=SNAPSHOT_TASK_SECONDS if tried_before else 0.0)
    if created is None:
        wait_task(api, api.create_snapshot(target.project_id, name, description), f"creating snapshot {name!r}")
        created = find_by_name(api, target.project_id, name, wait=FIND_SECONDS)
    if created is None:
        raise ReleaseFailed(f"snapshot {name!r} did not show up after it was created", switched_back=True)
    if not created.hash:
        raise ReleaseFailed(f"snapshot {name!r} ({created.id}) has no hash", switched_back=True, snapshot=created)
    ids = [e.id for e in path.endpoints]
    try:
        switch_endpoints(api, ids, created.id)
    except CognigyError as exc:
        back = path.serving.id
        try:
            switch_endpoints(api, ids, back)
        except CognigyError as again:
            raise ReleaseFailed(
                f"switching to {name!r} failed ({exc}) and switching back to {path.serving.name!r} failed too "
                f"({again})",
                switched_back=False,
                snapshot=created,
            ) from again
        raise ReleaseFailed(
            f"switching to {name!r} failed ({exc}); every endpoint is back on {path.serving.name!r}",
            switched_back=True,
            snapshot=created,
        ) from exc
    return created


def switch_endpoints(api: RestV2Api, endpoint_ids: list[str], entrypoint: str) -> None:
    """Point each endpoint at `entrypoint`, then read every one back; raises when one does not serve it."""
    for endpoint_id in endpoint_ids:
        api.point_endpoint(endpoint_id, entrypoint)
    wrong = [e for e in (api.endpoint(i) for i in endpoint_ids) if e.entrypoint != entrypoint]
    if wrong:
        named = ", ".join(f"{e.name} -> {e.entrypoint}" for e in wrong)
        raise CognigyError(f"endpoint(s) read back not serving {entrypoint}: {named}")


def find_by_name(api: RestV2Api, project_id: str, name: str, wait: float = 0.0) -> Snapshot | None:
    """The newest snapshot of that exact name (looking for up to `wait` s)."""
    deadline = time.monotonic() + wait
    while True:
        found = [s for s in api.snapshots(project_id) if s.name == name]
        if found:
            return max(found, key=lambda s: s.created_at or "")
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)


def wait_task(api: RestV2Api, task: Any, what: str) -> None:
    """Wait in place for a snapshot task (seconds to minutes); raises unless it ended done."""
    api.wait_short(task, what=what, timeout=SNAPSHOT_TASK_SECONDS)


def snapshot_name(bot: str, locale: str, run_id: str) -> str:
    """A name that says what it is and is unique per run and target (a retry finds its own snapshot by it)."""
    return f"nlu-retrain {bot} {locale} {run_id}"[:NAME_LIMIT]
