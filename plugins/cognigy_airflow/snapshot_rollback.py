"""A person rolls a bot back to a named earlier snapshot: every endpoint serving the flow is switched to it,
read back, and audited like a retrain (`snapshot_rollback`)."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from cognigy_provider.hooks.cognigy import CognigyHook

from cognigy_airflow.auditing import audit
from include.cognigy import releases
from include.cognigy.errors import CognigyError, NotFound
from include.cognigy.model import Target
from include.cognigy.rest_v2 import RestV2Api, Snapshot


def find_snapshot(api: RestV2Api, project_id: str, wanted: str) -> Snapshot:
    """The project's snapshot with this id, else the one snapshot with this exact name (several: refused)."""
    snapshots = api.snapshots(project_id)
    if by_id := [s for s in snapshots if s.id == wanted]:
        return by_id[0]
    by_name = [s for s in snapshots if s.name == wanted]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(s.id for s in by_name)
        raise AirflowFailException(f"{len(by_name)} snapshots are named {wanted!r} ({ids}): give the id instead")
    names = ", ".join(f"{s.name!r} ({s.id})" for s in snapshots) or "none"
    raise AirflowFailException(f"project {project_id} has no snapshot {wanted!r}; it has: {names}")


def switch_to_snapshot(
    project_id: str, flow_id: str, snapshot: str, cognigy_conn_id: str, reason: str, **context: Any
) -> dict[str, Any]:
    """Switch every endpoint that serves `flow_id` to `snapshot` (an id or an exact name) and read each back."""
    api = CognigyHook(cognigy_conn_id).get_client().v2
    if api is None:
        raise AirflowFailException("snapshot rollback needs the rest-v2 dialect (Cognigy's own API)")
    target = Target(project_id=project_id, flow_id=flow_id, locale="", model_id="")
    plan = {"conn_id": cognigy_conn_id}
    try:
        endpoints = api.serving_endpoints(target)
        if not endpoints:
            raise AirflowFailException(f"no endpoint serves flow {flow_id}: nothing to switch")
        chosen = find_snapshot(api, project_id, snapshot)
        before = {e.name: e.entrypoint for e in endpoints}
        releases.switch_endpoints(api, [e.id for e in endpoints], chosen.id)
    except (CognigyError, NotFound) as exc:
        audit(context, "rollback_failed", plan, None, reason=f"snapshot rollback to {snapshot!r}: {exc}")
        raise AirflowFailException(f"snapshot rollback to {snapshot!r} failed: {exc}") from None
    result = {"snapshot": chosen.to_dict(), "endpoints": sorted(before), "before": before, "reason": reason}
    audit(context, "snapshot_rollback", plan, None, project_id=project_id, flow_id=flow_id, **result)
    return result
