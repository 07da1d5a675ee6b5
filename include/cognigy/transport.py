"""HTTP plumbing shared by both dialects: auth headers, token cache, timeouts, safe retries.

Retry rules (the same as Cognigy's official client, made stricter for side effects):
- a call marked `safe` (reads, scoring, export) is retried on 429, 408, 5xx, timeouts and connection errors,
  honouring `Retry-After`, else exponential backoff with jitter;
- a call with a side effect (start training, import, cancel, rollback) is retried only when the server
  provably did nothing: a 429, or a connection that was never established. A timeout or 5xx after sending
  raises `AmbiguousSubmission` and the caller reconciles.
- a 401 refreshes the token once and retries once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from include.cognigy.config import ConnectionConfig
from include.cognigy.errors import (
    AmbiguousSubmission,
    AuthenticationError,
    CognigyError,
    RateLimited,
    TransientError,
)
from include.cognigy.problems import decode_json, raise_for_problem
from include.rate_limit import TokenBucket

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 120.0


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

    One refresh at a time: concurrent callers wait for the refresh in progress instead of starting their own.
    """

    _instances: ClassVar[dict[tuple, TokenProvider]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._token: _Token | None = None
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self.refreshes = 0

    @classmethod
    def for_config(cls, config: ConnectionConfig) -> TokenProvider:
        key = (config.effective_token_url, config.client_id, config.effective_scopes)
        with cls._instances_lock:
            provider = cls._instances.get(key)
            if provider is None or provider._config != config:
                provider = cls._instances[key] = cls(config)
            return provider

    def _fresh(self) -> str | None:
        token = self._token
        return token.value if token and token.usable() else None

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
        self.refreshes += 1
        return self._token.value

    def get(self, force: bool = False) -> str:
        if not force and (value := self._fresh()):
            return value
        with self._lock:
            if not force and (value := self._fresh()):
                return value
            resp = requests.post(
                self._config.effective_token_url,
                data=self._form(),
                headers={"Accept": "application/json"},
                timeout=self._config.timeout_seconds,
                verify=self._config.verify,
            )
            return self._store(resp.status_code, resp.content, dict(resp.headers))

    async def aget(self, client: httpx.AsyncClient, force: bool = False) -> str:
        if not force and (value := self._fresh()):
            return value
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:  # one refresh at a time among the triggers of this event loop
            if not force and (value := self._fresh()):
                return value
            resp = await client.post(
                self._config.effective_token_url, data=self._form(), headers={"Accept": "application/json"}
            )
            return self._store(resp.status_code, resp.content, dict(resp.headers))

    def invalidate(self) -> None:
        self._token = None


def _retry_wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return min(exc.retry_after + 0.1, 300.0)
    return wait_random_exponential(multiplier=0.5, max=30)(state)


class Transport:
    """Synchronous HTTP to one tenant (used on Airflow workers)."""

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        bucket: TokenBucket | None = None,
        max_attempts: int = 5,
        max_retry_seconds: float = 300.0,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config
        self.bucket = bucket
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self._session = session or requests.Session()
        self._tokens = TokenProvider.for_config(config) if config.uses_oauth else None

    def _auth_headers(self, force_refresh: bool = False) -> dict[str, str]:
        if self._tokens is not None:
            return {"Authorization": f"Bearer {self._tokens.get(force=force_refresh)}"}
        assert self.config.api_key is not None
        return {"X-API-Key": self.config.api_key.get_secret_value()}

    def _send_once(
        self, method: str, path: str, what: str, *, safe: bool, force_refresh: bool = False, **kwargs: Any
    ) -> requests.Response:
        if self.bucket is not None:
            self.bucket.acquire()
        headers = {
            "Accept": "application/json",
            **self._auth_headers(force_refresh),
            **kwargs.pop("headers", {}),
        }
        try:
            resp = self._session.request(
                method,
                f"{self.config.base_url}{path}",
                headers=headers,
                timeout=self.config.timeout_seconds,
                verify=self.config.verify,
                **kwargs,
            )
        except requests.ConnectionError as exc:
            if not safe and not _never_connected(exc):
                raise AmbiguousSubmission(f"{what}: connection lost after sending ({type(exc).__name__})") from None
            raise TransientError(f"{what}: cannot connect ({type(exc).__name__})") from None
        except requests.Timeout:
            if not safe:
                raise AmbiguousSubmission(f"{what}: no answer within {self.config.timeout_seconds}s") from None
            raise TransientError(f"{what}: timed out after {self.config.timeout_seconds}s") from None
        if resp.status_code >= 500 and not safe:
            try:
                raise_for_problem(resp.status_code, resp.content, dict(resp.headers), what)
            except TransientError as exc:
                raise AmbiguousSubmission(str(exc), status=exc.status) from None
        raise_for_problem(resp.status_code, resp.content, dict(resp.headers), what)
        return resp

    def _send_authenticated(self, method: str, path: str, what: str, *, safe: bool, **kwargs: Any):
        try:
            return self._send_once(method, path, what, safe=safe, **dict(kwargs))
        except AuthenticationError:
            if self._tokens is None:
                raise
            log.info("%s: 401, refreshing the OAuth2 token once", what)
            return self._send_once(method, path, what, safe=safe, force_refresh=True, **kwargs)

    def request(self, method: str, path: str, what: str, *, safe: bool, **kwargs: Any) -> requests.Response:
        """Send with the retry rules above. `path` must already be built from quoted ids."""

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, AmbiguousSubmission):
                return False
            return isinstance(exc, RateLimited | TransientError)

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            wait=_retry_wait,
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_retry_seconds),
            reraise=True,
            before_sleep=lambda s: log.warning(
                "%s: %s; retry %d", what, s.outcome.exception() if s.outcome else "?", s.attempt_number
            ),
        )
        return retrying(self._send_authenticated, method, path, what, safe=safe, **kwargs)

    def json(self, method: str, path: str, what: str, *, safe: bool, **kwargs: Any) -> Any:
        return decode_json(self.request(method, path, what, safe=safe, **kwargs).content)


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the TCP connection was refused, so the server cannot have seen the request."""
    text = repr(exc)
    return "ConnectionRefused" in text or "Failed to establish a new connection" in text


class AsyncTransport:
    """Asynchronous GET-only HTTP for triggers: one attempt per call, the trigger decides when to retry."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._tokens = TokenProvider.for_config(config) if config.uses_oauth else None

    async def get_json(self, path: str, what: str) -> Any:
        async with httpx.AsyncClient(
            base_url=self.config.base_url, timeout=self.config.timeout_seconds, verify=self.config.verify
        ) as client:
            for attempt in (1, 2):
                headers = {"Accept": "application/json"}
                if self._tokens is not None:
                    token = await self._tokens.aget(client, force=attempt == 2)
                    headers["Authorization"] = f"Bearer {token}"
                else:
                    assert self.config.api_key is not None
                    headers["X-API-Key"] = self.config.api_key.get_secret_value()
                try:
                    resp = await client.get(path, headers=headers)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    raise TransientError(f"{what}: {type(exc).__name__}") from None
                try:
                    raise_for_problem(resp.status_code, resp.content, dict(resp.headers), what)
                except AuthenticationError:
                    if self._tokens is None or attempt == 2:
                        raise
                    continue
                return decode_json(resp.content)
        raise CognigyError(f"{what}: unreachable")  # pragma: no cover
