"""CognigyJobTrigger against the real emulator, with the connection resolved by Airflow itself.

The trigger's hook (`CognigyHook.a_get_job_status`) reads the connection with `aget_connection`; the tests provide
it the way a deployment can, as `AIRFLOW_CONN_<ID>` JSON in the environment (Airflow's environment-variables secrets
backend), so no Airflow internals are mocked. Also: the polling policy as a unit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow._shared.module_loading import import_string  # what the triggerer uses
from airflow.models.trigger import Trigger
from airflow.sdk import BaseHook
from airflow.serialization.decoders import smart_decode_trigger_kwargs

from devtools.airflow_env import cognigy_conn
from devtools.servers import Emulator
from emulator.seed import FLOW_ID, MODEL_IDS, PROJECT_ID
from include.cognigy.client import CognigyClient
from include.cognigy.config import ConnectionConfig
from include.cognigy.model import JobStatus, Target
from include.cognigy.poll_policy import PollPolicy
from include.cognigy.transport import TokenProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))  # what Airflow does for plugins/
from cognigy_provider.triggers.cognigy import CognigyJobTrigger

TARGET = Target(PROJECT_ID, FLOW_ID, "en-US", MODEL_IDS["en-US"])
FORMS = [("rest-v2", "api_key"), ("rest-v2", "oauth"), ("training-jobs", "oauth")]
FORM_IDS = ["rest-v2-api-key", "rest-v2-oauth", "training-jobs-oauth"]
STATUS = {"rest-v2": r"/new/v2\.0/tasks/", "training-jobs": r"/training/jobs/"}
STATUS_ROUTE = {"rest-v2": "GET /new/v2.0/tasks/{taskId}", "training-jobs": "GET /api/v2/ai/nlp/training/jobs/{jobId}"}


def connection(monkeypatch: pytest.MonkeyPatch, emu: Emulator, dialect: str, auth: str, **extra: Any) -> str:
    """Put an Airflow connection into the environment (as `make run` does) and return its id."""
    conn_id = f"cognigy_trigger_{uuid.uuid4().hex[:8]}"
    conn = json.loads(cognigy_conn(emu, dialect, oauth=auth == "oauth"))
    conn["extra"].update(extra)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


async def submit(emu: Emulator, dialect: str, auth: str) -> JobStatus:
    creds: dict[str, Any] = {"api_key": emu.api_key}
    if auth == "oauth":
        creds = {"client_id": emu.client_id, "client_secret": emu.client_secret}
    client = CognigyClient(ConnectionConfig(base_url=emu.url, dialect=dialect, **creds))
    return await asyncio.to_thread(
        client.start_training, TARGET, mode="full", spec_body={"modelId": TARGET.model_id}, idempotency_key="k"
    )


def trigger_for(conn_id: str, dialect: str, job_id: str, *, within: float = 30.0, **kw: Any) -> CognigyJobTrigger:
    kw = {"poll_min": 0.2, "poll_max": 1.0, **kw}
    return CognigyJobTrigger(conn_id=conn_id, dialect=dialect, job_id=job_id, end_time=time.time() + within, **kw)


async def run_to_event(trigger: CognigyJobTrigger, timeout: float = 30.0) -> dict[str, Any]:
    """Run the trigger as the triggerer would and return the payload of its one event."""
    events = []

    async def collect() -> None:
        async for event in trigger.run():
            events.append(event.payload)

    await asyncio.wait_for(collect(), timeout)
    assert len(events) == 1
    return events[0]


def route_count(emu: Emulator, route: str) -> int:
    return emu.stats()["by_route"].get(route, 0)


# --- the connection, resolved by Airflow -------------------------------------------------------------------
async def test_airflow_resolves_the_connection_from_the_environment(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connection(monkeypatch, emu, "training-jobs", "oauth", scopes="ai:nlp:read", timeout=7)
    conn = await BaseHook.aget_connection(conn_id)
    assert (conn.host, conn.login) == (emu.url, emu.client_id)
    assert await conn.aextra_dejson() == {"api": "training-jobs", "scopes": "ai:nlp:read", "timeout": 7}


# --- outcomes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
async def test_trigger_finishes_with_the_final_state(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, dialect: str, auth: str
) -> None:
    emu.knobs(training_seconds=1.5)
    job = await submit(emu, dialect, auth)
    event = await run_to_event(trigger_for(connection(monkeypatch, emu, dialect, auth), dialect, job.job_id))
    assert event["outcome"] == "finished"
    status = JobStatus.from_dict(event["status"])
    assert (status.job_id, status.state) == (job.job_id, "succeeded")
    assert status.progress == pytest.approx(1.0)
    if dialect == "training-jobs":
        assert status.version_id == job.version_id  # the new model version to evaluate
    assert event["polls"] >= 2 and event["transient"] == 0
    assert json.loads(json.dumps(event)) == event  # a trigger event must be JSON


async def test_trigger_reports_a_failed_training_with_its_reason(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.knobs(training_seconds=0.5, fail_next_trainings=1, fail_reason="NLU training service crashed")
    job = await submit(emu, "rest-v2", "api_key")
    event = await run_to_event(trigger_for(connection(monkeypatch, emu, "rest-v2", "api_key"), "rest-v2", job.job_id))
    assert event["outcome"] == "finished"
    assert event["status"]["state"] == "failed"
    assert event["status"]["reason"] == "NLU training service crashed"


@pytest.mark.parametrize(("dialect", "auth"), [FORMS[0], FORMS[2]], ids=[FORM_IDS[0], FORM_IDS[2]])
async def test_5xx_429_and_timeouts_mean_poll_again(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, dialect: str, auth: str
) -> None:
    emu.knobs(training_seconds=1.0)
    job = await submit(emu, dialect, auth)
    path = STATUS[dialect]
    emu.knobs(
        fail_next_requests=[
            {"method": "GET", "path_regex": path, "status": 500},
            {"method": "GET", "path_regex": path, "status": 503},
            {"method": "GET", "path_regex": path, "status": 429},  # Retry-After: 1
        ],
        hang_after_accept=[{"method": "GET", "path_regex": path, "seconds": 2.0}],
    )
    conn_id = connection(monkeypatch, emu, dialect, auth, timeout=0.5)
    began = time.monotonic()
    event = await run_to_event(trigger_for(conn_id, dialect, job.job_id))
    assert event["outcome"] == "finished"
    assert event["status"]["state"] == "succeeded"
    assert event["transient"] == 4  # 500, 503, 429, timeout: each one more poll, none fatal
    assert route_count(emu, STATUS_ROUTE[dialect]) == event["polls"]
    assert time.monotonic() - began >= 2.0  # the 503's and the 429's Retry-After (1 s each) were waited for


async def test_401_refreshes_the_token_once_in_the_trigger(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.knobs(training_seconds=0.5)
    job = await submit(emu, "training-jobs", "oauth")
    emu.knobs(fail_next_requests=[{"method": "GET", "path_regex": STATUS["training-jobs"], "status": 401}])
    conn_id = connection(monkeypatch, emu, "training-jobs", "oauth")
    event = await run_to_event(trigger_for(conn_id, "training-jobs", job.job_id))
    assert event["outcome"] == "finished" and event["transient"] == 0
    assert route_count(emu, "POST /oauth/token") == 2  # the submit's token was replaced once (same connection)


async def test_deadline_passes_while_training_runs(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.knobs(training_seconds=60)
    job = await submit(emu, "rest-v2", "api_key")
    conn_id = connection(monkeypatch, emu, "rest-v2", "api_key")
    began = time.monotonic()
    event = await run_to_event(trigger_for(conn_id, "rest-v2", job.job_id, within=1.5, poll_max=10.0))
    elapsed = time.monotonic() - began
    assert event == {"outcome": "deadline", "job_id": job.job_id, "polls": event["polls"]}
    assert event["polls"] >= 1
    assert 1.3 <= elapsed < 5.0  # the wait is cut at the deadline, not at the next (up to 10 s) poll


async def test_deadline_passes_while_every_poll_fails(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    job = await submit(emu, "training-jobs", "oauth")
    emu.knobs(
        fail_next_requests=[{"method": "GET", "path_regex": STATUS["training-jobs"], "status": 502, "count": None}]
    )
    conn_id = connection(monkeypatch, emu, "training-jobs", "oauth")
    event = await run_to_event(trigger_for(conn_id, "training-jobs", job.job_id, within=2.0))
    assert event["outcome"] == "deadline"
    assert route_count(emu, STATUS_ROUTE["training-jobs"]) == event["polls"] >= 3


async def test_errors_polling_cannot_fix_end_the_trigger(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = "0123456789abcdef01234567"
    event = await run_to_event(trigger_for(connection(monkeypatch, emu, "rest-v2", "api_key"), "rest-v2", unknown))
    assert event["outcome"] == "error"
    assert f"task {unknown}" in event["message"] and "not found" in event["message"]

    job = await submit(emu, "training-jobs", "oauth")
    no_read = connection(monkeypatch, emu, "training-jobs", "oauth", scopes="ai:training:execute")
    event = await run_to_event(trigger_for(no_read, "training-jobs", job.job_id))
    assert event["outcome"] == "error"
    assert "missing OAuth2 scope 'ai:nlp:read'" in event["message"]


async def test_tls_failure_ends_the_trigger_instead_of_polling(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = json.loads(cognigy_conn(emu))
    conn["host"] = emu.url.replace("http://", "https://")  # https to a port serving plain HTTP
    conn_id = f"cognigy_trigger_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    began = time.monotonic()
    event = await run_to_event(trigger_for(conn_id, "rest-v2", "0123456789abcdef01234567"))
    assert event["outcome"] == "error"
    assert "TLS handshake or certificate verification failed" in event["message"]
    assert time.monotonic() - began < 5  # not polled until the 30 s deadline


# --- serialization: a restarted triggerer resumes the same job --------------------------------------------
@pytest.mark.parametrize(("dialect", "auth"), [FORMS[0], FORMS[2]], ids=[FORM_IDS[0], FORM_IDS[2]])
async def test_serialized_trigger_resumes_polling_the_same_job(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, dialect: str, auth: str
) -> None:
    emu.knobs(training_seconds=3.5)
    job = await submit(emu, dialect, auth)
    conn_id = connection(monkeypatch, emu, dialect, auth)
    first = trigger_for(conn_id, dialect, job.job_id, within=60, poll_min=0.3, poll_max=0.5)
    with pytest.raises(TimeoutError):  # the triggerer goes away mid-poll
        await run_to_event(first, timeout=1.5)
    await asyncio.sleep(0.2)  # let a GET cut off in flight reach the server before counting
    polled_by_first = route_count(emu, STATUS_ROUTE[dialect])
    assert polled_by_first >= 1

    classpath, kwargs = first.serialize()
    stored = Trigger.encrypt_kwargs(kwargs)  # what the trigger table holds
    decoded = {k: smart_decode_trigger_kwargs(v) for k, v in Trigger._decrypt_kwargs(stored).items()}
    restored = import_string(classpath)(**decoded)  # what a new triggerer builds from the row
    assert restored.serialize() == (classpath, kwargs)
    assert (restored.job_id, restored.end_time, restored.started_at) == (job.job_id, first.end_time, first.started_at)

    event = await run_to_event(restored)
    assert event["outcome"] == "finished"
    assert event["status"]["job_id"] == job.job_id and event["status"]["state"] == "succeeded"
    assert emu.stats()["trainings_total"] == 1  # polling only: nothing was resubmitted
    assert route_count(emu, STATUS_ROUTE[dialect]) == polled_by_first + event["polls"]


# --- PollPolicy ------------------------------------------------------------------------------------------
def test_poll_policy_backs_off_while_nothing_is_known() -> None:
    policy = PollPolicy(minimum=2.0, maximum=30.0, factor=1.5)
    delays = [policy.next_delay(now=float(i)) for i in range(12)]
    assert delays[:4] == [2.0, 3.0, 4.5, 6.75]
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == 30.0 and delays[-1] == 30.0  # capped
    policy.observe(None, now=20.0)  # a status without progress changes nothing
    assert policy.predicted_remaining() is None


def test_the_async_token_lock_works_across_event_loops() -> None:
    """A token provider used from one event loop, then another (a triggerer's or a test's second loop), must not
    fail with 'bound to a different event loop': each loop has its own refresh lock."""
    import http.server
    import threading

    import aiohttp

    from include.cognigy.config import ConnectionConfig

    issued = itertools.count()

    class TokenEndpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            # a token already expired when issued: every call refreshes, under the lock of the calling loop
            body = json.dumps({"access_token": f"t-{next(issued)}", "expires_in": -1}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    config = ConnectionConfig(base_url=base, dialect="rest-v2", client_id="c", client_secret="s")
    provider = TokenProvider(config)

    async def refresh_twice_at_once() -> list[str]:
        async with aiohttp.ClientSession() as session:
            return list(await asyncio.gather(provider.aget(session), provider.aget(session)))

    try:
        first = asyncio.run(refresh_twice_at_once())
        second = asyncio.run(refresh_twice_at_once())  # a new loop
    finally:
        server.shutdown()
        server.server_close()
    assert all(first) and all(second)
    assert len(set(first + second)) == 4  # each call refreshed (one at a time), in both loops
