"""HTTP plumbing shared by both dialects: auth headers, token cache, timeouts, safe retries.

Retry rules (the same as Cognigy's official client, made stricter for side effects):
- a call marked `safe` (reads, scoring, export) is retried on 429, 408, 5xx, timeouts and connection errors,
  honouring `Retry-After`, else exponential backoff with jitter;
- a call with a side effect (start training, import, cancel, rollback) is retried only when the server
  provably did nothing: a 429, or a connection that was never established. A timeout or 5xx after sending
  raises `AmbiguousSubmission` and the caller reconciles.
- a 401 refreshes the token once and retries once (a 401 is a rejection, so resending a POST is safe);
- a TLS failure (wrong scheme, unknown CA) is a configuration problem: `TlsError`, never retried.

HTTP clients, one per mode: `requests` for `Transport` (workers) and `aiohttp` for `AsyncTransport` (triggers). Both
take the session they send on from the caller (the Airflow hook builds it from the connection; see
`cognigy_provider.hooks.cognigy` in providers/cognigy_provider) and send only the headers built here: the
credentials (a bearer token or X-API-Key) and a request id. Nothing else of a connection (its login, password or
extra) ever becomes a header.

Pacing: before each request the transport waits for its pacer (`include.cognigy.rate_limit`: the tenant's shared
budget, plus an optional per-task cap); a status GET asks as a poll (priority), everything else as bulk. A 429
tells the pacer, which pauses every process sharing the budget for the `Retry-After`. When the budget's store does
not answer, the budget itself waits with backoff (`rate_limit.STORE_OUTAGE_SECONDS`) and then raises
`BudgetStoreUnavailable`: nothing was sent, and the transport does not wait a second time for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import ssl
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import aiohttp
import certifi
import requests
from aiohttp.helpers import get_env_proxy_for_url
from requests.auth import AuthBase
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from urllib3.exceptions import ConnectTimeoutError
from yarl import URL

from include.cognigy.config import ConnectionConfig
from include.cognigy.errors import (
    AmbiguousSubmission,
    AuthenticationError,
    CognigyError,
    RateLimited,
    TlsError,
    TransientError,
)
from include.cognigy.problems import decode_json, raise_for_problem
from include.cognigy.rate_limit import BULK, POLL, BudgetStoreUnavailable, TenantBudget, TokenBucket
from include.records.redaction import redact_text, register_secret

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 120.0
# GET of one training's status (rest-v2 task, training-jobs job): polls, which the budget serves first.
_STATUS_PATH = re.compile(r"/(tasks|training/jobs)/[^/?]+$")


# Answers about trainings (one task or job, the task list) carry the platform's own free text (a failed training's
# reason, which may quote a credential) and no customer data: their strings are redacted before any caller keeps,
# returns or logs them.
_SERVER_TEXT_PATH = re.compile(r"/(?:tasks|training/jobs)(?:/[^/?]*)?(?:\?|$)")


def server_text_clean(path: str, data: Any) -> Any:
    """``data`` with every string redacted (`redact_text`) when ``path`` is a task/training-job answer."""
    if not _SERVER_TEXT_PATH.search(path):
        return data
    return _redact_strings(data)


def _redact_strings(data: Any) -> Any:
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {key: _redact_strings(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_redact_strings(item) for item in data]
    return data


def request_kind(method: str, path: str) -> str:
    return POLL if method == "GET" and _STATUS_PATH.search(path) else BULK


@dataclass
class _Token:
    value: str
    expires_at: float
    lifetime: float

    def usable(self) -> bool:
        """Refresh early: when 2 minutes or 10 % of the lifetime remain, whichever is less."""
        margin = min(REFRESH_MARGIN_SECONDS, 0.1 * self.lifetime)
        return self.expires_at - time.time() > margin


class TokenProvider:
    """OAuth2 client-credentials token, cached per connection and refreshed before it expires.

    One refresh at a time: concurrent callers wait for the refresh in progress instead of starting their own,
    and callers whose token was refused (401) replace it only if nobody has replaced it meanwhile.
    """

    _instances: ClassVar[dict[tuple, TokenProvider]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._token: _Token | None = None
        self._lock = threading.Lock()
        # One asyncio lock per event loop: a lock is bound to the loop that first waits on it, and a triggerer (or a
        # test) may run several loops over its life. Weak keys: a closed loop's lock goes with it.
        self._alocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self.refreshes = 0

    @classmethod
    def for_config(cls, config: ConnectionConfig) -> TokenProvider:
        key = (config.effective_token_url, config.client_id, config.effective_scopes)
        with cls._instances_lock:
            provider = cls._instances.get(key)
            if provider is None or provider._config != config:
                provider = cls._instances[key] = cls(config)
            return provider

    def _fresh(self, rejected: str | None = None) -> str | None:
        token = self._token
        return token.value if token and token.usable() and token.value != rejected else None

    def _form(self) -> dict[str, str]:
        assert self._config.client_id and self._config.client_secret
        form = {
            "grant_type": "client_credentials",
            "client_id": self._config.client_id,
            "client_secret": self._config.client_secret.get_secret_value(),
        }
        if self._config.effective_scopes:
            form["scope"] = self._config.effective_scopes
        return form

    def _store(self, status: int, body: bytes, headers: dict[str, str]) -> str:
        raise_for_problem(status, body, headers, "POST OAuth2 token")
        data = decode_json(body)
        expires_in = float(data.get("expires_in") or 3600)
        self._token = _Token(data["access_token"], time.time() + expires_in, expires_in)
        register_secret(self._token.value)
        self.refreshes += 1
        return self._token.value

    def get(self, rejected: str | None = None, session: requests.Session | None = None) -> str:
        """A usable token. `rejected`: the token a 401 just refused; it is replaced unless already done.
        `session`: the transport's session (its TLS and proxy settings); else a plain one."""
        if value := self._fresh(rejected):
            return value
        with self._lock:
            if value := self._fresh(rejected):
                return value
            http = session if session is not None else plain_session()
            try:
                resp = http.post(
                    self._config.effective_token_url,
                    data=self._form(),
                    headers={"Accept": "application/json"},
                    timeout=self._config.timeout_seconds,
                    verify=self._config.verify,
                )
            except requests.RequestException as exc:  # a token request has no side effect: always safe
                kind, cause = _requests_kind(exc), _innermost(exc)
                raise no_answer_error(
                    kind, "POST OAuth2 token", cause, safe=True, timeout=self._config.timeout_seconds
                ) from None
            return self._store(resp.status_code, resp.content, dict(resp.headers))

    async def aget(self, session: aiohttp.ClientSession, rejected: str | None = None) -> str:
        if value := self._fresh(rejected):
            return value
        loop = asyncio.get_running_loop()
        lock = self._alocks.get(loop)
        if lock is None:
            lock = self._alocks[loop] = asyncio.Lock()
        async with lock:  # one refresh at a time among the triggers of this event loop
            if value := self._fresh(rejected):
                return value
            url = self._config.effective_token_url
            try:
                async with session.post(
                    url, data=self._form(), headers={"Accept": "application/json"}, **_env_proxy(url)
                ) as resp:
                    status, body, headers = resp.status, await resp.read(), dict(resp.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                kind = _aiohttp_kind(exc)
                raise no_answer_error(
                    kind, "POST OAuth2 token", exc, safe=True, timeout=self._config.timeout_seconds
                ) from None
            return self._store(status, body, headers)


def _retry_wait(state: RetryCallState) -> float:
    """The server's Retry-After (429, 503) when given, else exponential backoff with full jitter."""
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(retry_after + 0.1, 300.0)
    return wait_random_exponential(multiplier=0.5, max=30)(state)


def register_config_secrets(config: ConnectionConfig) -> None:
    """The connection's API key and client secret are masked in every text this process writes."""
    for secret in (config.api_key, config.client_secret):
        if secret is not None:
            register_secret(secret.get_secret_value())


def request_headers(config: ConnectionConfig, token: str | None, request_id: str) -> dict[str, str]:
    """JSON (Cognigy defaults to hal+json), the credentials (a bearer token, else the API key header) and an
    `X-Request-Id` that every error message quotes, so a tenant's support can find the call."""
    common = {"Accept": "application/json", "X-Request-Id": request_id}
    if token is not None:
        return {**common, "Authorization": f"Bearer {token}"}
    assert config.api_key is not None
    return {**common, "X-API-Key": config.api_key.get_secret_value()}


def new_request_id() -> str:
    return uuid.uuid4().hex


class NoAuth(AuthBase):
    """A session-level auth that changes nothing. With it, requests sends exactly the headers the transport sets:
    it applies no Basic auth and looks none up in ~/.netrc (which it does for a session without auth), and so
    never overwrites the bearer token's Authorization header either."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


NO_AUTH = NoAuth()


def plain_session() -> requests.Session:
    """A session with no auth of its own (for callers that hand in none)."""
    session = requests.Session()
    session.auth = NO_AUTH
    return session


class Transport:
    """Synchronous HTTP to one tenant (used on Airflow workers)."""

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        bucket: TokenBucket | Any | None = None,
        max_attempts: int = 5,
        max_retry_seconds: float = 300.0,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config
        self.bucket = bucket
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self._session = session if session is not None else plain_session()
        # Whatever session is handed in: its own auth would replace the credentials this transport sets.
        self._session.auth = NO_AUTH
        self._tokens = TokenProvider.for_config(config) if config.uses_oauth else None
        register_config_secrets(config)

    def _send_once(
        self, method: str, path: str, what: str, *, safe: bool, token: str | None, **kwargs: Any
    ) -> requests.Response:
        if self.bucket is not None:
            self.bucket.acquire_request(request_kind(method, path))
        request_id = new_request_id()
        what = f"{what} [X-Request-Id {request_id}]"
        headers = {**request_headers(self.config, token, request_id), **kwargs.pop("headers", {})}
        try:
            resp = self._session.request(
                method,
                f"{self.config.base_url}{path}",
                headers=headers,
                timeout=self.config.timeout_seconds,
                verify=self.config.verify,
                **kwargs,
            )
        except requests.RequestException as exc:
            kind = _requests_kind(exc)
            raise no_answer_error(kind, what, _innermost(exc), safe=safe, timeout=self.config.timeout_seconds) from None
        if resp.status_code == 429 and self.bucket is not None:
            try:
                raise_for_problem(resp.status_code, resp.content, dict(resp.headers), what)
            except RateLimited as exc:
                self.bucket.rate_limited(exc.retry_after)  # everyone sharing the budget pauses, not just us
                raise
        if (resp.status_code >= 500 or resp.status_code == 408) and not safe:
            try:
                raise_for_problem(resp.status_code, resp.content, dict(resp.headers), what)
            except TransientError as exc:
                raise AmbiguousSubmission(_ambiguous(str(exc)), status=exc.status, trace_id=exc.trace_id) from None
        raise_for_problem(resp.status_code, resp.content, dict(resp.headers), what)
        return resp

    def _send_authenticated(self, method: str, path: str, what: str, *, safe: bool, **kwargs: Any):
        tokens, session = self._tokens, self._session
        token = tokens.get(session=session) if tokens is not None else None
        try:
            return self._send_once(method, path, what, safe=safe, token=token, **dict(kwargs))
        except AuthenticationError:
            if tokens is None:
                raise
            log.info("%s: 401, refreshing the OAuth2 token once", what)
            token = tokens.get(rejected=token, session=session)
            return self._send_once(method, path, what, safe=safe, token=token, **kwargs)

    def request(self, method: str, path: str, what: str, *, safe: bool, **kwargs: Any) -> requests.Response:
        """Send with the retry rules above. `path` must already be built from quoted ids."""

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, AmbiguousSubmission | BudgetStoreUnavailable):  # the budget already waited for it
                return False
            return isinstance(exc, RateLimited | TransientError)

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            wait=_retry_wait,
            # stop_before_delay: never start a wait (e.g. a long Retry-After) that would end past the budget
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_retry_seconds),
            reraise=True,
            before_sleep=lambda s: log.warning(
                "%s; retry %d in %.1fs",
                s.outcome.exception() if s.outcome else what,
                s.attempt_number,
                s.upcoming_sleep,
            ),
        )
        return retrying(self._send_authenticated, method, path, what, safe=safe, **kwargs)

    def json(self, method: str, path: str, what: str, *, safe: bool, **kwargs: Any) -> Any:
        data = decode_json(self.request(method, path, what, safe=safe, **kwargs).content, what)
        return server_text_clean(path, data)


TLS_HINT = (
    "check that the URL's scheme matches the server (https needs a TLS server), and the connection's extra "
    '"verify" (true/false) or "ca_bundle" (path to a PEM CA bundle) for a private CA'
)


def _ambiguous(cause: str) -> str:
    return (
        f"{cause}; the call may or may not have taken effect, so it was not resent "
        "(reconcile with the tenant's task list before trying again)"
    )


def _innermost(exc: BaseException) -> BaseException:
    """The root cause inside requests/urllib3 wrappers (MaxRetryError.reason, nested args)."""
    inner: BaseException = exc
    for _ in range(5):
        nxt = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        nxt = getattr(inner, "reason", None) if isinstance(getattr(inner, "reason", None), BaseException) else nxt
        if nxt is None:
            break
        inner = nxt
    return inner


def _never_connected(exc: requests.RequestException) -> bool:
    """True when no TCP connection was established (refused, unresolvable, connect timeout): the server cannot
    have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    wrapped = exc.args[0] if exc.args else None
    if isinstance(getattr(wrapped, "reason", None), ConnectTimeoutError):  # NewConnectionError is one too
        return True
    text = repr(exc)
    return "ConnectionRefused" in text or "Failed to establish a new connection" in text


NoAnswer = Literal["tls", "invalid_url", "never_connected", "timeout", "connection_lost", "other"]


def no_answer_error(kind: NoAnswer, what: str, cause: BaseException, *, safe: bool, timeout: float) -> CognigyError:
    """The one rule, for both transports, for a request that got no HTTP answer: configuration (TLS, URL) is never
    retried; a request the server cannot have seen (`never_connected`) is; a timeout or a lost connection after a
    non-idempotent call was sent is ambiguous and never resent (`safe` False). `kind` comes from `_requests_kind` or
    `_aiohttp_kind`."""
    reason = f"{type(cause).__name__}: {cause}"[:300]
    if kind == "tls":
        return TlsError(f"{what}: TLS handshake or certificate verification failed ({reason}); {TLS_HINT}")
    if kind == "invalid_url":
        return CognigyError(f"{what}: invalid URL ({reason}); check the connection's host")
    if kind == "never_connected":
        return TransientError(f"{what}: cannot connect ({reason})")
    if kind == "timeout":
        said = f"{what}: no answer within {timeout:g} s"
        return AmbiguousSubmission(_ambiguous(said)) if not safe else TransientError(f"{said} ({type(cause).__name__})")
    if kind == "connection_lost":
        if not safe:
            return AmbiguousSubmission(_ambiguous(f"{what}: connection lost after sending ({type(cause).__name__})"))
        return TransientError(f"{what}: connection lost ({reason})")
    return CognigyError(f"{what}: {reason}")


def _requests_kind(exc: requests.RequestException) -> NoAnswer:
    """Which kind of "no answer" a requests/urllib3 exception is (for `no_answer_error`)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        return "invalid_url"
    if _never_connected(exc):
        return "never_connected"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    return "connection_lost"  # reset/closed after sending, or a broken body while reading the answer


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _aiohttp_kind(exc: BaseException) -> NoAnswer:
    """Which kind of "no answer" an aiohttp exception is (for `no_answer_error`)."""
    # ClientSSLError is a ClientConnectorError: test it first, a TLS failure is configuration, never transient
    if isinstance(exc, aiohttp.ClientSSLError) or _is_tls_failure(exc):
        return "tls"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return "invalid_url"
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):  # refused, unresolvable
        return "never_connected"
    if isinstance(exc, TimeoutError):  # aiohttp.SocketTimeoutError: no answer within the read timeout
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):  # reset, closed, broken body
        return "connection_lost"
    return "other"


@functools.lru_cache(maxsize=16)
def ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    """The aiohttp `ssl` setting for a connection's `verify`: False, or a verifying context on certifi's bundle (what
    requests trusts) or on the given CA bundle. One context per setting, shared by every trigger of the process:
    building one (loading the CA bundle) costs ~20 ms of CPU, which 1,000 triggers polling in step cannot afford."""
    if verify is False:
        return False
    if verify is True:
        return ssl.create_default_context(cafile=certifi.where())
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


def _env_proxy(url: str) -> dict[str, Any]:
    """HTTP(S)_PROXY / NO_PROXY from the environment, as requests honours them. The aiohttp session does not trust
    the environment as a whole: that would also let ~/.netrc add Basic auth to Cognigy calls."""
    try:
        proxy, proxy_auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return {}
    return {"proxy": proxy, "proxy_auth": proxy_auth}


class AsyncTransport:
    """Asynchronous GET-only HTTP for triggers: one attempt per call, the trigger decides when to retry.

    `session`: the aiohttp session to send on, built by the caller (the hook: TLS, timeouts, no keep-alive) and
    closed by it. aiohttp resends an idempotent request once when the connection breaks; that is switched off here,
    so one call is one request against the tenant's budget."""

    def __init__(
        self, config: ConnectionConfig, session: aiohttp.ClientSession, budget: TenantBudget | None = None
    ) -> None:
        self.config = config
        self.budget = budget
        self._tokens = TokenProvider.for_config(config) if config.uses_oauth else None
        register_config_secrets(config)
        session._retry_connection = False  # what aiohttp's own test client does; one attempt, counted once
        self._session = session

    async def _get_once(self, path: str, what: str, token: str | None, deadline: float | None = None) -> Any:
        if self.budget is not None:  # waits for room (and for an unreachable store) until `deadline` at most
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            await self.budget.aacquire(request_kind("GET", path), timeout=timeout)
        request_id = new_request_id()
        what = f"{what} [X-Request-Id {request_id}]"
        url = f"{self.config.base_url}{path}"
        try:
            async with self._session.get(
                url, headers=request_headers(self.config, token, request_id), **_env_proxy(url)
            ) as resp:
                status, body, headers = resp.status, await resp.read(), dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise no_answer_error(
                _aiohttp_kind(exc), what, exc, safe=True, timeout=self.config.timeout_seconds
            ) from None
        try:
            raise_for_problem(status, body, headers, what)
        except RateLimited as exc:
            if self.budget is not None:
                await asyncio.to_thread(self.budget.block_for, exc.retry_after)
            raise
        return server_text_clean(path, decode_json(body, what))

    async def get_json(self, path: str, what: str, deadline: float | None = None) -> Any:
        """One GET (plus one token refresh and resend after a 401); errors as in `Transport`. `deadline` (epoch
        seconds) bounds the wait for the budget: `TimeoutError` (no room) or `BudgetStoreUnavailable` past it."""
        tokens, session = self._tokens, self._session
        token = await tokens.aget(session) if tokens is not None else None
        try:
            return await self._get_once(path, what, token, deadline)
        except AuthenticationError:
            if tokens is None:
                raise
            log.info("%s: 401, refreshing the OAuth2 token once", what)
            return await self._get_once(path, what, await tokens.aget(session, rejected=token), deadline)
