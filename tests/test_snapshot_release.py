"""Issue 22: on a tenant whose production endpoints point at a Snapshot, a release is a new snapshot and an endpoint
switch, and a rollback is switching back. Whole `airflow dags test` runs against the emulator.

The stand-in tenant: the demo project with two endpoints serving the production flow ("Customer Service Webchat"
and a second one added here), both pointing at snapshot "Release 1" (S1). What a user would check afterwards: what
each endpoint serves (the emulator's `/_emulator/endpoints/{id}/serving` and its history of switches), the
snapshots of the project, how many trainings each flow got, and the run's verdict and audit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.airflow_env import dags_test
from devtools.servers import Emulator
from emulator import seed
from include.state import target_memory
from tests.test_fault_matrix import names
from tests.test_staging import PROD, PROMOTED, REJECTED, delta, export_fingerprint, per_flow, run_dag

pytestmark = pytest.mark.slow

PROJECT = seed.PROJECT_ID
BASE = "/new/v2.0"


class Tenant:
    """The emulator seen through its public API (X-API-Key) and its admin routes."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.http = requests.Session()
        self.http.headers.update({"X-API-Key": emulator.api_key, "Accept": "application/json"})

    def get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(f"{self.emu.url}{BASE}{path}", params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def endpoints(self) -> list[dict[str, Any]]:
        return self.get("/endpoints", projectId=PROJECT, limit=100)["items"]

    def serving_prod(self) -> list[dict[str, Any]]:
        """The endpoints of the production flow, each read on its own (a list item has no entrypoint)."""
        reference = self.get(f"/flows/{PROD}")["referenceId"]
        return [self.get(f"/endpoints/{e['_id']}") for e in self.endpoints() if e["flowId"] in (PROD, reference)]

    def point(self, endpoint_id: str, entrypoint: str) -> None:
        resp = self.http.patch(
            f"{self.emu.url}{BASE}/endpoints/{endpoint_id}", json={"entrypoint": entrypoint}, timeout=30
        )
        assert resp.status_code == 200, resp.text

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {s["_id"]: s for s in self.get("/snapshots", projectId=PROJECT, limit=100)["items"]}

    def entrypoints(self) -> dict[str, str]:
        return {e["name"]: e["entrypoint"] for e in self.serving_prod()}


@pytest.fixture
def tenant(emulator: Emulator) -> Tenant:
    """Two endpoints serve the production flow, both on snapshot "Release 1"."""
    emulator.reset()
    emulator.knobs(training_seconds=2)
    t = Tenant(emulator)
    emulator.add_endpoint(PROJECT, PROD, "Customer Service Voice", channel="voiceGateway2")
    s1 = emulator.add_snapshot(PROJECT, "Release 1", "the release customers meet", created_by="someone else")
    for endpoint in t.serving_prod():
        t.point(endpoint["_id"], s1["_id"])
    assert len(t.serving_prod()) == 2 and set(t.entrypoints().values()) == {s1["_id"]}
    t.s1 = s1  # type: ignore[attr-defined]
    return t


def switches(tenant: Tenant) -> dict[str, list[tuple[str, str]]]:
    """Each serving endpoint's switches (old -> new entrypoint), oldest first."""
    return {
        e["name"]: [(h["old_entrypoint"], h["new_entrypoint"]) for h in tenant.emu.endpoint_history(e["_id"])]
        for e in tenant.serving_prod()
    }


def test_a_good_challenger_is_released_as_a_new_snapshot_on_every_endpoint(
    airflow_home, tenant: Tenant, tmp_path: Path
) -> None:
    s1 = tenant.s1  # type: ignore[attr-defined]
    before = per_flow(tenant.emu)
    run = run_dag(airflow_home, tmp_path, PROMOTED)

    assert run.state == "success", names(run.events)
    assert run.final["outcome"] == "promoted"
    released = run.event("snapshot_released")
    s2 = released["snapshot"]
    assert released["previous"]["id"] == s1["_id"] and s2["id"] != s1["_id"] and s2["hash"]
    assert set(tenant.entrypoints().values()) == {s2["id"]}, "every serving endpoint is on the new snapshot"
    for endpoint in tenant.serving_prod():
        serving = tenant.emu.endpoint_serving(endpoint["_id"])
        assert serving["kind"] == "snapshot" and serving["snapshot"]["_id"] == s2["id"]
    # no endpoint ever pointed at anything but S1 and then S2 (never the live project, never an unjudged model)
    for name, history in switches(tenant).items():
        assert history[-1] == (s1["_id"], s2["id"]), (name, history)
        assert all(new in (s1["_id"], s2["id"]) for _, new in history), (name, history)
    assert tenant.snapshots()[s1["_id"]]["hash"] == s1["hash"], "S1 is unchanged"
    assert delta(per_flow(tenant.emu), before) == {"production": 1, "staging": 1}, "the live flow trained once"
    assert (
        "Release 1" in run.final["release"]["previous"]["name"] and run.final["release"]["snapshot"]["id"] == s2["id"]
    )

    # a person rolls the bot back to "Release 1" from the UI
    log = tmp_path / "rollback.log"
    proc = dags_test(airflow_home(), {"snapshot": "Release 1", "reason": "customers report wrong answers"},
                     dag_id="cognigy_snapshot_rollback", log_path=log, timeout=600)  # fmt: skip
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert set(tenant.entrypoints().values()) == {s1["_id"]}
    from tests.test_fault_matrix import audit_events

    rolled = [e for e in audit_events(airflow_home.state_dir, _run_id(log)) if e["event"] == "snapshot_rollback"]
    assert rolled and rolled[-1]["snapshot"]["id"] == s1["_id"] and rolled[-1]["reason"]


def test_a_rejected_challenger_changes_nothing_customers_meet(airflow_home, tenant: Tenant, tmp_path: Path) -> None:
    s1 = tenant.s1  # type: ignore[attr-defined]
    live = export_fingerprint(tenant.emu, PROD)
    snapshots_before = tenant.snapshots()
    run = run_dag(airflow_home, tmp_path, REJECTED)

    assert run.state == "success", names(run.events)
    assert run.final["outcome"] == "rejected"
    assert set(tenant.entrypoints().values()) == {s1["_id"]}
    assert all(len(h) == 1 for h in switches(tenant).values()), "no endpoint was switched by the run"
    assert tenant.snapshots() == snapshots_before, "no snapshot created, S1 unchanged"
    assert export_fingerprint(tenant.emu, PROD) == live, "the live flow holds what it held before"
    assert run.final["ungated_exposure_seconds"] == 0


def test_a_failure_after_the_first_endpoint_switched_switches_every_endpoint_back(
    airflow_home, tenant: Tenant, tmp_path: Path
) -> None:
    """The platform refuses the switch of the second endpoint once (an injected 400: a real platform cannot be made
    to fail on demand): the first endpoint, already on the new snapshot, goes back to S1, both read back."""
    s1 = tenant.s1  # type: ignore[attr-defined]
    second = tenant.serving_prod()[1]["_id"]
    tenant.emu.knobs(fail_next_requests=[{"method": "PATCH", "path_regex": f"/endpoints/{second}$", "status": 400,
                                          "count": 1, "detail": "injected: endpoint is being edited"}])  # fmt: skip
    run = run_dag(airflow_home, tmp_path, PROMOTED)

    assert run.state == "failed", "a failed release fails the run: a person should look"
    assert run.final["outcome"] == "release_failed_switched_back"
    failed = run.event("release_failed")
    assert failed["switched_back"] is True
    assert set(tenant.entrypoints().values()) == {s1["_id"]}
    first = tenant.serving_prod()[0]["name"]
    assert [new for _, new in switches(tenant)[first]][-2:] == [failed["snapshot"]["id"], s1["_id"]]
    assert "rollback_verified" in names(run.events), "the live flow is restored too"


def test_only_own_snapshots_are_pruned_to_make_room(airflow_home, tenant: Tenant, tmp_path: Path, monkeypatch) -> None:
    """9 snapshots the product did not create (S1 among them) + 1 it released earlier: the limit of 10 is reached;
    the product deletes its own (not served, `keep_released_snapshots: 0`) and releases."""
    for n in range(8):
        tenant.emu.add_snapshot(PROJECT, f"Someone's snapshot {n}", created_by="someone else")
    own = tenant.emu.add_snapshot(PROJECT, "nlu-retrain earlier", "released by this product earlier")
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(airflow_home.state_dir))
    target_memory.record_release(PROJECT, {"id": own["_id"], "name": own["name"]}, "an-earlier-run")
    assert len(tenant.snapshots()) == 10

    run = run_dag(airflow_home, tmp_path, {**PROMOTED, "keep_released_snapshots": 0})

    assert run.state == "success", names(run.events)
    assert [s["id"] for s in run.event("snapshots_pruned")["deleted"]] == [own["_id"]]
    left = tenant.snapshots()
    assert own["_id"] not in left and len(left) == 10
    assert set(tenant.entrypoints().values()) == {run.event("snapshot_released")["snapshot"]["id"]}


def test_an_agent_full_of_foreign_snapshots_is_refused_before_training(
    airflow_home, tenant: Tenant, tmp_path: Path
) -> None:
    for n in range(9):
        tenant.emu.add_snapshot(PROJECT, f"Someone's snapshot {n}", created_by="someone else")
    before = per_flow(tenant.emu)
    run = run_dag(airflow_home, tmp_path, PROMOTED)

    assert run.state == "failed"
    assert "training_submitted" not in names(run.events)
    assert delta(per_flow(tenant.emu), before) == {"production": 0, "staging": 0}
    assert "Someone's snapshot 3" in run.log and "nothing was changed" in run.log
    assert set(tenant.entrypoints().values()) == {tenant.s1["_id"]}  # type: ignore[attr-defined]


def test_endpoints_that_disagree_are_refused_before_anything_changes(
    airflow_home, tenant: Tenant, tmp_path: Path
) -> None:
    voice = next(e for e in tenant.serving_prod() if e["name"] == "Customer Service Voice")
    tenant.point(voice["_id"], PROJECT)  # one on the live project, one on S1
    live, before = export_fingerprint(tenant.emu, PROD), per_flow(tenant.emu)
    run = run_dag(airflow_home, tmp_path, PROMOTED)

    assert run.state == "failed"
    assert "disagree" in run.log and "Customer Service Voice" in run.log and "Customer Service Webchat" in run.log
    assert delta(per_flow(tenant.emu), before) == {"production": 0, "staging": 0}
    assert export_fingerprint(tenant.emu, PROD) == live
    assert "training_submitted" not in names(run.events)


def _run_id(log: Path) -> str:
    finished = [ln for ln in log.read_text(errors="replace").splitlines() if "DagRun Finished" in ln]
    return finished[-1].split("run_id=")[1].split(",")[0]
