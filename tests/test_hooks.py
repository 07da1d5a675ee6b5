"""CognigyHook on the HTTP provider: what actually goes over the wire, sync (requests, HttpHook's session) and async
(aiohttp), against a real HTTP server on 127.0.0.1 that records every request's headers.

The danger this guards against: `HttpHook.get_conn()` sends a connection's login/password as HTTP Basic auth on every
request and its unknown extra keys as headers. A Cognigy connection's login/password are OAuth2 client credentials or
the API key, and its extra holds settings (and maybe the API key): none of it may leave as a header or Basic auth.
The control test shows the plain `HttpHook` does leak them to this very server, so the recording would catch it.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from devtools.servers import free_port
from include.cognigy.errors import AmbiguousSubmission, CognigyError, PermissionDenied, TlsError, TransientError
from include.cognigy.transport import NO_AUTH, TokenProvider, _aiohttp_kind, no_answer_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))  # what Airflow does for plugins/
from cognigy_provider.hooks.cognigy import CognigyHook

TASK_ID = "0123456789abcdef01234567"
SERVER_TOKEN = "bearer-issued-by-the-server"


class Recorder(http.server.ThreadingHTTPServer):
    """Answers like a small Cognigy tenant and keeps (method, path, headers, body) of every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def paths(self, fragment: str) -> int:
        return sum(1 for _, path, _, _ in self.requests if fragment in path)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, list(self.headers.items()), body))
        if "/tasks/drop" in self.path:  # read the request, then close without an answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if "/tasks/hang" in self.path:
            time.sleep(2.0)  # the client has given up: nothing to answer
            self.close_connection = True
            return
        status, answer = 200, {}
        if self.path.endswith("/oauth2/token"):
            answer = {"access_token": SERVER_TOKEN, "expires_in": 3600}
        elif "/tasks/echo" in self.path:  # a gateway quoting the credential it refused
            status, answer = 403, {"detail": f"key {self.headers.get('X-API-Key')} may not read tasks"}
        elif "/tasks/" in self.path:
            answer = {"_id": self.path.rsplit("/", 1)[1], "status": "done", "currentStep": 3, "totalStep": 3}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    TokenProvider._instances.clear()
    recorder = Recorder()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


@pytest.fixture(autouse=True)
def _budget_and_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tenant budget in a throw-away SQLite file; a ~/.netrc (via $NETRC) naming 127.0.0.1, which requests and
    aiohttp both read when a session has no auth of its own and trusts the environment."""
    monkeypatch.setenv("COGNIGY_RATE_LIMIT_STORAGE", f"sqlite:///{tmp_path / 'budget.sqlite'}")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-SECRET-pw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


def put_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> str:
    conn_id = f"cognigy_hook_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "cognigy", **conn}))
    return conn_id


# Extras a real Cognigy connection has (and a few an HttpHook would turn into headers). Every value is a secret-like
# marker, so any of them in a header is found by value as well as by name.
def cognigy_extra(server: Recorder) -> dict[str, Any]:
    return {
        "api": "rest-v2",
        "token_url": f"{server.url}/auth/oauth2/token",
        "scopes": ["scope-SECRET-a", "scope-SECRET-b"],
        "rate_limit": {"requests": 1000, "per_seconds": 300, "share": 0.9},
        "timeout": 5,
        "console_url": "https://console-SECRET.example",
        "X-Tenant-Extra": "extra-header-SECRET",
    }


FORMS = {
    # the API key in the password field (no login)
    "api-key": lambda s: {"host": s.url, "password": "apikey-SECRET-pw", "extra": cognigy_extra(s)},
    # OAuth2 client credentials in login/password
    "oauth": lambda s: {
        "host": s.url,
        "login": "client-SECRET-id",
        "password": "client-SECRET-pw",
        "extra": cognigy_extra(s),
    },
    # both: the extra's API key is used, login/password must still never travel
    "extra-api-key": lambda s: {
        "host": s.url,
        "login": "client-SECRET-id",
        "password": "client-SECRET-pw",
        "extra": {**cognigy_extra(s), "api_key": "apikey-SECRET-extra"},
    },
}


def assert_nothing_leaked(server: Recorder, conn: dict[str, Any], sent_key: str | None) -> None:
    """No Basic auth, no header named after an extra key, no secret of the connection in any header; the only
    credential header is the one the transport sets (X-API-Key with `sent_key`, or the server's bearer token)."""
    extra_keys = {key.lower() for key in conn["extra"]}
    secrets = [v for v in (conn.get("login"), conn.get("password"), "netrc-SECRET-pw", "netrc-user") if v]
    secrets += [v for v in json.dumps(conn["extra"]).split('"') if "SECRET" in v]
    assert server.requests
    for method, path, headers, body in server.requests:
        where = f"{method} {path}"
        names = {name.lower() for name, _ in headers}
        assert not names & extra_keys, where
        for name, value in headers:
            assert not value.lower().startswith("basic"), (where, name)
            if name.lower() == "x-api-key":
                assert value == sent_key, where
                continue
            assert not any(secret in value for secret in secrets), (where, name)
            if name.lower() == "authorization":
                assert value == f"Bearer {SERVER_TOKEN}", where
        if not path.endswith("/oauth2/token"):  # the client secret travels in the token request's form only
            assert conn.get("password", "x") not in body.decode(), where


@pytest.mark.parametrize("form", list(FORMS))
def test_no_connection_field_becomes_a_header_or_basic_auth(
    server: Recorder, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    conn = FORMS[form](server)
    conn_id = put_connection(monkeypatch, conn)
    hook = CognigyHook(conn_id)

    assert hook.get_job_status(TASK_ID).job_id == TASK_ID  # sync: HttpHook's session via the transport
    assert hook.get_client().job_status(TASK_ID).state == "succeeded"
    assert hook.test_connection() == (True, "Connection successfully tested")
    hook.run("/new/v2.0/locales")  # HttpHook's own request path, on the overridden session

    async def poll() -> str:
        async_hook = CognigyHook(conn_id)
        try:
            return (await async_hook.a_get_job_status(TASK_ID, "rest-v2")).state
        finally:
            await async_hook.aclose()

    assert asyncio.run(poll()) == "succeeded"  # async: aiohttp

    sent_key = {"api-key": "apikey-SECRET-pw", "extra-api-key": "apikey-SECRET-extra"}.get(form)
    assert_nothing_leaked(server, conn, sent_key)
    assert server.paths("/tasks/") == 3
    if form == "oauth":
        assert server.paths("/oauth2/token") == 1  # one token for the sync and async sides of this process
        token_form = next(body for _, path, _, body in server.requests if path.endswith("/oauth2/token")).decode()
        assert "client_secret=client-SECRET-pw" in token_form  # where the secret belongs


def test_control_the_plain_http_hook_would_leak_them(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why `get_conn` is overridden: the provider's HttpHook, given the same connection, sends the client id and secret
    as Basic auth and the extras as headers (a dict extra such as `rate_limit` is left out: requests refuses it)."""
    from airflow.providers.http.hooks.http import HttpHook

    extra = {k: v for k, v in cognigy_extra(server).items() if isinstance(v, str)}
    conn = {"host": server.url, "login": "client-SECRET-id", "password": "client-SECRET-pw", "extra": extra}
    HttpHook(method="GET", http_conn_id=put_connection(monkeypatch, conn)).run("/new/v2.0/locales")
    (_, _, headers, _) = server.requests[-1]
    received = {name.lower(): value for name, value in headers}
    assert received["authorization"] == "Basic " + base64.b64encode(b"client-SECRET-id:client-SECRET-pw").decode()
    assert received["token_url"] == extra["token_url"] and received["x-tenant-extra"] == "extra-header-SECRET"


def test_the_sync_session_is_the_providers_with_tls_from_the_connection(
    server: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("a PEM bundle")
    base = {"host": "https://api-app.cognigy.ai", "password": "apikey-SECRET-pw"}
    cases = [
        ({}, True),
        ({"verify": False}, False),
        ({"verify": "false"}, False),
        ({"ca_bundle": str(bundle)}, str(bundle)),
    ]
    for extra, verify in cases:
        session = CognigyHook(put_connection(monkeypatch, {**base, "extra": {"api": "rest-v2", **extra}})).get_conn()
        assert session.verify == verify, extra
        assert session.auth is NO_AUTH
        assert isinstance(session.get_adapter("https://api-app.cognigy.ai/x"), TCPKeepAliveAdapter)
        assert not {"api", "ca_bundle", "verify", "x-api-key", "authorization"} & {h.lower() for h in session.headers}

    hook = CognigyHook(put_connection(monkeypatch, {"host": "api-app.cognigy.ai", "password": "k", "extra": {}}))
    assert hook.url_from_endpoint("/new/v2.0/locales") == "https://api-app.cognigy.ai/new/v2.0/locales"
    with pytest.raises(ValueError, match="extra_options"):
        hook.get_conn(extra_options={"verify": False})


def test_a_server_echoing_the_key_does_not_put_it_in_the_error(
    server: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = put_connection(monkeypatch, {"host": server.url, "password": "apikey-SECRET-echo", "extra": {}})
    with pytest.raises(PermissionDenied) as sync_error:
        CognigyHook(conn_id).get_job_status("echo")

    async def poll() -> None:
        hook = CognigyHook(conn_id)
        try:
            await hook.a_get_job_status("echo")
        finally:
            await hook.aclose()

    with pytest.raises(PermissionDenied) as async_error:
        asyncio.run(poll())
    for caught in (sync_error, async_error):
        assert "GET task echo" in str(caught.value) and "may not read tasks" in str(caught.value)
        assert "apikey-SECRET-echo" not in str(caught.value)


# --- aiohttp failures map to the same errors as requests failures -------------------------------------------------
def poll_once(monkeypatch: pytest.MonkeyPatch, host: str, job_id: str, timeout: float = 5) -> CognigyError:
    conn_id = put_connection(monkeypatch, {"host": host, "password": "apikey-SECRET-pw", "extra": {"timeout": timeout}})

    async def poll() -> CognigyError:
        hook = CognigyHook(conn_id)
        try:
            await hook.a_get_job_status(job_id, "rest-v2")
        except CognigyError as exc:
            return exc
        finally:
            await hook.aclose()
        raise AssertionError("no error")

    return asyncio.run(poll())


def test_async_connection_refused_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    error = poll_once(monkeypatch, f"http://127.0.0.1:{free_port()}", TASK_ID)
    assert type(error) is TransientError and "cannot connect" in str(error)


def test_async_tls_failure_is_not_transient(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    error = poll_once(monkeypatch, server.url.replace("http://", "https://"), TASK_ID)
    assert type(error) is TlsError and "TLS handshake or certificate verification failed" in str(error)
    assert server.requests == []  # nothing reached the server as HTTP


def test_async_no_answer_in_time_is_transient(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    began = time.monotonic()
    error = poll_once(monkeypatch, server.url, "hang", timeout=0.5)
    assert type(error) is TransientError and "no answer within 0.5 s" in str(error)
    assert time.monotonic() - began < 1.8


def test_async_connection_lost_is_transient_and_sent_once(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp resends a GET once by itself when the connection breaks; the transport turns that off, so one poll is
    one request against the tenant's budget (the trigger decides when to poll again)."""
    error = poll_once(monkeypatch, server.url, "drop")
    assert type(error) is TransientError and "connection lost" in str(error)
    assert server.paths("/tasks/drop") == 1


def test_aiohttp_failures_with_a_side_effect_are_ambiguous() -> None:
    """aiohttp's exceptions go through the same rule as requests' (`no_answer_error`): after sending, a call with a
    side effect is ambiguous; before connecting, it is a plain transient error."""

    def _aiohttp_failure(exc: BaseException, what: str, *, safe: bool, timeout: float) -> Exception:
        return no_answer_error(_aiohttp_kind(exc), what, exc, safe=safe, timeout=timeout)

    lost = aiohttp.ServerDisconnectedError()
    assert type(_aiohttp_failure(lost, "POST x", safe=False, timeout=5)) is AmbiguousSubmission
    assert type(_aiohttp_failure(lost, "GET x", safe=True, timeout=5)) is TransientError
    slow = aiohttp.SocketTimeoutError("read")
    assert type(_aiohttp_failure(slow, "POST x", safe=False, timeout=5)) is AmbiguousSubmission
    connect = aiohttp.ConnectionTimeoutError("connect")
    assert type(_aiohttp_failure(connect, "POST x", safe=False, timeout=5)) is TransientError
