"""The Cognigy emulator over real HTTP: both dialects, the real classifier, knobs, faults and restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.servers import Emulator, start_emulator
from emulator.gateway import MAX_BODY_BYTES
from emulator.seed import (
    FLOW_ID,
    FLOW_REFERENCE_ID,
    LOCALE_IDS,
    LOCALES,
    MODEL_IDS,
    PROJECT_ID,
    SEED_PER_INTENT,
    SEED_VERSION_ID,
    STAGING_FLOW_ID,
)
from include import defaults
from include.data import dataset

BASE = "/new/v2.0"
JOBS = "/api/v2/ai/nlp"
EN = LOCALE_IDS["en-US"]
FAST = 0.5  # training_seconds for tests that do not look at progress
TERMINAL = {"done", "error", "cancelled"}


def jobs_token(emu: Emulator, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret}
    if scope is not None:
        form["scope"] = scope
    resp = requests.post(f"{emu.url}/oauth/token", data=form, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def jobs_session(emu: Emulator, scope: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {jobs_token(emu, scope)}"
    return session


def assert_problem(resp: requests.Response, status: int, *in_detail: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert {"type", "title", "status", "detail", "instance", "code", "traceId"} <= body.keys()
    assert body["status"] == status
    for text in in_detail:
        assert text in body["detail"], body["detail"]
    return body


def start_training(api: requests.Session, url: str, locale_id: str = EN) -> dict[str, Any]:
    resp = api.post(f"{url}{BASE}/flows/{FLOW_ID}/intents/train", json={"localeId": locale_id, "mode": "full"})
    assert resp.status_code == 201, resp.text
    return resp.json()


def wait_task(api: requests.Session, url: str, task_id: str, timeout: float = 30) -> tuple[dict, list[dict]]:
    """Poll a task until it is terminal; return it and every observation."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = api.get(f"{url}{BASE}/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        seen.append(resp.json())
        if seen[-1]["status"] in TERMINAL:
            return seen[-1], seen
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} not finished after {timeout}s: {seen[-1]}")


def wait_job(session: requests.Session, url: str, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = session.get(f"{url}{JOBS}/training/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished: {job}")


def scores(api: requests.Session, url: str, sentence: str) -> list[dict[str, Any]]:
    body = {
        "flowReferenceId": FLOW_REFERENCE_ID,
        "localeReferenceId": LOCALES["en-US"].reference_id,
        "sentence": sentence,
    }
    resp = api.post(f"{url}{BASE}/projects/{PROJECT_ID}/nlu/scores", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["scores"]


def held_out_accuracy(api: requests.Session, url: str) -> float:
    utterances = dataset.held_out("en-US", per_intent=4)
    hits = sum(scores(api, url, u.text)[0]["name"] == u.intent for u in utterances)
    return hits / len(utterances)


def import_intents(api: requests.Session, url: str, intents: list[dict], mode: str) -> dict[str, Any]:
    files = {"file": ("intents.json", json.dumps(intents), "application/json")}
    form = {"mode": mode, "flowId": FLOW_ID, "localeId": EN}
    resp = api.post(f"{url}{BASE}/flows/{FLOW_ID}/intents/import", data=form, files=files)
    assert resp.status_code == 201, resp.text
    assert resp.json()["type"] == "importIntents"
    return resp.json()


def export_intents(api: requests.Session, url: str) -> list[dict]:
    resp = api.post(f"{url}{BASE}/flows/{FLOW_ID}/intents/export", json={"localeId": EN, "format": "json"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def as_export(intents: dict[str, list[str]]) -> list[dict]:
    return [{"name": n, "exampleSentences": s, "isDisabled": False, "tags": []} for n, s in sorted(intents.items())]


# --- the seed tenant ------------------------------------------------------------------------------------
def test_seed_tenant_is_readable_with_fixed_ids(emu: Emulator, api: requests.Session) -> None:
    flow = api.get(f"{emu.url}{BASE}/flows/{FLOW_ID}", params={"includeFeedbackReport": "true"}).json()
    assert (flow["_id"], flow["referenceId"], flow["name"]) == (FLOW_ID, FLOW_REFERENCE_ID, "Customer Service")
    assert flow["isTrainingOutOfDate"] is False
    assert 0 < flow["feedbackReport"]["info"]["accuracy"] <= 1
    assert flow["feedbackReport"]["findings"][0]["type"] in {"poorAccuracy", "fairAccuracy", "goodAccuracy"}

    locales = api.get(f"{emu.url}{BASE}/locales", params={"projectId": PROJECT_ID}).json()
    assert {(loc["name"], loc["_id"], loc["referenceId"]) for loc in locales["items"]} == {
        (name, loc.id, loc.reference_id) for name, loc in LOCALES.items()
    }
    assert locales["total"] == 2

    page = api.get(
        f"{emu.url}{BASE}/flows/{FLOW_ID}/intents",
        params={"includeFeedbackReport": "true", "preferredLocaleId": EN, "limit": 5},
    ).json()
    assert page["total"] == len(dataset.intents("en-US"))
    assert len(page["items"]) == 5 and page["nextCursor"]
    assert all(item["exampleSentenceCount"] == SEED_PER_INTENT for item in page["items"])
    assert all(item["feedbackReport"]["info"]["fScore"] is not None for item in page["items"])
    rest = api.get(f"{emu.url}{BASE}/flows/{FLOW_ID}/intents", params={"next": page["nextCursor"], "limit": 100})
    assert len(rest.json()["items"]) == page["total"] - 5

    top = scores(api, emu.url, "turn on the kitchen light")
    assert top[0]["name"] == "HassTurnOn"
    assert [s["score"] for s in top] == sorted((s["score"] for s in top), reverse=True)
    assert abs(sum(s["score"] for s in top) - 1) < 1e-6
    assert top[0]["flow"] == FLOW_REFERENCE_ID and top[0]["negated"] is False


# --- auth -----------------------------------------------------------------------------------------------
def test_auth_by_api_key_and_oauth_token(emu: Emulator) -> None:
    url = f"{emu.url}{BASE}/flows/{FLOW_ID}"
    assert requests.get(url, headers={"X-API-Key": emu.api_key}, timeout=10).status_code == 200
    assert_problem(requests.get(url, timeout=10), 401)
    assert_problem(requests.get(url, headers={"X-API-Key": "wrong"}, timeout=10), 401)

    form = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret}
    token = requests.post(f"{emu.url}/auth/oauth2/token", data=form, timeout=10).json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(url, headers=bearer, timeout=10).status_code == 200
    assert_problem(requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10), 401)

    bad = requests.post(f"{emu.url}/auth/oauth2/token", data={**form, "client_secret": "x"}, timeout=10)
    assert_problem(bad, 401)
    assert_problem(requests.post(f"{emu.url}/auth/oauth2/token", data={**form, "grant_type": "password"}), 400)

    # the training-jobs token is not valid on the real dialect, the API key not on the training-jobs one
    other = {"Authorization": f"Bearer {jobs_token(emu)}"}
    assert_problem(requests.get(url, headers=other, timeout=10), 401)
    model_url = f"{emu.url}{JOBS}/models/{MODEL_IDS['en-US']}"
    assert_problem(requests.get(model_url, headers={"X-API-Key": emu.api_key}, timeout=10), 401)

    emu.knobs(token_ttl_seconds=1)
    short = requests.post(f"{emu.url}/auth/oauth2/token", data=form, timeout=10).json()
    assert short["expires_in"] == 1
    time.sleep(1.2)
    expired = requests.get(url, headers={"Authorization": f"Bearer {short['access_token']}"}, timeout=10)
    assert_problem(expired, 401, "expired")

    # a GET must not carry a body (a trial tenant answers 403)
    with_body = requests.get(url, headers={"X-API-Key": emu.api_key}, data=b'{"a": 1}', timeout=10)
    assert_problem(with_body, 403, "body")


# --- training tasks ---------------------------------------------------------------------------------------
def test_training_task_progresses_to_done(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(training_seconds=1.5)
    task = start_training(api, emu.url)
    assert task["status"] == "queued" and task["type"] == "trainIntents"
    assert task["currentStep"] == 0 and task["totalStep"] == 100 and task["failReason"] is None
    assert task["parameters"] == {"flowId": FLOW_ID, "localeId": EN, "mode": "full"}
    assert len(task["_id"]) == 24 and task["createdAt"].endswith("Z")

    final, seen = wait_task(api, emu.url, task["_id"])
    assert final["status"] == "done" and final["currentStep"] == 100 and final["lastFinishedAt"]
    statuses = [s["status"] for s in seen]
    assert "active" in statuses
    steps = [s["currentStep"] for s in seen]
    assert steps == sorted(steps), "progress never goes backwards"
    assert any(0 < step < 100 for step in steps), "progress is visible while training"

    listed = api.get(f"{emu.url}{BASE}/tasks", params={"projectId": PROJECT_ID, "type": "trainIntents"}).json()
    assert listed["items"][0]["_id"] == task["_id"]
    stats = emu.stats()
    assert stats["trainings_started"] == {f"{FLOW_ID}/{EN}": 1}
    assert stats["trainings_total"] == 1 and stats["tasks"] == {"done": 1}
    assert stats["by_route"][f"POST {BASE}/flows/{{flowId}}/intents/train"] == 1

    assert_problem(api.get(f"{emu.url}{BASE}/tasks/{'0' * 24}"), 404, "0" * 24)
    assert_problem(api.post(f"{emu.url}{BASE}/flows/{FLOW_ID}/intents/train", json={"mode": "fast"}), 400, "mode")
    unknown = assert_problem(api.post(f"{emu.url}{BASE}/flows/{'f' * 24}/intents/train", json={}), 404, "f" * 24)
    assert unknown["code"] == 1002


def test_more_training_data_improves_held_out_accuracy(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(training_seconds=FAST)
    probe = "pause the music in the living room"
    before = held_out_accuracy(api, emu.url)
    probe_before = scores(api, emu.url, probe)

    task = import_intents(api, emu.url, as_export(dataset.sample_training("en-US", None, 60)), "overwrite")
    assert wait_task(api, emu.url, task["_id"])[0]["status"] == "done"
    flow = api.get(f"{emu.url}{BASE}/flows/{FLOW_ID}").json()
    assert flow["isTrainingOutOfDate"] is True
    assert scores(api, emu.url, probe) == probe_before, "import alone does not retrain"

    assert wait_task(api, emu.url, start_training(api, emu.url)["_id"])[0]["status"] == "done"
    assert api.get(f"{emu.url}{BASE}/flows/{FLOW_ID}").json()["isTrainingOutOfDate"] is False
    after = held_out_accuracy(api, emu.url)
    assert after > before + 0.03, (before, after)
    counts = api.get(f"{emu.url}{BASE}/flows/{FLOW_ID}/intents", params={"limit": 100}).json()["items"]
    assert {item["exampleSentenceCount"] for item in counts} == {60}


def test_export_import_roundtrip_and_modes(emu: Emulator, api: requests.Session) -> None:
    exported = export_intents(api, emu.url)
    assert [i["name"] for i in exported] == sorted(dataset.intents("en-US"))
    assert exported[0] == {
        "name": exported[0]["name"],
        "exampleSentences": dataset.sample_training("en-US", None, SEED_PER_INTENT)[exported[0]["name"]],
        "isDisabled": False,
        "tags": [],
    }
    assert wait_task(api, emu.url, import_intents(api, emu.url, exported, "overwrite")["_id"])[0]["status"] == "done"
    assert export_intents(api, emu.url) == exported

    first = exported[0]["name"]
    merge = [{"name": first, "exampleSentences": ["a brand new sentence", exported[0]["exampleSentences"][0]]}]
    merge.append({"name": "BrandNewIntent", "exampleSentences": ["hello there"]})
    wait_task(api, emu.url, import_intents(api, emu.url, merge, "merge")["_id"])
    merged = {i["name"]: i["exampleSentences"] for i in export_intents(api, emu.url)}
    assert merged[first] == [*exported[0]["exampleSentences"], "a brand new sentence"]
    assert merged["BrandNewIntent"] == ["hello there"]

    skip = [{"name": first, "exampleSentences": ["ignored"]}, {"name": "Another", "exampleSentences": ["x y"]}]
    wait_task(api, emu.url, import_intents(api, emu.url, skip, "skip")["_id"])
    skipped = {i["name"]: i["exampleSentences"] for i in export_intents(api, emu.url)}
    assert skipped[first] == merged[first] and skipped["Another"] == ["x y"]

    wait_task(api, emu.url, import_intents(api, emu.url, exported, "overwrite")["_id"])
    assert export_intents(api, emu.url) == exported

    emu.knobs(fail_next_imports=1)
    failed, _ = wait_task(api, emu.url, import_intents(api, emu.url, merge, "merge")["_id"])
    assert failed["status"] == "error" and failed["failReason"]
    assert export_intents(api, emu.url) == exported


def test_platform_limits(emu: Emulator, api: requests.Session) -> None:
    too_many = [{"name": "Chatty", "exampleSentences": [f"sentence number {i}" for i in range(201)]}]
    files = {"file": ("intents.json", json.dumps(too_many), "application/json")}
    resp = api.post(
        f"{emu.url}{BASE}/flows/{FLOW_ID}/intents/import", data={"mode": "overwrite", "localeId": EN}, files=files
    )
    assert_problem(resp, 400, "Chatty", "200")
    assert_problem(
        api.post(f"{emu.url}{BASE}/flows/{FLOW_ID}/intents/import", data={"mode": "replace"}, files=files),
        400,
        "mode",
    )
    big = {"flowReferenceId": FLOW_REFERENCE_ID, "localeReferenceId": LOCALES["en-US"].reference_id}
    big["sentence"] = "x" * (61 * 1024)
    assert_problem(api.post(f"{emu.url}{BASE}/projects/{PROJECT_ID}/nlu/scores", json=big), 413)
    missing = {"flowReferenceId": FLOW_REFERENCE_ID, "sentence": "hi"}
    assert_problem(
        api.post(f"{emu.url}{BASE}/projects/{PROJECT_ID}/nlu/scores", json=missing), 400, "localeReferenceId"
    )
    assert export_intents(api, emu.url)[0]["exampleSentences"], "nothing was imported"


def multipart_import(
    api: requests.Session, url: str, flow_id: str, locale_id: str, raw: bytes, mode: str
) -> tuple[requests.Response, int]:
    """POST an import file as multipart/form-data; also return the size of the body that was sent."""
    request = requests.Request(
        "POST",
        f"{url}{BASE}/flows/{flow_id}/intents/import",
        data={"mode": mode, "flowId": flow_id, "localeId": locale_id},
        files={"file": ("intents.json", raw, "application/json")},
    )
    prepared = api.prepare_request(request)
    return api.send(prepared, timeout=60), len(prepared.body)


def compact(intents: list[dict]) -> bytes:
    return json.dumps(intents, separators=(",", ":")).encode()


def test_every_request_body_is_limited_to_60_kb(emu: Emulator, api: requests.Session) -> None:
    assert MAX_BODY_BYTES == 61_440
    before = export_intents(api, emu.url)

    # multipart/form-data (the intents import) over the limit: refused before anything happens
    big = [
        {"name": f"Intent{n}", "exampleSentences": [f"sentence {n} number {i:03d}" for i in range(100)]}
        for n in range(30)
    ]
    resp, sent = multipart_import(api, emu.url, FLOW_ID, EN, compact(big), "overwrite")
    assert sent > MAX_BODY_BYTES
    body = assert_problem(resp, 413, "61440", str(sent))
    assert body["limitBytes"] == MAX_BODY_BYTES and body["code"] == 1005

    # JSON over the limit (an oversized scores request) and a 1.2 MB upload (drained, still answered)
    scores_body = {"flowReferenceId": FLOW_REFERENCE_ID, "localeReferenceId": LOCALES["en-US"].reference_id}
    resp = api.post(
        f"{emu.url}{BASE}/projects/{PROJECT_ID}/nlu/scores", json={**scores_body, "sentence": "x" * MAX_BODY_BYTES}
    )
    assert_problem(resp, 413, "61440")
    huge = big * 20
    resp, sent = multipart_import(api, emu.url, FLOW_ID, EN, compact(huge), "overwrite")
    assert sent > 1_000_000
    assert_problem(resp, 413, "61440")

    # just under the limit is accepted
    fits = big[:23]
    resp, sent = multipart_import(api, emu.url, FLOW_ID, EN, compact(fits), "merge")
    assert MAX_BODY_BYTES - 10_000 < sent <= MAX_BODY_BYTES, sent
    assert resp.status_code == 201, resp.text
    assert wait_task(api, emu.url, resp.json()["_id"])[0]["status"] == "done"
    merged = {i["name"]: i["exampleSentences"] for i in export_intents(api, emu.url)}
    assert len(merged) == len(before) + 23
    assert emu.stats()["tasks"] == {"done": 1}, "the refused imports started no task"

    # the per-file platform limits still name the intent, also over multipart
    too_many = [{"name": f"i{n}"} for n in range(2_501)]
    resp, sent = multipart_import(api, emu.url, FLOW_ID, EN, compact(too_many), "overwrite")
    assert sent <= MAX_BODY_BYTES
    assert_problem(resp, 400, "2500", "'i2500'")
    chatty = [{"name": "Chatty", "exampleSentences": [f"s{i}" for i in range(201)]}]
    assert_problem(multipart_import(api, emu.url, FLOW_ID, EN, compact(chatty), "merge")[0], 400, "Chatty", "200")


def test_large_intent_set_imported_in_chunks_ends_exactly_in_the_export(emu: Emulator, api: requests.Session) -> None:
    """300 intents x 200 sentences (~1.2 MB): first chunk overwrite, the rest merge, intents split across chunks."""
    full = {f"Intent{n:03d}": [f"ask {n:03d} about {i:03d} now" for i in range(200)] for n in range(300)}
    assert len(compact([{"name": n, "exampleSentences": s} for n, s in full.items()])) > 1_200_000
    file_budget = MAX_BODY_BYTES - 1_000  # room for the multipart envelope

    chunks: list[list[dict]] = [[]]
    size = 2
    for name, sentences in full.items():
        for sentence in sentences:
            current = chunks[-1]
            entry_overhead = 0 if current and current[-1]["name"] == name else len(name) + 40
            extra = len(sentence) + 3 + entry_overhead
            if size + extra > file_budget:
                chunks.append([])
                current, size, entry_overhead = chunks[-1], 2, len(name) + 40
                extra = len(sentence) + 3 + entry_overhead
            if entry_overhead:
                current.append({"name": name, "exampleSentences": []})
            current[-1]["exampleSentences"].append(sentence)
            size += extra
    assert len(chunks) >= 20
    split = {c[0]["name"] for c in chunks[1:]} & {c[-1]["name"] for c in chunks[:-1]}
    assert split, "some intents have their sentences in two chunks"

    for index, chunk in enumerate(chunks):
        mode = "overwrite" if index == 0 else "merge"
        resp, sent = multipart_import(api, emu.url, FLOW_ID, EN, compact(chunk), mode)
        assert sent <= MAX_BODY_BYTES, (index, sent)
        assert resp.status_code == 201, resp.text
        assert wait_task(api, emu.url, resp.json()["_id"])[0]["status"] == "done"

    assert {i["name"]: i["exampleSentences"] for i in export_intents(api, emu.url)} == full
    assert api.get(f"{emu.url}{BASE}/flows/{FLOW_ID}").json()["isTrainingOutOfDate"] is True
    # importing the first chunk again with merge changes nothing (no duplicate sentences)
    wait_task(api, emu.url, multipart_import(api, emu.url, FLOW_ID, EN, compact(chunks[0]), "merge")[0].json()["_id"])
    assert {i["name"]: i["exampleSentences"] for i in export_intents(api, emu.url)} == full


# --- the seeded staging flow, endpoints, the tenant builder and the serving timeline ---------------------------
def test_seed_has_a_staging_flow_and_a_webchat_endpoint(emu: Emulator, api: requests.Session) -> None:
    assert STAGING_FLOW_ID == defaults.DEMO_STAGING_FLOW_ID == "6630a1b2c3d4e5f601234569"
    flows = api.get(f"{emu.url}{BASE}/flows", params={"projectId": PROJECT_ID}).json()
    assert [(f["_id"], f["name"]) for f in flows["items"]] == [
        (FLOW_ID, "Customer Service"),
        (STAGING_FLOW_ID, "Customer Service (staging)"),
    ]
    staging_ref = flows["items"][1]["referenceId"]
    assert staging_ref != FLOW_REFERENCE_ID
    for name, locale in LOCALES.items():
        staging = api.get(
            f"{emu.url}{BASE}/flows/{STAGING_FLOW_ID}",
            params={"includeFeedbackReport": "true", "preferredLocaleId": locale.id},
        ).json()
        assert staging["isTrainingOutOfDate"] is False and staging["projectId"] == PROJECT_ID
        assert staging["feedbackReport"]["info"]["accuracy"] > 0
        body = {"localeId": locale.id}
        production = api.post(f"{emu.url}{BASE}/flows/{FLOW_ID}/intents/export", json=body).json()
        assert api.post(f"{emu.url}{BASE}/flows/{STAGING_FLOW_ID}/intents/export", json=body).json() == production
        scored = api.post(
            f"{emu.url}{BASE}/projects/{PROJECT_ID}/nlu/scores",
            json={"flowReferenceId": staging_ref, "localeReferenceId": locale.reference_id, "sentence": "licht an"},
        )
        assert scored.status_code == 200 and scored.json()["scores"][0]["flow"] == staging_ref
        timeline = emu.timeline(STAGING_FLOW_ID, name)
        assert timeline["endpoint_served"] is False and timeline["endpoints"] == []
        assert [(e["task_id"], e["version_id"], e["until"]) for e in timeline["entries"]] == [
            (None, SEED_VERSION_ID, None)
        ]
        served = emu.timeline(FLOW_ID, name)
        assert served["endpoint_served"] is True and served["endpoints"] == ["Customer Service Webchat"]
        assert served["flow_id"] == FLOW_ID and served["locale"] == name
    assert api.get(f"{emu.url}{BASE}/locales", params={"projectId": PROJECT_ID}).json()["total"] == 2
    intents = api.get(
        f"{emu.url}{BASE}/flows/{STAGING_FLOW_ID}/intents",
        params={"includeFeedbackReport": "true", "preferredLocaleId": EN, "limit": 100},
    ).json()["items"]
    for item in intents:
        for finding in item["feedbackReport"]["findings"]:
            if "overlappingFlowId" in finding:
                assert finding["overlappingFlowId"] == STAGING_FLOW_ID

    endpoints = api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": PROJECT_ID})
    assert endpoints.status_code == 200, endpoints.text
    page = endpoints.json()
    assert page["total"] == 1 and page["nextCursor"] is None and page["previousCursor"] is None
    (endpoint,) = page["items"]
    assert set(endpoint) == {  # a list item: no entrypoint, no active (the client's IEndpointIndexItem_2_0)
        *("_id", "referenceId", "name", "channel", "flowId", "projectId", "URLToken"),
        *("localeId", "nluConnectorId"),
    }
    endpoint = api.get(f"{emu.url}{BASE}/endpoints/{endpoint['_id']}").json()
    assert endpoint["entrypoint"] == PROJECT_ID and endpoint["localeId"] == LOCALES["en-US"].reference_id
    assert (endpoint["name"], endpoint["channel"], endpoint["flowId"], endpoint["active"]) == (
        "Customer Service Webchat",
        "webchat",
        FLOW_REFERENCE_ID,
        True,
    )
    assert len(endpoint["_id"]) == 24 and endpoint["projectId"] == PROJECT_ID and endpoint["URLToken"]
    assert_problem(requests.get(f"{emu.url}{BASE}/endpoints", params={"projectId": PROJECT_ID}, timeout=10), 401)
    assert_problem(api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": "0" * 24}), 404)
    assert_problem(api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": PROJECT_ID, "limit": 0}), 400, "limit")
    assert emu.stats()["by_route"][f"GET {BASE}/endpoints"] == 4

    emu.knobs(rate_limit_requests=1, rate_limit_window_seconds=60)
    assert api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": PROJECT_ID}).status_code == 200
    assert_problem(api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": PROJECT_ID}), 429)


def test_serving_timeline_and_training_counts(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(training_seconds=FAST)
    seeded = emu.timeline(FLOW_ID, "en-US")["entries"]
    assert len(seeded) == 1 and seeded[0]["task_id"] is None and seeded[0]["until"] is None
    assert abs(seeded[0]["since"] - time.time()) < 60

    task = start_training(api, emu.url)
    assert wait_task(api, emu.url, task["_id"])[0]["status"] == "done"
    emu.knobs(fail_next_trainings=1)
    assert wait_task(api, emu.url, start_training(api, emu.url)["_id"])[0]["status"] == "error"
    entries = emu.timeline(FLOW_ID, "en-US")["entries"]
    assert len(entries) == 2, "a failed training never starts serving"
    assert entries[0]["until"] == entries[1]["since"] and entries[1]["until"] is None
    assert entries[1]["task_id"] == task["_id"] and entries[1]["version_id"] not in (None, SEED_VERSION_ID)
    assert entries[1]["since"] >= entries[0]["since"]
    assert len(emu.timeline(FLOW_ID, "de-DE")["entries"]) == 1

    # the training-jobs dialect serves through the same pointer: its trainings show up too
    jobs = jobs_session(emu)
    job = jobs.post(
        f"{emu.url}{JOBS}/training/jobs",
        json={"modelId": MODEL_IDS["de-DE"], "trainingDataSliceMatrix": {"HassTurnOn": 5, "HassTurnOff": 5}},
    ).json()
    assert wait_job(jobs, emu.url, job["jobId"])["status"] == "completed"
    assert emu.timeline(FLOW_ID, "de-DE")["entries"][-1]["task_id"] == job["jobId"]

    stats = emu.stats()
    assert stats["trainings_by_flow_locale"] == {f"{FLOW_ID}/en-US": 2, f"{FLOW_ID}/de-DE": 1}
    assert stats["trainings_started"] == {f"{FLOW_ID}/{EN}": 2, MODEL_IDS["de-DE"]: 1}
    assert stats["requests_total"] >= 6 and stats["by_route"][f"POST {BASE}/flows/{{flowId}}/intents/train"] == 2

    for params in ({"flowId": "f" * 24, "locale": "en-US"}, {"flowId": FLOW_ID, "locale": "fr-FR"}):
        assert_problem(requests.get(f"{emu.url}/_emulator/timeline", params=params, timeout=10), 404)


FRENCH = {
    "Allumer": ["allume la lumière", "allume la lampe du salon", "mets la lumière", "lumière allumée s'il te plaît"],
    "Eteindre": ["éteins la lumière", "éteins la lampe du salon", "coupe la lumière", "plus de lumière merci"],
    "Meteo": ["quel temps fait-il", "va-t-il pleuvoir demain", "la météo de paris", "fait-il beau aujourd'hui"],
}
PORTUGUESE = {
    "Ligar": ["ligue a luz", "acenda a luz da sala", "liga a lâmpada"],
    "Desligar": ["desligue a luz", "apague a luz da sala", "desliga a lâmpada"],
}


def test_tenant_builder_any_locale_end_to_end(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(training_seconds=FAST)
    project, flow_id = "77aa00000000000000000001", "77aa000000000000000000f1"
    requests_before = emu.stats()["requests_total"]
    built = emu.create_flow(
        project, flow_id, "Service Client", {"fr-FR": FRENCH, "pt-BR": PORTUGUESE}, endpoint="Webchat"
    )
    assert emu.stats()["requests_total"] == requests_before, "admin routes are not tenant traffic"
    assert built["flow_id"] == built["_id"] == flow_id and built["project_id"] == project
    assert built["referenceId"] == built["reference_id"]
    fr, pt = built["locales"]["fr-FR"], built["locales"]["pt-BR"]
    assert built["locale_ids"] == {"fr-FR": fr["locale_id"], "pt-BR": pt["locale_id"]}
    assert all(len(loc["locale_id"]) == 24 and len(loc["reference_id"]) == 36 for loc in (fr, pt))
    assert built["endpoint"]["name"] == "Webchat" and built["endpoint"]["channel"] == "webchat"

    locales = api.get(f"{emu.url}{BASE}/locales", params={"projectId": project}).json()["items"]
    assert [(loc["name"], loc["_id"], loc["referenceId"]) for loc in locales] == [
        ("fr-FR", fr["locale_id"], fr["reference_id"]),
        ("pt-BR", pt["locale_id"], pt["reference_id"]),
    ]
    flow_url = f"{emu.url}{BASE}/flows/{flow_id}"
    flow = api.get(flow_url, params={"includeFeedbackReport": "true"}).json()
    assert (flow["name"], flow["referenceId"], flow["projectId"]) == ("Service Client", built["reference_id"], project)
    assert flow["isTrainingOutOfDate"] is False and flow["feedbackReport"]["info"]["accuracy"] is not None
    items = api.get(
        f"{flow_url}/intents", params={"includeFeedbackReport": "true", "preferredLocaleId": pt["locale_id"]}
    ).json()["items"]
    assert {i["name"]: i["exampleSentenceCount"] for i in items} == {"Ligar": 3, "Desligar": 3}
    assert all(i["feedbackReport"] is not None for i in items)

    def top(locale: dict, sentence: str) -> str:
        body = {
            "flowReferenceId": built["reference_id"],
            "localeReferenceId": locale["reference_id"],
            "sentence": sentence,
        }
        resp = api.post(f"{emu.url}{BASE}/projects/{project}/nlu/scores", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()["scores"][0]["name"]

    assert top(fr, "éteins la lumière de la cuisine") == "Eteindre"
    assert top(pt, "desligue a lâmpada") == "Desligar"

    def export(locale: dict) -> dict[str, list[str]]:
        resp = api.post(f"{flow_url}/intents/export", json={"localeId": locale["locale_id"]})
        return {i["name"]: i["exampleSentences"] for i in resp.json()}

    assert export(fr) == FRENCH and export(pt) == PORTUGUESE
    endpoints = api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": project}).json()["items"]
    assert [(e["name"], e["flowId"], e["_id"]) for e in endpoints] == [
        ("Webchat", built["reference_id"], built["endpoint"]["_id"])
    ]

    # isTrainingOutOfDate: false right after training the current intents, true after an import changed them
    def out_of_date() -> bool:
        return api.get(flow_url, params={"preferredLocaleId": fr["locale_id"]}).json()["isTrainingOutOfDate"]

    extra = [{"name": "Meteo", "exampleSentences": ["quelle température fait-il dehors"]}]
    resp, _ = multipart_import(api, emu.url, flow_id, fr["locale_id"], compact(extra), "merge")
    assert wait_task(api, emu.url, resp.json()["_id"])[0]["status"] == "done"
    assert out_of_date() is True
    assert export(fr)["Meteo"] == [*FRENCH["Meteo"], "quelle température fait-il dehors"]
    train = api.post(f"{flow_url}/intents/train", json={"localeId": fr["locale_id"]})
    assert train.status_code == 201, train.text
    assert wait_task(api, emu.url, train.json()["_id"])[0]["status"] == "done"
    assert out_of_date() is False
    assert top(fr, "quelle température fait-il") == "Meteo"
    assert emu.stats()["trainings_by_flow_locale"] == {f"{flow_id}/fr-FR": 1}

    timeline = emu.timeline(flow_id, "fr-FR")
    assert timeline["endpoint_served"] is True and timeline["endpoints"] == ["Webchat"]
    assert [e["task_id"] for e in timeline["entries"]] == [None, train.json()["_id"]]
    assert timeline["entries"][0]["until"] == timeline["entries"][1]["since"]

    # a second flow in the project reuses its locales; replacing a flow drops its endpoint and old models
    other = emu.create_flow(project, "77aa000000000000000000f2", "Autre", {"fr-FR": FRENCH}, trained=False)
    assert other["locale_ids"] == {"fr-FR": fr["locale_id"]}
    assert api.get(f"{emu.url}{BASE}/flows/{other['flow_id']}").json()["isTrainingOutOfDate"] is True
    replaced = emu.create_flow(project, flow_id, "Service Client v2", {"pt-BR": PORTUGUESE}, trained=False)
    assert replaced["locale_ids"] == {"pt-BR": pt["locale_id"]} and replaced["reference_id"] != built["reference_id"]
    assert api.get(f"{emu.url}{BASE}/endpoints", params={"projectId": project}).json()["total"] == 0
    assert_problem(api.get(flow_url, params={"preferredLocaleId": fr["locale_id"]}), 404)
    body = {"flowReferenceId": replaced["reference_id"], "localeReferenceId": pt["reference_id"], "sentence": "luz"}
    assert_problem(api.post(f"{emu.url}{BASE}/projects/{project}/nlu/scores", json=body), 409)
    assert emu.timeline(flow_id, "pt-BR")["entries"] == []

    def refused(*in_detail: str, **changes: Any) -> None:
        spec = {"project_id": project, "flow_id": flow_id, "name": "x", "locales": {"fr-FR": {"intents": FRENCH}}}
        resp = requests.post(f"{emu.url}/_emulator/flows", json={**spec, **changes}, timeout=30)
        assert_problem(resp, 400, *in_detail)

    refused("flow_id", flow_id="not-hex")
    refused("english", locales={"english": {"intents": FRENCH}})
    refused("Big", "200", locales={"fr-FR": {"intents": {"Big": [f"s {i}" for i in range(201)], "B": ["x"]}}})
    refused("at least 2 intents", locales={"fr-FR": {"intents": {"Seul": ["une phrase"]}, "trained": True}})


# --- knobs and faults --------------------------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(rate_limit_requests=3, rate_limit_window_seconds=2)
    url = f"{emu.url}{BASE}/flows/{FLOW_ID}"
    assert [api.get(url).status_code for _ in range(3)] == [200, 200, 200]
    limited = api.get(url)
    assert_problem(limited, 429)
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert requests.get(f"{emu.url}/_emulator/health", timeout=5).status_code == 200, "admin is not limited"
    time.sleep(retry_after)
    assert api.get(url).status_code == 200
    assert emu.stats()["responses_429"] == 1


def test_fail_next_trainings_keeps_serving_model(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(training_seconds=FAST, fail_next_trainings=1, fail_reason="GPU on fire")
    probe = scores(api, emu.url, "set the temperature to 21 degrees")
    failed, _ = wait_task(api, emu.url, start_training(api, emu.url)["_id"])
    assert failed["status"] == "error" and failed["failReason"] == "GPU on fire"
    assert scores(api, emu.url, "set the temperature to 21 degrees") == probe
    assert emu.knobs()["fail_next_trainings"] == 0
    assert wait_task(api, emu.url, start_training(api, emu.url)["_id"])[0]["status"] == "done"
    assert emu.stats()["tasks"] == {"error": 1, "done": 1}


def test_cancel_task(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(training_seconds=5)
    task = start_training(api, emu.url)
    time.sleep(0.5)
    resp = api.post(f"{emu.url}{BASE}/tasks/{task['_id']}/cancel")
    assert resp.status_code == 200 and resp.json() == {}
    final, _ = wait_task(api, emu.url, task["_id"], timeout=5)
    assert final["status"] == "cancelled"
    assert_problem(api.post(f"{emu.url}{BASE}/tasks/{task['_id']}/cancel"), 400, "cancelled")
    model = jobs_session(emu).get(f"{emu.url}{JOBS}/models/{MODEL_IDS['en-US']}").json()
    assert model["activeVersionId"] == SEED_VERSION_ID and len(model["versions"]) == 1


def test_injected_request_faults(emu: Emulator, api: requests.Session) -> None:
    emu.knobs(
        training_seconds=FAST,
        fail_next_requests=[{"method": "GET", "path_regex": "/flows/", "status": 503, "count": 1}],
        hang_after_accept=[{"method": "POST", "path_regex": r"/intents/train$", "seconds": 2, "count": 1}],
        drop_connections=[{"method": "GET", "path_regex": "/locales", "count": 1}],
    )
    flow_url = f"{emu.url}{BASE}/flows/{FLOW_ID}"
    assert_problem(api.get(flow_url), 503, "Injected")
    assert api.get(flow_url).status_code == 200, "the rule was used up"

    with pytest.raises(requests.ConnectionError):
        api.get(f"{emu.url}{BASE}/locales", params={"projectId": PROJECT_ID}, timeout=5)
    assert api.get(f"{emu.url}{BASE}/locales", params={"projectId": PROJECT_ID}).status_code == 200

    with pytest.raises(requests.Timeout):
        api.post(f"{emu.url}{BASE}/flows/{FLOW_ID}/intents/train", json={"localeId": EN}, timeout=0.7)
    assert emu.stats()["trainings_started"] == {f"{FLOW_ID}/{EN}": 1}, "the training started anyway"
    assert emu.knobs()["hang_after_accept"] == []

    emu.knobs(latency_ms=300)
    started = time.monotonic()
    api.get(flow_url)
    assert time.monotonic() - started >= 0.3

    resp = requests.patch(f"{emu.url}/_emulator/knobs", json={"no_such_knob": 1}, timeout=5)
    assert_problem(resp, 400, "no_such_knob")


def test_restart_keeps_state_and_resumes_task(tmp_path: Path) -> None:
    server = start_emulator(tmp_path / "emu")
    try:
        api = requests.Session()
        api.headers["X-API-Key"] = server.api_key
        data = dataset.sample_training("en-US", None, 20)
        wait_task(api, server.url, import_intents(api, server.url, as_export(data), "overwrite")["_id"])
        form = {
            "grant_type": "client_credentials",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        }
        token = requests.post(f"{server.url}/auth/oauth2/token", data=form, timeout=10).json()["access_token"]
        server.knobs(training_seconds=6)
        task = start_training(api, server.url)
        while (seen := api.get(f"{server.url}{BASE}/tasks/{task['_id']}").json())["currentStep"] < 10:
            time.sleep(0.2)
        assert seen["status"] == "active"
    finally:
        server.stop()

    server = start_emulator(tmp_path / "emu")
    try:
        bearer = requests.Session()
        bearer.headers["Authorization"] = f"Bearer {token}"  # issued before the restart
        resumed = bearer.get(f"{server.url}{BASE}/tasks/{task['_id']}").json()
        assert resumed["currentStep"] >= seen["currentStep"], "progress continues from the stored start time"
        final, _ = wait_task(bearer, server.url, task["_id"], timeout=30)
        assert final["status"] == "done"
        exported = {i["name"]: i["exampleSentences"] for i in export_intents(bearer, server.url)}
        assert exported == data
        flow = bearer.get(f"{server.url}{BASE}/flows/{FLOW_ID}").json()
        assert flow["isTrainingOutOfDate"] is False
    finally:
        server.stop()


# --- the training-jobs dialect -----------------------------------------------------------------------------
def test_jobs_dialect_scopes(emu: Emulator) -> None:
    reader = jobs_session(emu, "ai:nlp:read")
    body = {"modelId": MODEL_IDS["en-US"], "trainingDataSliceMatrix": {"HassTurnOn": 5, "HassTurnOff": 5}}
    assert_problem(reader.post(f"{emu.url}{JOBS}/training/jobs", json=body), 403, "ai:training:execute")
    rollback = reader.post(f"{emu.url}{JOBS}/models/{MODEL_IDS['en-US']}/rollback", json={"target_version_id": "v1"})
    assert_problem(rollback, 403, "ai:models:rollback")
    assert reader.get(f"{emu.url}{JOBS}/models/{MODEL_IDS['en-US']}").status_code == 200
    writer = jobs_session(emu, "ai:training:execute ai:unknown")
    assert_problem(writer.get(f"{emu.url}{JOBS}/models/{MODEL_IDS['en-US']}"), 403, "ai:nlp:read")
    assert emu.stats()["trainings_total"] == 0


def test_jobs_lifecycle_real_metrics_rollback_and_idempotency(emu: Emulator) -> None:
    emu.knobs(training_seconds=FAST)
    jobs = jobs_session(emu)
    model_id = MODEL_IDS["en-US"]
    intents = dataset.intents("en-US")

    def submit(per_intent: int, key: str | None = None, **extra: Any) -> requests.Response:
        body = {
            "modelId": model_id,
            "trainingDataSliceMatrix": dict.fromkeys(intents, per_intent),
            "convergenceThreshold": 0.001,
            "computeConstraints": {"maxGpuMemory": 0, "maxCpuCores": 2, "timeoutSeconds": 60},
            "maxDatasetSize": 5000,
            **extra,
        }
        return jobs.post(f"{emu.url}{JOBS}/training/jobs", json=body, headers={"Idempotency-Key": key} if key else {})

    first = submit(10, key="quarter-1")
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["status"] == "queued" and accepted["completedAt"] is None
    again = submit(10, key="quarter-1")
    assert again.status_code == 202 and again.json()["jobId"] == accepted["jobId"]
    assert_problem(submit(11, key="quarter-1"), 409, "Idempotency-Key")

    weak = wait_job(jobs, emu.url, accepted["jobId"])
    assert weak["status"] == "completed" and weak["progress"] == 1 and weak["completedAt"]
    strong = wait_job(jobs, emu.url, submit(60).json()["jobId"])
    assert strong["status"] == "completed"
    assert emu.stats()["trainings_started"] == {model_id: 2}

    def metrics(version: str) -> dict[str, Any]:
        params = {"include_bias_detection": "true", "include_precision_recall": "true"}
        resp = jobs.get(f"{emu.url}{JOBS}/models/{model_id}/versions/{version}/metrics", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    weak_m, strong_m = metrics(weak["modelVersionId"]), metrics(strong["modelVersionId"])
    assert weak_m["intentDistribution"] == dict.fromkeys(intents, 10)
    assert strong_m["intentDistribution"] == dict.fromkeys(intents, 60)
    assert strong_m["f1Score"] > weak_m["f1Score"] and strong_m["recall"] > weak_m["recall"]
    assert all(0 <= m["biasScore"] <= 1 for m in (weak_m, strong_m))
    bare = jobs.get(f"{emu.url}{JOBS}/models/{model_id}/versions/{weak['modelVersionId']}/metrics").json()
    assert "precision" not in bare and "biasScore" not in bare and bare["f1Score"] == weak_m["f1Score"]

    model = jobs.get(f"{emu.url}{JOBS}/models/{model_id}").json()
    assert model["activeVersionId"] == strong["modelVersionId"]
    assert [v["versionId"] for v in model["versions"]] == [
        SEED_VERSION_ID,
        weak["modelVersionId"],
        strong["modelVersionId"],
    ]
    listed = jobs.get(f"{emu.url}{JOBS}/training/jobs", params={"modelId": model_id}).json()["items"]
    assert [j["jobId"] for j in listed] == [strong["jobId"], weak["jobId"]]

    predicted = jobs.post(
        f"{emu.url}{JOBS}/models/{model_id}/versions/{strong['modelVersionId']}/predict", json={"text": "lights on"}
    ).json()
    assert predicted["intent"] == predicted["scores"][0]["name"] and len(predicted["scores"]) == len(intents)

    rolled = jobs.post(
        f"{emu.url}{JOBS}/models/{model_id}/rollback", json={"target_version_id": weak["modelVersionId"]}
    )
    assert rolled.json() == {"modelId": model_id, "activeVersionId": weak["modelVersionId"], "status": "rolled_back"}
    assert jobs.get(f"{emu.url}{JOBS}/training/jobs/{strong['jobId']}").json()["status"] == "rolled_back"
    unknown = jobs.post(f"{emu.url}{JOBS}/models/{model_id}/rollback", json={"target_version_id": "v999"})
    assert_problem(unknown, 404, "v999")

    emu.knobs(training_seconds=3)
    timed_out = submit(5, computeConstraints={"timeoutSeconds": 1})
    failed = wait_job(jobs, emu.url, timed_out.json()["jobId"])
    assert failed["status"] == "failed" and "timeoutSeconds" in failed["failureReason"]
    assert_problem(submit(500), 400, "trainingDataSliceMatrix")


def test_training_longer_than_ten_minutes_errors_at_the_limit(tmp_path: Path) -> None:
    """In-process with a fake clock: nobody waits 10 real minutes (the clock is the only thing faked)."""
    from emulator.engine import TRAINING_LIMIT_REASON, Engine
    from emulator.knobs import KnobState
    from emulator.seed import seed
    from emulator.store import Store

    now = [1_000_000.0]
    store = Store(tmp_path / "state.sqlite3")
    seed(store, now=now[0])
    engine = Engine(store, KnobState(), clock=lambda: now[0])
    model = store.model_for(FLOW_ID, EN)
    task = engine.create_task(
        dialect="cognigy",
        task_type="trainIntents",
        model=model,
        project_id=PROJECT_ID,
        parameters={},
        payload=None,
        duration=900,
        deadline=600,
        deadline_reason=TRAINING_LIMIT_REASON,
    )
    for seconds in (1, 300, 599):
        now[0] = task["created_at"] + seconds
        engine.tick()
        assert store.get_task(task["id"])["status"] == "active"
    now[0] = task["created_at"] + 0.3 + 600
    engine.tick()
    failed = store.get_task(task["id"])
    assert (failed["status"], failed["fail_reason"]) == ("error", TRAINING_LIMIT_REASON)
    assert 60 <= engine.current_step(failed) < 100
    assert store.get_model(model["id"])["active_version_id"] == SEED_VERSION_ID
    store.close()
