"""Everything that happens to a tenant request before and after its route handler (pure ASGI).

Order: count it -> latency -> fail_next_requests -> drop_connections (before) -> no body on GET ->
authenticate -> rate limit -> body size (any body) -> handler -> drop_connections (after) / hang_after_accept.
Admin routes (/_emulator/...) skip all of it. The access log never contains query strings or headers,
so an `api_key=` query parameter or a token cannot end up in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.routing import Match, Router

from emulator.auth import AUDIENCE_JOBS, AUDIENCE_REST, Principal
from emulator.problems import PROBLEM_MEDIA_TYPE, problem_bytes
from emulator.runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("emulator.http")

REST_PREFIX = "/new/v2.0/"
JOBS_PREFIX = "/api/v2/ai/nlp/"
ADMIN_PREFIX = "/_emulator/"
MAX_BODY_BYTES = 60 * 1024  # Cognigy platform limit per request body (JSON and multipart alike): 61,440 bytes


def body_limit_detail(size: int) -> str:
    return (
        f"Request body of {size} bytes exceeds the {MAX_BODY_BYTES} byte (60 kB) limit per request; "
        "split the payload (e.g. import intents in chunks: first mode=overwrite, then mode=merge)"
    )


RAW_SEND_KEY = "emulator.raw_send"  # the server's own send callable, put into the scope by the app


def dialect_of(path: str) -> str | None:
    if path.startswith(REST_PREFIX):
        return AUDIENCE_REST
    if path.startswith(JOBS_PREFIX):
        return AUDIENCE_JOBS
    return None


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


async def send_problem(
    send: Send, scope: Scope, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> None:
    body = problem_bytes(status, detail, scope["path"], **extra)
    raw_headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def drop_connection(scope: Scope) -> bool:
    """Close the TCP connection without an HTTP answer. False if the server does not let us.

    uvicorn hands the app its RequestResponseCycle.send; its transport is the client connection. Aborting it
    makes uvicorn's connection_lost mark the cycle disconnected, so uvicorn does not send its own 500.
    """
    raw_send = scope.get(RAW_SEND_KEY)
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    for _ in range(3):  # let the event loop run connection_lost
        await asyncio.sleep(0)
    return True


class Gateway:
    def __init__(self, app: ASGIApp, runtime: Runtime, router: Router) -> None:
        self.app = app
        self.runtime = runtime
        self.router = router

    def _template(self, scope: Scope) -> str:
        partial = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", scope["path"])
            if match == Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return partial or "<unmatched>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        admin = scope["path"].startswith(ADMIN_PREFIX)
        outcome: dict[str, Any] = {"status": None}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                if not admin:
                    self.runtime.stats.response(message["status"])
            await send(message)

        try:
            if admin:
                await self.app(scope, receive, observed_send)
            else:
                await self._tenant(scope, receive, observed_send)
        finally:
            log.info(
                "%s %s -> %s (%.0f ms)",
                scope["method"],
                scope["path"],
                outcome["status"] or "no answer",
                1000 * (time.monotonic() - started),
            )

    def _authenticate(self, scope: Scope, audience: str) -> Principal | None:
        headers = _headers(scope)
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return self.runtime.auth.verify(authorization[7:].strip(), audience)
        if audience == AUDIENCE_REST:
            key = headers.get("x-api-key")
            if key is None:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                key = (query.get("api_key") or [None])[0]
            if self.runtime.auth.api_key_ok(key):
                return Principal("api_key", AUDIENCE_REST, frozenset())
        return None

    async def _tenant(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        method, path = scope["method"], scope["path"]
        runtime.stats.request(f"{method} {self._template(scope)}")
        knobs = runtime.knobs.get()
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)

        if (fail := runtime.knobs.take_rule("fail_next_requests", method, path)) is not None:
            retry = {"Retry-After": "1"} if fail.status in (429, 503) else {}
            detail = fail.detail or f"Injected failure (fail_next_requests) for {method} {path}"
            await send_problem(send, scope, fail.status, detail, retry)
            return

        drop = runtime.knobs.take_rule("drop_connections", method, path)
        if drop is not None and not drop.after_processing and await drop_connection(scope):
            return

        headers = _headers(scope)
        has_body = int(headers.get("content-length") or 0) > 0 or "transfer-encoding" in headers
        if method in ("GET", "HEAD") and has_body:
            await send_problem(send, scope, 403, "A GET request must not have a body")
            return

        audience = dialect_of(path)
        if audience is not None:
            principal = self._authenticate(scope, audience)
            if principal is None:
                how = "X-API-Key or a bearer token" if audience == AUDIENCE_REST else "a bearer token from /oauth/token"
                await send_problem(
                    send,
                    scope,
                    401,
                    f"Missing, invalid or expired credentials: send {how}",
                    {"WWW-Authenticate": "Bearer"},
                )
                return
            retry_after = runtime.limiter.check(knobs.rate_limit_requests, knobs.rate_limit_window_seconds)
            if retry_after is not None:
                detail = (
                    f"Rate limit of {knobs.rate_limit_requests} requests per "
                    f"{knobs.rate_limit_window_seconds:g} s exceeded; retry after {retry_after} s"
                )
                await send_problem(send, scope, 429, detail, {"Retry-After": str(retry_after)})
                return
            scope.setdefault("state", {})["principal"] = principal

        if method in ("POST", "PUT", "PATCH") and has_body:
            # Every body counts (JSON, multipart/form-data imports, forms): read at most the limit, drain the rest.
            declared = int(headers.get("content-length") or 0)
            body = await _read_body(receive, MAX_BODY_BYTES)
            if body is None:
                return  # client went away
            if declared > MAX_BODY_BYTES or len(body) > MAX_BODY_BYTES:
                size = max(declared, len(body))
                await send_problem(send, scope, 413, body_limit_detail(size), limitBytes=MAX_BODY_BYTES)
                return
            receive = _replay(body, receive)

        hang = runtime.knobs.take_rule("hang_after_accept", method, path)
        drop_after = drop is not None and drop.after_processing
        if hang is None and not drop_after:
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []

        async def buffer(message: Message) -> None:
            buffered.append(message)

        await self.app(scope, receive, buffer)  # the side effect happens here
        if drop_after and await drop_connection(scope):
            return
        if hang is not None:
            await asyncio.sleep(hang.seconds)
        for message in buffered:
            await send(message)


async def _read_body(receive: Receive, keep: int | None = None) -> bytes | None:
    """The whole request body (None if the client went away). With `keep`, bytes beyond `keep` + 1 are read
    and dropped, so an oversized upload is drained (the client sees the answer) without being held in memory."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if keep is None or size <= keep:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
