"""The Cognigy emulator over real HTTP: both dialects, the real classifier, knobs, faults and restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from include import dataset
from include.emulator.seed import (
    FLOW_ID,
    FLOW_REFERENCE_ID,
    LOCALE_IDS,
    LOCALES,
    MODEL_IDS,
    PROJECT_ID,
    SEED_PER_INTENT,
    SEED_VERSION_ID,
)
from tests.servers import Emulator, start_emulator

BASE = "/new/v2.0"
JOBS = "/api/v2/ai/nlp"
EN = LOCALE_IDS["en-US"]
FAST = 0.5  # training_seconds for tests that do not look at progress
TERMINAL = {"done", "error", "cancelled"}


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    """The session emulator, back at the seed state with default knobs."""
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture
def api(emu: Emulator) -> requests.Session:
    session = requests.Session()
    session.headers.update({"X-API-Key": emu.api_key, "Accept": "application/json"})
    return session


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
    from include.emulator.engine import TRAINING_LIMIT_REASON, Engine
    from include.emulator.knobs import KnobState
    from include.emulator.seed import seed
    from include.emulator.store import Store

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
