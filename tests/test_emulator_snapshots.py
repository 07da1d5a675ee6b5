"""Snapshots and endpoints with an `entrypoint` in the emulator, over real HTTP (REST API v2.0 and admin routes)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from devtools.servers import Emulator
from emulator.seed import ENDPOINT, FLOW_ID, FLOW_REFERENCE_ID, LOCALES, PROJECT_ID, SEED_VERSION_ID, STAGING_FLOW_ID
from tests.test_emulator import BASE, FAST, as_export, assert_problem, import_intents, start_training, wait_task

EP = ENDPOINT.id
SNAPSHOT_KEYS = {"_id", "name", "description", "hash", "createdAt", "createdBy", "isPackaged"}
ENDPOINT_KEYS = {
    "_id",
    "referenceId",
    "name",
    "channel",
    "URLToken",
    "flowId",
    "localeId",
    "entrypoint",
    "active",
    "projectId",
    "nluConnectorId",
}
TINY_INTENTS = {
    "Greet": ["hello there", "hi", "good morning", "hey you"],
    "Bye": ["goodbye", "see you later", "bye bye", "farewell"],
}


def post_snapshot(api: requests.Session, url: str, name: str, project_id: str = PROJECT_ID) -> dict[str, Any]:
    resp = api.post(f"{url}{BASE}/snapshots", json={"projectId": project_id, "name": name, "description": "d"})
    assert resp.status_code == 201, resp.text
    task = resp.json()
    assert task["type"] == "createSnapshot" and task["status"] == "queued"
    assert task["parameters"] == {"projectId": project_id, "name": name, "description": "d"}
    return task


def snapshots_named(api: requests.Session, url: str, name: str) -> list[dict[str, Any]]:
    found, cursor = [], None
    while True:
        params = {"projectId": PROJECT_ID, "limit": 100, **({"next": cursor} if cursor else {})}
        resp = api.get(f"{url}{BASE}/snapshots", params=params)
        assert resp.status_code == 200, resp.text
        found += [s for s in resp.json()["items"] if s["name"] == name]
        cursor = resp.json()["nextCursor"]
        if cursor is None:
            return found


def patch_endpoint(api: requests.Session, url: str, body: dict[str, Any], endpoint_id: str = EP) -> requests.Response:
    return api.patch(f"{url}{BASE}/endpoints/{endpoint_id}", json=body)


def retrain_live_flow(emu: Emulator, api: requests.Session, intents: dict[str, list[str]]) -> None:
    """Overwrite the live flow's en-US intents and train it; the flow then serves a new version."""
    emu.knobs(training_seconds=FAST)
    assert (
        wait_task(api, emu.url, import_intents(api, emu.url, as_export(intents), "overwrite")["_id"])[0]["status"]
        == "done"
    )
    assert wait_task(api, emu.url, start_training(api, emu.url)["_id"])[0]["status"] == "done"


def top_intents(scored: dict[str, Any]) -> set[str]:
    return {item["name"] for item in scored["scores"]}


# --- snapshots ------------------------------------------------------------------------------------------
def test_create_snapshot_is_a_task_then_listed_by_name_with_a_content_hash(
    emu: Emulator, api: requests.Session
) -> None:
    task = post_snapshot(api, emu.url, "release 1")
    assert not any("snapshot" in key.lower() for key in task)  # the answer does not name the snapshot
    listed = api.get(f"{emu.url}{BASE}/tasks", params={"projectId": PROJECT_ID}).json()["items"]
    assert [t["type"] for t in listed if t["_id"] == task["_id"]] == ["createSnapshot"]
    assert snapshots_named(api, emu.url, "release 1") == []  # not before the task is done
    done, seen = wait_task(api, emu.url, task["_id"])
    assert done["status"] == "done" and done["currentStep"] == 100 and len(seen) >= 5  # about a second of work

    (first,) = snapshots_named(api, emu.url, "release 1")
    assert set(first) == SNAPSHOT_KEYS and first["isPackaged"] is False and first["description"] == "d"
    read = api.get(f"{emu.url}{BASE}/snapshots/{first['_id']}")
    assert read.status_code == 200 and read.json() == first
    assert re.fullmatch(r"[0-9a-f]{64}", first["hash"]) and first["createdBy"] == done["createdBy"]

    # names need not be unique; an identical state has the same hash
    wait_task(api, emu.url, post_snapshot(api, emu.url, "release 1")["_id"])
    twins = snapshots_named(api, emu.url, "release 1")
    assert len(twins) == 2 and twins[0] == first and twins[1]["_id"] != first["_id"]
    assert twins[1]["hash"] == first["hash"]

    emu.knobs(training_seconds=FAST)
    assert wait_task(api, emu.url, start_training(api, emu.url)["_id"])[0]["status"] == "done"
    retrained = emu.add_snapshot(PROJECT_ID, "release 2")
    assert set(retrained) == SNAPSHOT_KEYS and retrained["hash"] != first["hash"]

    assert_problem(api.get(f"{emu.url}{BASE}/snapshots/{'0' * 24}"), 404, "Snapshot", "0" * 24)
    unknown = api.post(f"{emu.url}{BASE}/snapshots", json={"projectId": "0" * 24, "name": "x"})
    assert_problem(unknown, 404, "Project")
    assert_problem(api.post(f"{emu.url}{BASE}/snapshots", json={"projectId": PROJECT_ID}), 400, "name")
    assert_problem(requests.get(f"{emu.url}{BASE}/snapshots", params={"projectId": PROJECT_ID}, timeout=10), 401)


def test_at_most_ten_snapshots_per_project_by_default(emu: Emulator, api: requests.Session) -> None:
    assert emu.knobs()["max_snapshots"] == 10
    for index in range(10):
        emu.add_snapshot(PROJECT_ID, f"foreign {index}")
    eleventh = api.post(f"{emu.url}{BASE}/snapshots", json={"projectId": PROJECT_ID, "name": "mine"})
    assert_problem(eleventh, 400, "at most 10")
    with pytest.raises(RuntimeError, match="at most 10"):
        emu.add_snapshot(PROJECT_ID, "one more")

    # the limit is checked again when the task does its work: two accepted at 10 of 11, the second fails
    emu.knobs(max_snapshots=11)
    tasks = [post_snapshot(api, emu.url, name) for name in ("a", "b")]
    finished = [wait_task(api, emu.url, task["_id"])[0] for task in tasks]
    assert [t["status"] for t in finished] == ["done", "error"]
    assert "at most 11" in finished[1]["failReason"]
    assert api.get(f"{emu.url}{BASE}/snapshots", params={"projectId": PROJECT_ID}).json()["total"] == 11
    assert snapshots_named(api, emu.url, "b") == []


def test_snapshot_pages(emu: Emulator, api: requests.Session) -> None:
    names = [emu.add_snapshot(PROJECT_ID, f"s{index}")["name"] for index in range(7)]
    url = f"{emu.url}{BASE}/snapshots"
    first = api.get(url, params={"projectId": PROJECT_ID, "limit": 3}).json()
    assert [s["name"] for s in first["items"]] == names[:3]  # oldest first
    assert first["total"] == 7 and first["previousCursor"] is None and first["nextCursor"]
    second = api.get(url, params={"projectId": PROJECT_ID, "limit": 3, "next": first["nextCursor"]}).json()
    assert [s["name"] for s in second["items"]] == names[3:6] and second["previousCursor"]
    back = api.get(url, params={"projectId": PROJECT_ID, "limit": 3, "previous": second["previousCursor"]}).json()
    assert back["items"] == first["items"]
    last = api.get(url, params={"projectId": PROJECT_ID, "limit": 3, "skip": 6}).json()
    assert [s["name"] for s in last["items"]] == names[6:] and last["nextCursor"] is None
    assert len(api.get(url, params={"projectId": PROJECT_ID}).json()["items"]) == 7  # default 25
    for bad in ({"limit": 0}, {"limit": 101}, {"skip": -1}, {"next": "not-a-cursor"}):
        assert_problem(api.get(url, params={"projectId": PROJECT_ID, **bad}), 400)
    assert_problem(api.get(url, params={"projectId": "0" * 24}), 404, "Project")


def test_delete_snapshot_is_a_task_and_refused_while_an_endpoint_serves_it(
    emu: Emulator, api: requests.Session
) -> None:
    snapshot = emu.add_snapshot(PROJECT_ID, "to delete")
    url = f"{emu.url}{BASE}/snapshots/{snapshot['_id']}"
    assert patch_endpoint(api, emu.url, {"entrypoint": snapshot["_id"]}).status_code == 200
    assert_problem(api.delete(url), 400, snapshot["_id"], ENDPOINT.name, EP)

    assert patch_endpoint(api, emu.url, {"entrypoint": PROJECT_ID}).status_code == 200
    resp = api.delete(url)
    assert resp.status_code == 200, resp.text
    task = resp.json()
    assert task["type"] == "deleteSnapshot" and task["parameters"]["snapshotId"] == snapshot["_id"]
    assert api.get(url).status_code == 200  # still there until the task is done
    assert wait_task(api, emu.url, task["_id"])[0]["status"] == "done"
    assert_problem(api.get(url), 404, "Snapshot")
    assert_problem(api.delete(url), 404, "Snapshot")
    listed = api.get(f"{emu.url}{BASE}/tasks", params={"projectId": PROJECT_ID}).json()["items"]
    assert [t["type"] for t in listed if t["_id"] == task["_id"]] == ["deleteSnapshot"]

    # an endpoint switched onto the snapshot while its deletion is queued makes the task fail
    kept = emu.add_snapshot(PROJECT_ID, "kept")
    task = api.delete(f"{emu.url}{BASE}/snapshots/{kept['_id']}").json()
    assert patch_endpoint(api, emu.url, {"entrypoint": kept["_id"]}).status_code == 200
    failed = wait_task(api, emu.url, task["_id"])[0]
    assert failed["status"] == "error" and ENDPOINT.name in failed["failReason"]
    assert api.get(f"{emu.url}{BASE}/snapshots/{kept['_id']}").status_code == 200


# --- endpoints ------------------------------------------------------------------------------------------
def test_endpoint_on_a_snapshot_answers_from_the_frozen_model(emu: Emulator, api: requests.Session) -> None:
    endpoint = api.get(f"{emu.url}{BASE}/endpoints/{EP}").json()
    assert set(endpoint) == ENDPOINT_KEYS and endpoint["entrypoint"] == PROJECT_ID
    assert (endpoint["flowId"], endpoint["localeId"]) == (FLOW_REFERENCE_ID, LOCALES["en-US"].reference_id)
    assert emu.endpoint_serving(EP)["kind"] == "project"
    snapshot = emu.add_snapshot(PROJECT_ID, "before retrain")

    switched = patch_endpoint(api, emu.url, {"entrypoint": snapshot["_id"]})
    assert switched.status_code == 200, switched.text
    assert switched.json() == {**endpoint, "entrypoint": snapshot["_id"]}
    assert api.get(f"{emu.url}{BASE}/endpoints/{EP}").json() == switched.json()
    assert emu.timeline(FLOW_ID, "en-US")["endpoint_served"] is False  # customers no longer meet the live flow

    retrain_live_flow(emu, api, TINY_INTENTS)
    live = api.post(
        f"{emu.url}{BASE}/projects/{PROJECT_ID}/nlu/scores",
        json={
            "flowReferenceId": FLOW_REFERENCE_ID,
            "localeReferenceId": LOCALES["en-US"].reference_id,
            "sentence": "hi",
        },
    ).json()
    assert top_intents(live) == set(TINY_INTENTS)
    frozen = emu.endpoint_score(EP, "hi")
    assert frozen["version_id"] == SEED_VERSION_ID and len(top_intents(frozen)) > len(TINY_INTENTS)
    assert set(frozen["scores"][0]) == set(live["scores"][0]) and frozen["scores"][0]["flow"] == FLOW_REFERENCE_ID
    assert emu.endpoint_serving(EP) == {
        "endpoint": EP,
        "entrypoint": snapshot["_id"],
        "kind": "snapshot",
        "snapshot": {"_id": snapshot["_id"], "name": "before retrain", "hash": snapshot["hash"]},
        "flow_id": FLOW_ID,
        "locale": "en-US",
        "model_id": frozen["model_id"],
        "version_id": SEED_VERSION_ID,
    }
    assert emu.endpoint_score(EP, "hallo", locale="de-DE")["version_id"] == SEED_VERSION_ID
    assert api.get(f"{emu.url}{BASE}/snapshots/{snapshot['_id']}").json() == snapshot  # immutable

    back = patch_endpoint(api, emu.url, {"entrypoint": PROJECT_ID})
    assert back.status_code == 200 and back.json() == endpoint
    serving = emu.endpoint_serving(EP)
    assert serving["kind"] == "project" and serving["snapshot"] is None and serving["version_id"] != SEED_VERSION_ID
    assert top_intents(emu.endpoint_score(EP, "hi")) == set(TINY_INTENTS)
    assert emu.timeline(FLOW_ID, "en-US")["endpoint_served"] is True

    history = emu.endpoint_history(EP)
    en = LOCALES["en-US"].id
    assert [(h["old_entrypoint"], h["new_entrypoint"]) for h in history] == [
        (PROJECT_ID, snapshot["_id"]),
        (snapshot["_id"], PROJECT_ID),
    ]
    assert all(h["old_flow_id"] == h["new_flow_id"] == FLOW_ID and h["new_locale_id"] == en for h in history)
    assert history[0]["at"] <= history[1]["at"]


def test_patch_endpoint_changes_flow_locale_name_and_active(emu: Emulator, api: requests.Session) -> None:
    changed = patch_endpoint(api, emu.url, {"name": "Renamed", "active": False})
    assert changed.status_code == 200 and (changed.json()["name"], changed.json()["active"]) == ("Renamed", False)
    assert emu.endpoint_history(EP) == []  # what it serves did not change

    staging_ref = api.get(f"{emu.url}{BASE}/flows/{STAGING_FLOW_ID}").json()["referenceId"]
    moved = patch_endpoint(api, emu.url, {"flowId": STAGING_FLOW_ID, "localeId": LOCALES["de-DE"].reference_id})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["flowId"], moved.json()["localeId"]) == (staging_ref, LOCALES["de-DE"].reference_id)
    assert (emu.endpoint_serving(EP)["flow_id"], emu.endpoint_serving(EP)["locale"]) == (STAGING_FLOW_ID, "de-DE")
    (entry,) = emu.endpoint_history(EP)
    assert (entry["old_entrypoint"], entry["new_entrypoint"]) == (PROJECT_ID, PROJECT_ID)
    assert (entry["old_flow_id"], entry["new_flow_id"]) == (FLOW_ID, STAGING_FLOW_ID)
    assert (entry["old_locale_id"], entry["new_locale_id"]) == (LOCALES["en-US"].id, LOCALES["de-DE"].id)

    reset = patch_endpoint(api, emu.url, {"flowId": FLOW_REFERENCE_ID, "localeId": None})
    assert reset.status_code == 200 and reset.json()["localeId"] == LOCALES["en-US"].reference_id
    assert len(emu.endpoint_history(EP)) == 2


def test_patch_endpoint_rejects_what_it_cannot_change(emu: Emulator, api: requests.Session) -> None:
    before = api.get(f"{emu.url}{BASE}/endpoints/{EP}").json()
    foreign_project = "6630a1b2c3d4e5f6012399aa"
    emu.create_flow(foreign_project, "6630a1b2c3d4e5f6012399ab", "Other", {"en-US": TINY_INTENTS})
    foreign = emu.add_snapshot(foreign_project, "foreign")
    for body, field in (
        ({"URLToken": "f" * 64}, "URLToken"),
        ({"surprise": 1}, "surprise"),
        ({"projectId": foreign_project}, "projectId"),
        ({"entrypoint": foreign["_id"]}, "entrypoint"),
        ({"entrypoint": foreign_project}, "entrypoint"),
        ({"entrypoint": "0" * 24}, "entrypoint"),
        ({"active": "yes"}, "active"),
        ({"name": ""}, "name"),
        ({"flowId": "6630a1b2c3d4e5f6012399ab"}, "flowId"),
        ({"localeId": "0" * 24}, "localeId"),
        ({"name": "ok", "URLToken": "x"}, "URLToken"),  # nothing of a rejected body applies
    ):
        assert_problem(patch_endpoint(api, emu.url, body), 400, f"{field}:")
    assert api.get(f"{emu.url}{BASE}/endpoints/{EP}").json() == before
    assert emu.endpoint_history(EP) == []
    assert_problem(api.get(f"{emu.url}{BASE}/endpoints/{'0' * 24}"), 404, "Endpoint")
    assert_problem(patch_endpoint(api, emu.url, {"name": "x"}, endpoint_id="0" * 24), 404, "Endpoint")
    assert_problem(api.patch(f"{emu.url}{BASE}/endpoints/{EP}", json=["name"]), 400)


def test_nlu_scores_with_a_snapshot_id_is_an_unknown_project(emu: Emulator, api: requests.Session) -> None:
    snapshot = emu.add_snapshot(PROJECT_ID, "not a project")
    body = {"flowReferenceId": FLOW_REFERENCE_ID, "localeReferenceId": LOCALES["en-US"].reference_id, "sentence": "hi"}
    resp = api.post(f"{emu.url}{BASE}/projects/{snapshot['_id']}/nlu/scores", json=body)
    assert_problem(resp, 404, "Project", snapshot["_id"])


def test_reset_wipes_snapshots_and_history_and_restores_entrypoints(emu: Emulator, api: requests.Session) -> None:
    snapshot = emu.add_snapshot(PROJECT_ID, "gone after reset")
    assert patch_endpoint(api, emu.url, {"entrypoint": snapshot["_id"]}).status_code == 200
    emu.reset()
    assert api.get(f"{emu.url}{BASE}/snapshots", params={"projectId": PROJECT_ID}).json()["total"] == 0
    assert api.get(f"{emu.url}{BASE}/endpoints/{EP}").json()["entrypoint"] == PROJECT_ID
    assert emu.endpoint_history(EP) == []
