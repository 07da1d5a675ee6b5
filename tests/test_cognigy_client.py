"""The Cognigy client layer against the real emulator over HTTP, for both dialects and every auth form.

Each test starts from `emulator.reset()` and an empty token cache, injects faults with the emulator's knobs
and checks what a user of the client sees (values, error types and messages) and what the tenant saw
(`emulator.stats()`: requests per route and status, trainings started).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import ipaddress
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying

from devtools.servers import Emulator, free_port
from emulator.seed import FLOW_ID, MODEL_IDS, PROJECT_ID
from include.cognigy.client import CognigyClient, TrainingUnknown
from include.cognigy.config import ConnectionConfig
from include.cognigy.errors import (
    AmbiguousSubmission,
    AuthenticationError,
    BadRequest,
    CognigyError,
    NotFound,
    PermissionDenied,
    RateLimited,
    TlsError,
    TransientError,
)
from include.cognigy.model import Target
from include.cognigy.problems import decode_json, parse_retry_after, raise_for_problem
from include.cognigy.transport import TokenProvider, _retry_wait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))  # what Airflow does for plugins/
from cognigy_provider.hooks.cognigy import config_from_connection

TARGET = Target(PROJECT_ID, FLOW_ID, "en-US", MODEL_IDS["en-US"])
SPEC_BODY = {"modelId": MODEL_IDS["en-US"]}
TRANSPORT_LOG = "include.cognigy.transport"

# The three ways to connect: (dialect, auth)
FORMS = [("rest-v2", "api_key"), ("rest-v2", "oauth"), ("training-jobs", "oauth")]
FORM_IDS = ["rest-v2-api-key", "rest-v2-oauth", "training-jobs-oauth"]
OAUTH_FORMS = [f for f in FORMS if f[1] == "oauth"]
OAUTH_IDS = [i for i, f in zip(FORM_IDS, FORMS, strict=True) if f[1] == "oauth"]

# Paths (regex on the request path) of the calls each dialect makes
TRAIN = {"rest-v2": r"/intents/train$", "training-jobs": r"/training/jobs$"}
STATUS = {"rest-v2": r"/new/v2\.0/tasks/", "training-jobs": r"/training/jobs/"}
TRAIN_ROUTE = {
    "rest-v2": "POST /new/v2.0/flows/{flowId}/intents/train",
    "training-jobs": "POST /api/v2/ai/nlp/training/jobs",
}
STATUS_ROUTE = {"rest-v2": "GET /new/v2.0/tasks/{taskId}", "training-jobs": "GET /api/v2/ai/nlp/training/jobs/{jobId}"}
TOKEN_ROUTES = ("POST /auth/oauth2/token", "POST /oauth/token")


def make_client(
    emu: Emulator,
    dialect: str = "rest-v2",
    auth: str = "api_key",
    *,
    timeout: float = 5.0,
    attempts: int = 4,
    budget: float = 20.0,
    **config: Any,
) -> CognigyClient:
    creds: dict[str, Any] = {"api_key": emu.api_key} if auth == "api_key" else {}
    if auth == "oauth":
        creds = {"client_id": emu.client_id, "client_secret": emu.client_secret}
    base = config.pop("base_url", emu.url)
    client = CognigyClient(ConnectionConfig(base_url=base, dialect=dialect, timeout_seconds=timeout, **creds, **config))
    client.transport.max_attempts = attempts
    client.transport.max_retry_seconds = budget
    return client


def start(client: CognigyClient, key: str = "test-key"):
    return client.start_training(TARGET, mode="full", spec_body=SPEC_BODY, idempotency_key=key)


def route_count(emu: Emulator, route: str) -> int:
    return emu.stats()["by_route"].get(route, 0)


def token_requests(emu: Emulator) -> int:
    return sum(route_count(emu, route) for route in TOKEN_ROUTES)


def status_count(emu: Emulator, status: int) -> int:
    return emu.stats()["by_status"].get(str(status), 0)


def retry_logs(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == TRANSPORT_LOG and "; retry " in r.getMessage())


# --- tokens -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dialect", "auth"), OAUTH_FORMS, ids=OAUTH_IDS)
def test_token_is_cached_per_connection(emu: Emulator, dialect: str, auth: str) -> None:
    first = make_client(emu, dialect, auth)
    job = start(first)
    for _ in range(3):
        first.job_status(job.job_id)
    same_connection = make_client(emu, dialect, auth)
    same_connection.job_status(job.job_id)
    assert token_requests(emu) == 1

    other_scopes = "ai:nlp:read" if dialect == "training-jobs" else "api"
    other = make_client(emu, dialect, auth, scopes=other_scopes)
    other.job_status(job.job_id)
    assert token_requests(emu) == 2  # a connection with other scopes has a token of its own


@pytest.mark.parametrize(("dialect", "auth"), OAUTH_FORMS, ids=OAUTH_IDS)
def test_token_is_refreshed_before_it_expires(emu: Emulator, dialect: str, auth: str) -> None:
    emu.knobs(token_ttl_seconds=3)  # the client refreshes when 10 % of the lifetime (0.3 s) is left
    client = make_client(emu, dialect, auth)
    job = start(client)
    issued = time.monotonic()  # the token was fetched before this (first call of `start`)
    time.sleep(0.5)
    client.job_status(job.job_id)
    assert token_requests(emu) == 1
    time.sleep(max(0.0, issued + 2.8 - time.monotonic()))
    client.job_status(job.job_id)  # the old token is still valid for ~0.2 s on the server
    assert token_requests(emu) == 2
    assert status_count(emu, 401) == 0  # refreshed ahead of expiry, not after a rejection


@pytest.mark.parametrize(("dialect", "auth"), OAUTH_FORMS, ids=OAUTH_IDS)
def test_concurrent_threads_share_one_token_request(emu: Emulator, dialect: str, auth: str) -> None:
    job = start(make_client(emu, dialect, auth))
    TokenProvider._instances.clear()
    before = token_requests(emu)
    emu.knobs(latency_ms=300)  # the token request is slow, so every thread arrives while it is in flight
    clients = [make_client(emu, dialect, auth) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    results: list[str] = []
    errors: list[BaseException] = []

    def poll(client: CognigyClient) -> None:
        barrier.wait()
        try:
            results.append(client.job_status(job.job_id).job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poll, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == [job.job_id] * len(clients)
    assert token_requests(emu) - before == 1


@pytest.mark.parametrize(("dialect", "auth"), OAUTH_FORMS, ids=OAUTH_IDS)
def test_concurrent_401s_replace_the_token_once(emu: Emulator, dialect: str, auth: str) -> None:
    """Eight threads all get a 401 at once (as after a revoked token): one refresh, every call succeeds."""
    warm = make_client(emu, dialect, auth)
    job = start(warm)
    assert token_requests(emu) == 1
    emu.knobs(
        latency_ms=400,
        fail_next_requests=[{"method": "GET", "path_regex": STATUS[dialect], "status": 401, "count": 8}],
    )
    clients = [make_client(emu, dialect, auth) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def poll(client: CognigyClient) -> None:
        barrier.wait()
        try:
            client.job_status(job.job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poll, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert status_count(emu, 401) == 8
    assert token_requests(emu) == 2  # the first token, and one replacement shared by all eight


@pytest.mark.parametrize(("dialect", "auth"), OAUTH_FORMS, ids=OAUTH_IDS)
def test_401_refreshes_the_token_and_retries_once(emu: Emulator, dialect: str, auth: str) -> None:
    client = make_client(emu, dialect, auth)
    job = start(client)
    emu.knobs(fail_next_requests=[{"method": "GET", "path_regex": STATUS[dialect], "status": 401, "count": 1}])
    assert client.job_status(job.job_id).job_id == job.job_id
    assert token_requests(emu) == 2
    assert route_count(emu, STATUS_ROUTE[dialect]) == 2


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_401_after_the_refresh_fails_with_a_clear_message(emu: Emulator, dialect: str, auth: str) -> None:
    client = make_client(emu, dialect, auth)
    job = start(client)
    emu.knobs(fail_next_requests=[{"method": "GET", "path_regex": STATUS[dialect], "status": 401, "count": 5}])
    with pytest.raises(AuthenticationError, match="authentication expired or invalid") as caught:
        client.job_status(job.job_id)
    assert caught.value.status == 401
    # OAuth2: one refresh and one resend; an API key cannot be refreshed, so no resend
    assert route_count(emu, STATUS_ROUTE[dialect]) == (2 if auth == "oauth" else 1)
    assert token_requests(emu) == (2 if auth == "oauth" else 0)


def test_wrong_credentials_fail_with_a_clear_message(emu: Emulator) -> None:
    client = CognigyClient(ConnectionConfig(base_url=emu.url, api_key="not-the-key"))
    with pytest.raises(AuthenticationError, match=r"authentication expired or invalid .*API key"):
        client.job_status("6630a1b2c3d4e5f6012345aa")
    for dialect in ("rest-v2", "training-jobs"):
        config = ConnectionConfig(base_url=emu.url, dialect=dialect, client_id=emu.client_id, client_secret="wrong")
        with pytest.raises(AuthenticationError, match="POST OAuth2 token: authentication expired or invalid"):
            CognigyClient(config).job_status("6630a1b2c3d4e5f6012345aa")
    assert "wrong" not in str(config) and "not-the-key" not in repr(client.config)  # secrets never print
    with pytest.raises(ValidationError) as invalid:  # an API key alone is not enough for training-jobs
        ConnectionConfig(base_url=emu.url, dialect="training-jobs", api_key="secret-key-value-123")
    assert "needs OAuth2 client credentials" in str(invalid.value)
    assert "secret-key-value-123" not in str(invalid.value)  # the error does not echo its input


# --- 403 / 400 / 422 / 404 ------------------------------------------------------------------------------
def test_submit_without_the_training_scope_names_the_scope(emu: Emulator) -> None:
    client = make_client(emu, "training-jobs", "oauth", scopes="ai:nlp:read ai:nlp:write")
    with pytest.raises(PermissionDenied, match="ai:training:execute") as caught:
        start(client)
    assert caught.value.status == 403
    assert "scopes" in str(caught.value)  # says where to add it
    assert emu.stats()["trainings_total"] == 0
    assert client.serving_version(TARGET)  # reading still works with ai:nlp:read


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_400_carries_the_servers_detail(emu: Emulator, dialect: str, auth: str) -> None:
    client = make_client(emu, dialect, auth)
    with pytest.raises(BadRequest) as caught:
        if dialect == "rest-v2":
            client.start_training(TARGET, mode="turbo", spec_body={}, idempotency_key="k")
        else:
            body = {**SPEC_BODY, "trainingDataSliceMatrix": {"no_such_intent": 5}}
            client.start_training(TARGET, mode="full", spec_body=body, idempotency_key="k")
    message = str(caught.value)
    assert caught.value.status == 400
    assert ("mode" in message) if dialect == "rest-v2" else ("unknown intent 'no_such_intent'" in message)
    assert route_count(emu, TRAIN_ROUTE[dialect]) == 1  # a refusal is final: not resent
    assert emu.stats()["trainings_total"] == 0


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_422_carries_the_servers_detail(emu: Emulator, dialect: str, auth: str) -> None:
    detail = "localeId: the locale has no intents to train"
    emu.knobs(fail_next_requests=[{"method": "POST", "path_regex": TRAIN[dialect], "status": 422, "detail": detail}])
    with pytest.raises(BadRequest, match=detail) as caught:
        start(make_client(emu, dialect, auth))
    assert caught.value.status == 422


def test_404_says_which_flow_task_locale(emu: Emulator) -> None:
    client = make_client(emu)
    unknown_task = "0123456789abcdef01234567"
    with pytest.raises(NotFound, match=f"task {unknown_task}"):
        client.job_status(unknown_task)
    unknown_flow = Target(PROJECT_ID, "0123456789abcdef0123ffff", "en-US", "")
    with pytest.raises(NotFound, match=r"flow 0123456789abcdef0123ffff.*not found"):
        client.start_training(unknown_flow, mode="full", spec_body={}, idempotency_key="k")
    with pytest.raises(NotFound, match=r"flow 0123456789abcdef0123ffff not found"):
        client.v2.flow(unknown_flow)  # type: ignore[union-attr]
    with pytest.raises(NotFound, match=r"locale 'fr-FR' not in project"):
        client.start_training(Target(PROJECT_ID, FLOW_ID, "fr-FR", ""), mode="full", spec_body={}, idempotency_key="k")
    assert emu.stats()["trainings_total"] == 0


def test_404_says_which_model_version_job(emu: Emulator) -> None:
    client = make_client(emu, "training-jobs", "oauth")
    with pytest.raises(NotFound, match=r"version no-such-version.*Model version 'no-such-version' not found"):
        client.score(TARGET, "I want to turn on the lights", version_id="no-such-version")
    unknown_model = Target(PROJECT_ID, FLOW_ID, "en-US", "no-such-model")
    with pytest.raises(NotFound, match=r"model no-such-model.*Model 'no-such-model' not found"):
        client.serving_version(unknown_model)
    with pytest.raises(NotFound, match=r"training job nope"):
        client.job_status("nope")


# --- 429 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dialect", "auth"), [FORMS[0], FORMS[2]], ids=[FORM_IDS[0], FORM_IDS[2]])
def test_429_waits_for_retry_after_then_succeeds(emu: Emulator, dialect: str, auth: str) -> None:
    client = make_client(emu, dialect, auth)
    job = start(client)
    emu.knobs(rate_limit_requests=2, rate_limit_window_seconds=1.5)  # the tenant's real limiter, scaled down
    began = time.monotonic()
    states = [client.job_status(job.job_id).job_id for _ in range(4)]
    elapsed = time.monotonic() - began
    assert states == [job.job_id] * 4
    assert emu.stats()["responses_429"] >= 1
    assert elapsed >= 1.0  # waited for the window (Retry-After is whole seconds, at least 1)


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_429_on_the_training_post_waits_and_starts_one_training(emu: Emulator, dialect: str, auth: str) -> None:
    """A 429 is a refusal before any work (the rate limit): resending after Retry-After is safe."""
    client = make_client(emu, dialect, auth)
    emu.knobs(fail_next_requests=[{"method": "POST", "path_regex": TRAIN[dialect], "status": 429}])  # Retry-After 1
    began = time.monotonic()
    job = start(client)
    assert time.monotonic() - began >= 1.0
    assert job.state in ("queued", "running")
    assert route_count(emu, TRAIN_ROUTE[dialect]) == 2
    assert emu.stats()["trainings_total"] == 1


def test_429_that_outlasts_the_budget_is_raised_without_waiting(emu: Emulator) -> None:
    client = make_client(emu, attempts=5, budget=0.5)
    emu.knobs(fail_next_requests=[{"method": "GET", "path_regex": r"/locales", "status": 429}])  # Retry-After 1
    began = time.monotonic()
    with pytest.raises(RateLimited, match=r"rate limit reached \(retry after 1 s\)") as caught:
        client.v2.locale(TARGET)  # type: ignore[union-attr]
    assert caught.value.retry_after == 1.0
    assert time.monotonic() - began < 0.9  # did not sleep a Retry-After that ends past the 0.5 s budget


def test_503_retry_after_is_honoured(emu: Emulator) -> None:
    client = make_client(emu)
    emu.knobs(fail_next_requests=[{"method": "GET", "path_regex": r"/locales", "status": 503}])  # Retry-After 1
    began = time.monotonic()
    assert client.v2.locale(TARGET)["name"] == "en-US"  # type: ignore[union-attr]
    assert time.monotonic() - began >= 1.0


def test_backoff_without_retry_after_is_exponential_with_jitter() -> None:
    """No server sends a 429 without Retry-After here (the emulator always does), so the wait function is
    checked directly: full jitter in [0, 0.5 * 2^(n-1)] s, capped at 30 s, and really random."""

    def wait_after(attempt: int, exc: Exception) -> float:
        state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.set_exception((type(exc), exc, None))
        return _retry_wait(state)

    for attempt in (1, 2, 3, 4, 8, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        waits = [wait_after(attempt, RateLimited("429", retry_after=None)) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert len({round(w, 6) for w in waits}) > 150  # jitter: not one fixed schedule
    assert max(wait_after(40, TransientError("500")) for _ in range(50)) <= 30.0
    assert wait_after(1, RateLimited("429", retry_after=7.0)) == pytest.approx(7.1)


# --- Retry-After parsing (unit) ----------------------------------------------------------------------------
def test_parse_retry_after_seconds_and_http_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    in_30s = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert parse_retry_after(email.utils.format_datetime(in_30s, usegmt=True)) == pytest.approx(30, abs=1.5)
    assert parse_retry_after(in_30s.strftime("%A, %d-%b-%y %H:%M:%S GMT")) == pytest.approx(30, abs=1.5)  # RFC 850
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0  # in the past: go now
    # asctime form carries no zone but means GMT; a machine in another time zone must not shift it
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        assert parse_retry_after(in_30s.strftime("%a %b %d %H:%M:%S %Y")) == pytest.approx(30, abs=1.5)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_problem_headers_are_case_insensitive_and_scope_comes_from_www_authenticate() -> None:
    with pytest.raises(RateLimited) as caught:
        raise_for_problem(429, b"{}", {"RETRY-AFTER": "3"}, "GET x")
    assert caught.value.retry_after == 3.0
    challenge = {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="ai:models:rollback"'}
    with pytest.raises(PermissionDenied, match="missing OAuth2 scope 'ai:models:rollback'"):
        raise_for_problem(403, b'{"detail": "forbidden"}', challenge, "POST rollback")
    with pytest.raises(BadRequest, match=r"\(400\): plain text from a proxy"):
        raise_for_problem(400, b"plain text from a proxy", {}, "POST x")
    with pytest.raises(CognigyError, match=r"GET task 1: the answer is not JSON .*base URL"):
        decode_json(b"<html>login page of a proxy</html>", "GET task 1")


# --- 5xx and timeouts on safe calls --------------------------------------------------------------------
SAFE_CALLS = {
    # name: (dialect-specific path regex, route, call)
    "status": (STATUS, STATUS_ROUTE, lambda c, job: c.job_status(job)),
    "scoring": (
        {"rest-v2": r"/nlu/scores$", "training-jobs": r"/predict$"},
        {
            "rest-v2": "POST /new/v2.0/projects/{projectId}/nlu/scores",
            "training-jobs": "POST /api/v2/ai/nlp/models/{modelId}/versions/{versionId}/predict",
        },
        lambda c, job: c.score(TARGET, "turn on the kitchen lights"),
    ),
    "export": (
        {"rest-v2": r"/intents/export$", "training-jobs": r"/models/[^/]+$"},
        {
            "rest-v2": "POST /new/v2.0/flows/{flowId}/intents/export",
            "training-jobs": "GET /api/v2/ai/nlp/models/{modelId}",
        },
        lambda c, job: c.capture_rollback_point(TARGET),
    ),
}


@pytest.mark.parametrize("call", sorted(SAFE_CALLS))
@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_5xx_on_safe_calls_is_retried_with_backoff(emu: Emulator, dialect: str, auth: str, call: str) -> None:
    client = make_client(emu, dialect, auth)
    job = start(client)
    regex, route, run = SAFE_CALLS[call]
    client.score(TARGET, "warm up")  # lookups (locale, flow, version) cached, so only the call under test is hit
    before = route_count(emu, route[dialect])
    emu.knobs(fail_next_requests=[{"path_regex": regex[dialect], "status": 500, "count": 1},
                                  {"path_regex": regex[dialect], "status": 502, "count": 1}])  # fmt: skip
    assert run(client, job.job_id)
    assert route_count(emu, route[dialect]) - before == 3
    assert status_count(emu, 500) == 1 and status_count(emu, 502) == 1


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_5xx_gives_up_after_max_attempts(emu: Emulator, dialect: str, auth: str) -> None:
    client = make_client(emu, dialect, auth, attempts=3)
    job = start(client)
    emu.knobs(fail_next_requests=[{"path_regex": STATUS[dialect], "status": 500, "count": 10}])
    with pytest.raises(TransientError, match=r"server error 500: Injected failure") as caught:
        client.job_status(job.job_id)
    assert not isinstance(caught.value, AmbiguousSubmission)
    assert route_count(emu, STATUS_ROUTE[dialect]) == 3


@pytest.mark.parametrize("call", sorted(SAFE_CALLS))
@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_timeouts_on_safe_calls_are_retried(emu: Emulator, dialect: str, auth: str, call: str) -> None:
    client = make_client(emu, dialect, auth, timeout=0.5)
    job = start(client)
    regex, route, run = SAFE_CALLS[call]
    client.score(TARGET, "warm up")
    before = route_count(emu, route[dialect])
    emu.knobs(hang_after_accept=[{"path_regex": regex[dialect], "seconds": 1.5, "count": 1}])
    assert run(client, job.job_id)
    assert route_count(emu, route[dialect]) - before == 2


# --- calls that start a training are never resent -------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503, 408])
@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_5xx_on_the_training_post_is_ambiguous_and_not_resent(
    emu: Emulator, dialect: str, auth: str, status: int
) -> None:
    client = make_client(emu, dialect, auth)
    emu.knobs(fail_next_requests=[{"method": "POST", "path_regex": TRAIN[dialect], "status": status, "count": 3}])
    with pytest.raises(AmbiguousSubmission, match=rf"server error {status}.*not resent") as caught:
        start(client)
    assert caught.value.status == status
    assert route_count(emu, TRAIN_ROUTE[dialect]) == 1


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_timeout_on_the_training_post_is_ambiguous_and_starts_exactly_one(
    emu: Emulator, dialect: str, auth: str
) -> None:
    client = make_client(emu, dialect, auth, timeout=0.5)
    client.capture_rollback_point(TARGET)  # token and lookups first, so the short timeout only meets the hang
    emu.knobs(hang_after_accept=[{"method": "POST", "path_regex": TRAIN[dialect], "seconds": 2}])
    with pytest.raises(AmbiguousSubmission, match=r"no answer within 0.5 s.*not resent"):
        start(client)
    assert route_count(emu, TRAIN_ROUTE[dialect]) == 1
    assert emu.stats()["trainings_total"] == 1  # the server did start it: the caller must reconcile
    if dialect == "training-jobs":  # the specification lists no jobs: unknowable, so it fails closed (issue 25)
        with pytest.raises(TrainingUnknown, match="no second training is started"):
            client.recent_trainings(TARGET, since_epoch=time.time() - 60)
        return
    found = client.recent_trainings(TARGET, since_epoch=time.time() - 60)
    assert len(found) == 1  # and reconciliation finds it


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_connection_lost_after_sending_the_training_post_is_ambiguous(emu: Emulator, dialect: str, auth: str) -> None:
    client = make_client(emu, dialect, auth)
    client.capture_rollback_point(TARGET)
    emu.knobs(drop_connections=[{"method": "POST", "path_regex": TRAIN[dialect], "after_processing": True}])
    with pytest.raises(AmbiguousSubmission, match="connection lost after sending"):
        start(client)
    assert route_count(emu, TRAIN_ROUTE[dialect]) == 1
    assert emu.stats()["trainings_total"] == 1


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_connection_refused_on_a_post_is_a_safe_retry(
    emu: Emulator, dialect: str, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: the request never left the client
    token_url = {"rest-v2": f"{emu.url}/auth/oauth2/token", "training-jobs": f"{emu.url}/oauth/token"}[dialect]
    extra = {"token_url": token_url} if auth == "oauth" else {}  # the token still comes from the emulator
    client = make_client(emu, dialect, auth, attempts=3, base_url=closed, **extra)
    train_path = {
        "rest-v2": f"/new/v2.0/flows/{FLOW_ID}/intents/train",
        "training-jobs": "/api/v2/ai/nlp/training/jobs",
    }
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOG)
    with pytest.raises(TransientError, match=r"cannot connect \(NewConnectionError") as caught:
        client.transport.json("POST", train_path[dialect], "POST train", safe=False, json=SPEC_BODY)
    assert not isinstance(caught.value, AmbiguousSubmission)
    assert retry_logs(caplog) == 2  # 3 attempts: retried because it provably never reached a server
    assert token_requests(emu) == (1 if auth == "oauth" else 0)


# --- TLS -------------------------------------------------------------------------------------------------
def test_config_from_connection_maps_tls_and_auth_extras(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not parsed here")
    host = "https://api-app.cognigy.ai"
    assert config_from_connection(host, None, "key", {}).verify is True  # on by default
    assert ConnectionConfig(base_url=host, api_key="k").verify is True
    assert config_from_connection(host, None, "key", {"verify": False}).verify is False
    assert config_from_connection(host, None, "key", {"verify": "false"}).verify is False
    assert config_from_connection(host, None, "key", {"verify": "true"}).verify is True
    assert config_from_connection(host, None, "key", {"ca_bundle": str(bundle)}).verify == str(bundle)
    assert config_from_connection(host, None, "key", {"verify": str(bundle)}).verify == str(bundle)
    with pytest.raises(ValidationError, match=r"CA bundle .* does not exist"):
        config_from_connection(host, None, "key", {"ca_bundle": str(tmp_path / "missing.pem")})

    rest_key = config_from_connection("api-app.cognigy.ai", None, "key", {})
    assert (rest_key.base_url, rest_key.dialect, rest_key.uses_oauth) == (host, "rest-v2", False)
    rest_oauth = config_from_connection(host, "client", "secret", {"token_url": f"{host}/auth/oauth2/token"})
    assert rest_oauth.uses_oauth and rest_oauth.client_id == "client"
    jobs = config_from_connection(
        host, "client", "secret", {"api": "training-jobs", "scopes": ["ai:nlp:read", "ai:nlp:write"], "timeout": 12}
    )
    assert (jobs.dialect, jobs.effective_scopes, jobs.timeout_seconds) == (
        "training-jobs",
        "ai:nlp:read ai:nlp:write",
        12,
    )
    assert jobs.effective_token_url == f"{host}/oauth/token"
    default_scopes = config_from_connection(host, "client", "secret", {"api": "training-jobs"}).effective_scopes
    assert default_scopes == "ai:nlp:read ai:nlp:write ai:training:execute ai:models:rollback"


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_https_to_a_plain_http_port_fails_naming_tls(
    emu: Emulator, dialect: str, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(emu, dialect, auth, base_url=emu.url.replace("http://", "https://"))
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOG)
    with pytest.raises(TlsError, match=r"TLS handshake or certificate verification failed.*verify"):
        client.capture_rollback_point(TARGET)
    with pytest.raises(TlsError, match="TLS"):  # not an AmbiguousSubmission: nothing was sent
        start(client)
    assert retry_logs(caplog) == 0  # a configuration error is not retried
    assert emu.stats()["requests_total"] == 0  # no HTTP request reached the server


@pytest.mark.parametrize(("dialect", "auth"), FORMS, ids=FORM_IDS)
def test_ca_bundle_from_the_connection_reaches_the_requests(
    emu: Emulator, tls_proxy: TlsProxy, dialect: str, auth: str
) -> None:
    """The emulator behind a real TLS endpoint whose certificate a private CA signed."""
    extra = {"api": dialect}
    login, password = (emu.client_id, emu.client_secret) if auth == "oauth" else (None, emu.api_key)
    untrusted = CognigyClient(config_from_connection(tls_proxy.url, login, password, extra))
    with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.capture_rollback_point(TARGET)

    trusting = CognigyClient(
        config_from_connection(tls_proxy.url, login, password, {**extra, "ca_bundle": tls_proxy.ca})
    )
    assert trusting.config.verify == tls_proxy.ca
    job = start(trusting)  # token request (OAuth2), lookups and the training POST all over verified TLS
    assert trusting.job_status(job.job_id).job_id == job.job_id
    assert emu.stats()["trainings_total"] == 1


# --- a real TLS endpoint in front of the emulator --------------------------------------------------------
class TlsProxy:
    """Terminates TLS on 127.0.0.1 with a certificate from a throw-away CA and pipes bytes to the emulator."""

    def __init__(self, upstream_port: int, cert: Path, key: Path, ca: Path) -> None:
        self.ca = str(ca)
        self._upstream = upstream_port
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self._upstream))
        threading.Thread(target=_pipe, args=(upstream, tls), daemon=True).start()
        _pipe(tls, upstream)

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()


def _write_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test private CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


@pytest.fixture(scope="module")
def tls_proxy(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    ca, cert, key = _write_ca_and_server_cert(tmp_path_factory.mktemp("tls"))
    proxy = TlsProxy(int(emulator.url.rsplit(":", 1)[1]), cert, key, ca)
    yield proxy
    proxy.stop()


def test_tls_endpoint_fixture_needs_the_ca(tls_proxy: TlsProxy) -> None:
    """Sanity check of the fixture itself: plain requests trusts the endpoint only with the CA bundle."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_proxy.url}/_emulator/health", timeout=5)
    assert requests.get(f"{tls_proxy.url}/_emulator/health", timeout=5, verify=tls_proxy.ca).json() == {"status": "ok"}


# --- training-jobs: the server's own metrics are kept, typed and JSON-safe ---------------------------------------
def test_training_jobs_metrics_are_normalised_from_the_server(emu: Emulator) -> None:
    import json

    from include.cognigy.training_jobs import mlflow_platform_metrics

    client = make_client(emu, "training-jobs", "oauth")
    version = client.serving_version(TARGET)
    assert version
    metrics = client.platform_feedback(TARGET, version)["serverMetrics"]
    assert {"precision", "recall", "f1", "bias_score", "intent_distribution", "raw"} <= metrics.keys()
    for name in ("precision", "recall", "f1", "bias_score"):
        assert isinstance(metrics[name], float) and 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    raw = metrics["raw"]
    assert metrics["f1"] == raw["f1Score"] and metrics["bias_score"] == raw["biasScore"]
    assert metrics["intent_distribution"] and all(isinstance(v, float) for v in metrics["intent_distribution"].values())
    assert set(metrics["intent_distribution"]) == set(raw["intentDistribution"])
    json.dumps(metrics, allow_nan=False)  # JSON-safe: goes to XCom, the gate report and MLflow as it is
    logged = mlflow_platform_metrics(metrics)
    assert set(logged) == {"platform.precision", "platform.recall", "platform.f1", "platform.bias_score",
                           "platform.intents"}  # fmt: skip
    assert logged["platform.intents"] == len(metrics["intent_distribution"])


def test_training_jobs_metrics_normalise_odd_answers() -> None:
    import json

    from include.cognigy.training_jobs import TrainingJobsApi, mlflow_platform_metrics

    class Recorded:  # the transport's one method, answering what a gateway might send
        def __init__(self, answer: Any) -> None:
            self.answer, self.calls = answer, []

        def json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
            self.calls.append((method, path, kwargs.get("safe")))
            return self.answer

    odd = {
        "precision": {"macro": 0.81, "micro": 0.9},
        "recall": "0.75",
        "f1": float("nan"),
        "f1Score": 0.7,
        "biasScore": True,
        "intentDistribution": {"greeting": 12, "order": float("inf"), "refund": "n/a", "bye": 0.25},
        "extra": {"nested": [float("-inf"), 1]},
    }
    transport = Recorded(odd)
    metrics = TrainingJobsApi(transport).metrics(TARGET, "v1")  # type: ignore[arg-type]
    assert transport.calls == [
        ("GET", f"/api/v2/ai/nlp/models/{TARGET.model_id}/versions/v1/metrics"
         "?include_bias_detection=true&include_precision_recall=true", True),
    ]  # fmt: skip
    assert (metrics["precision"], metrics["recall"], metrics["f1"], metrics["bias_score"]) == (0.81, 0.75, 0.7, None)
    assert metrics["intent_distribution"] == {"greeting": 12.0, "bye": 0.25}
    assert metrics["raw"]["f1"] is None and metrics["raw"]["extra"] == {"nested": [None, 1]}
    json.dumps(metrics, allow_nan=False)
    assert mlflow_platform_metrics(metrics) == {
        "platform.precision": 0.81, "platform.recall": 0.75, "platform.f1": 0.7, "platform.intents": 2.0,
    }  # fmt: skip

    for answer in ({}, [], None, "oops"):
        empty = TrainingJobsApi(Recorded(answer)).metrics(TARGET, "v1")  # type: ignore[arg-type]
        assert empty == {"precision": None, "recall": None, "f1": None, "bias_score": None,
                         "intent_distribution": {}, "raw": {}}  # fmt: skip
        assert mlflow_platform_metrics(empty) == {}


def test_every_request_carries_a_request_id_that_errors_quote(emulator) -> None:
    """Support can find the call: an error message names the X-Request-Id that was sent."""
    from include.cognigy.config import ConnectionConfig
    from include.cognigy.errors import NotFound
    from include.cognigy.transport import Transport

    transport = Transport(ConnectionConfig(base_url=emulator.url, dialect="rest-v2", api_key=emulator.api_key))
    with pytest.raises(NotFound) as caught:
        transport.json("GET", "/new/v2.0/tasks/000000000000000000000000", "GET task", safe=True)
    assert re.search(r"\[X-Request-Id [0-9a-f]{32}\]", str(caught.value)), str(caught.value)
