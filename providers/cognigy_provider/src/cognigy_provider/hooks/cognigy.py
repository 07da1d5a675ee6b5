"""CognigyHook: reads an Airflow Connection and hands out a client for either Cognigy dialect, sync and async.

Built on the HTTP provider (`apache-airflow-providers-http`): `HttpHook` gives the sync `requests` session (its TCP
keep-alive adapter), the async side runs on aiohttp (what `HttpAsyncHook` uses). The hook builds the session and hands
it to `include.cognigy.transport`, which adds the Cognigy credentials itself. A Cognigy connection is not an HTTP one:
its login/password are OAuth2 client credentials or the API key, and its extra holds settings (`api`, `token_url`,
`rate_limit`...). So `get_conn` is overridden: `HttpHook.get_conn` would send login/password as HTTP Basic auth on
every request and every unknown extra key as a header; this session carries neither (only TLS settings).

The connection type and its form (fields, labels, help text) are defined once, in this provider's
`cognigy_provider.get_provider_info`; this hook reads its type and name from there.

Connection (conn type `cognigy`, default id `cognigy_default`):
- host: tenant API base URL with scheme, e.g. https://api-app.cognigy.ai
- login + password: OAuth2 client id and secret (client-credentials grant); or
- password alone: the Cognigy API key (sent as X-API-Key)
- extra: {"api": "rest-v2" | "training-jobs", "token_url": ..., "scopes": "a b" | ["a", "b"],
          "verify": true | false, "ca_bundle": "/path/ca.pem", "timeout": 30, "console_url": ...}
  TLS verification is on unless "verify" is false; "ca_bundle" (or a path given as "verify") names a PEM
  bundle of the CAs to trust (a private CA).
- extra, the tenant's rate limit (docs/operations.md): "rate_limit": {"requests": 1000, "per_seconds": 300}
  (default: Cognigy's 1,000 per 5 minutes; optional "share" 0.9, "poll_reserve" 0.05), and "rate_limit_storage":
  where every process keeps the shared budget (redis://host:6379/0; else $COGNIGY_RATE_LIMIT_STORAGE, else a
  SQLite file under the state folder, which is shared by the processes of one machine only).

Next to the hook, two helpers on a client's trainings: `cancel_and_settle` (cancel, then wait until Cognigy says it
ended) and `finished_epoch` (when Cognigy says a task ended).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp
import requests
from airflow.providers.http.hooks.http import HttpHook

from cognigy_provider.get_provider_info import CONN_TYPE, HOOK_NAME
from include.cognigy.client import CognigyClient, parse_status, status_path
from include.cognigy.config import ConnectionConfig
from include.cognigy.errors import BadRequest
from include.cognigy.model import JobStatus
from include.cognigy.rate_limit import (
    Pacer,
    TenantBudget,
    TenantLimit,
    TokenBucket,
    budget_key,
    shared_budget,
    storage_url,
)
from include.cognigy.transport import NO_AUTH, AsyncTransport, register_config_secrets, ssl_context
from include.records.redaction import on_register, register_secret, secret_forms, url_credentials

log = logging.getLogger(__name__)

CANCEL_SETTLE_SECONDS = 60.0  # how long to wait for a cancelled training to stop (before restoring, or giving up)


def mask_in_task_logs(secret: str) -> None:
    """Airflow's secrets masker (task logs, rendered fields) hides exact strings: give it every form of the secret
    (`secret_forms`: case, URL-encoded, JSON-escaped, base64) and tell the supervisor too (`mask_secret`)."""
    from airflow.sdk.log import mask_secret

    for form in secret_forms(secret):
        mask_secret(form)


# Every secret this process registers (the connection's, a fresh OAuth2 token) reaches Airflow's masker as well.
on_register(mask_in_task_logs)


def register_connection_secrets(config: ConnectionConfig) -> None:
    """The connection's API key and client secret, and credentials inside its URLs (user-info, `token=`/`key=`/
    `sig=` parameters of the base, token or console URL): masked in every text this process writes."""
    register_config_secrets(config)
    for url in (config.base_url, config.token_url, config.console_url):
        for secret in url_credentials(url):
            register_secret(secret)


def config_from_connection(host: str | None, login: str | None, password: str | None, extra: dict[str, Any]):
    """Map Connection fields to ConnectionConfig (for the sync and the async side of the hook)."""
    base = (host or "").rstrip("/")
    if base and "://" not in base:
        base = f"https://{base}"
    oauth = bool(login)
    scopes = extra.get("scopes")
    if isinstance(scopes, list | tuple):  # JSON extras may list the scopes
        scopes = " ".join(str(scope) for scope in scopes)
    return ConnectionConfig(
        base_url=base,
        dialect=extra.get("api") or extra.get("dialect") or "rest-v2",
        api_key=extra.get("api_key") or (None if oauth else password),
        client_id=login or None,
        client_secret=password if oauth else None,
        token_url=extra.get("token_url"),
        scopes=scopes or None,
        verify=_verify(extra),
        timeout_seconds=float(extra.get("timeout", 30)),
        console_url=extra.get("console_url"),
    )


def config_from_airflow_connection(conn: Any, extra: dict[str, Any]) -> ConnectionConfig:
    """The same, from an Airflow Connection object: host with its schema and port fields folded in."""
    host = conn.host if not conn.schema else f"{conn.schema}://{conn.host}"
    if conn.port and conn.host and ":" not in conn.host.split("//")[-1]:
        host = f"{host}:{conn.port}"
    return config_from_connection(host, conn.login, conn.password, extra or {})


def tenant_budget(config: ConnectionConfig, extra: dict[str, Any]) -> TenantBudget:
    """The tenant's one budget, shared by every task and trigger using this connection (same URL and
    credentials id) through the storage the extra or the environment names."""
    limit = TenantLimit.from_extra(extra.get("rate_limit"))
    return shared_budget(
        budget_key(config.base_url, config.client_id), limit, storage_url(extra.get("rate_limit_storage"))
    )


_FALSE = ("false", "0", "no", "off")
_TRUE = ("true", "1", "yes", "on")


def _verify(extra: dict[str, Any]) -> bool | str:
    """TLS verification: on unless extra "verify" is false; a CA bundle from "ca_bundle" (or a path in "verify")."""
    if extra.get("ca_bundle"):
        return str(extra["ca_bundle"])
    value = extra.get("verify", True)
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in _FALSE:
        return False
    if text.lower() in _TRUE or not text:
        return True
    return text  # a path to a CA bundle, as requests accepts it


def status_what(dialect: str, job_id: str) -> str:
    """How error messages name a status GET."""
    return f"GET {'training job' if dialect == 'training-jobs' else 'task'} {job_id}"


class CognigyHook(HttpHook):
    conn_name_attr = "cognigy_conn_id"
    default_conn_name = "cognigy_default"
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    def __init__(self, cognigy_conn_id: str = default_conn_name, requests_per_second: float | None = None) -> None:
        super().__init__(method="GET", http_conn_id=cognigy_conn_id)
        self.cognigy_conn_id = cognigy_conn_id
        # Optional per-task cap on top of the tenant's shared budget (the DAG's `requests_per_second`).
        self.requests_per_second = requests_per_second
        self._atransport: AsyncTransport | None = None
        self._asession: aiohttp.ClientSession | None = None

    # --- the connection ----------------------------------------------------------------------------------
    def _checked(self, conn: Any, extra: dict[str, Any] | None) -> tuple[ConnectionConfig, dict[str, Any]]:
        if conn.conn_type and conn.conn_type != self.conn_type:
            raise ValueError(
                f"connection {self.cognigy_conn_id!r} is of type {conn.conn_type!r}; the Cognigy hook needs a "
                f"connection of type {self.conn_type!r} (a {conn.conn_type} connection's fields mean something else)"
            )
        config = config_from_airflow_connection(conn, extra or {})
        register_connection_secrets(config)  # masked in every log, XCom, audit and MLflow text of this process
        self.base_url, self._base_url_initialized = config.base_url, True
        return config, extra or {}

    def _load(self) -> tuple[ConnectionConfig, dict[str, Any]]:
        conn = self.get_connection(self.cognigy_conn_id)
        return self._checked(conn, conn.extra_dejson)

    async def _aload(self) -> tuple[ConnectionConfig, dict[str, Any]]:
        conn = await self.aget_connection(self.cognigy_conn_id)
        extra = await conn.aextra_dejson() if hasattr(conn, "aextra_dejson") else conn.extra_dejson
        return self._checked(conn, extra)

    def get_config(self) -> ConnectionConfig:
        return self._load()[0]

    # --- sessions: what HttpHook would put on them from the connection, it must not -------------------------
    def get_conn(
        self, headers: dict[str, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """The requests session for this connection: TLS `verify` from the connection and the provider's TCP
        keep-alive adapter; no auth, no headers from the connection (the transport adds the credentials per
        request). `headers` given by the caller are set; `extra_options` are refused (they come from the
        connection's extra here, mapped by `config_from_connection`)."""
        if extra_options:
            raise ValueError("the Cognigy hook takes its session options from the connection, not extra_options")
        session = self._session(self._load()[0])
        if headers:
            session.headers.update(headers)
        return session

    def _session(self, config: ConnectionConfig) -> requests.Session:
        session = requests.Session()
        session.auth = NO_AUTH  # never Basic auth, never a ~/.netrc lookup
        session.verify = config.verify
        return self._configure_session_from_mount_adapters(session)

    def _extract_auth(self, connection: Any) -> None:
        """HttpHook turns login/password into Basic auth here; a Cognigy connection's are OAuth2 client
        credentials or the API key, which the transport sends its own way. Nothing for the session."""
        return None

    def _configure_session_from_extra(self, session: requests.Session, connection: Any, extra_options: dict):
        """HttpHook turns every unknown extra key into a header here. A Cognigy extra holds settings and may hold
        the API key: nothing of it goes on the session (TLS comes from `_verify`, the rest from the transport)."""
        return session

    def _set_base_url(self, connection: Any) -> None:
        """The base URL as `config_from_connection` reads it (https unless the host says otherwise)."""
        self._checked(connection, connection.extra_dejson)

    @staticmethod
    def _async_session(config: ConnectionConfig) -> aiohttp.ClientSession:
        """The aiohttp session of the async side. Not `HttpAsyncHook`'s: it would put login/password on it as Basic
        auth and the extra as headers, open a session per call, and resend a 5xx by itself (3 tries, 1 s apart) past
        the tenant budget and the trigger's own "poll again later". No keep-alive: polls are seconds to minutes apart
        (past a server's idle timeout) and 10,000 triggers must not hold 10,000 idle sockets. Timeouts per phase
        (connect, then between reads) as requests applies them; the environment is not trusted as a whole (its
        ~/.netrc would add Basic auth), the transport applies HTTP(S)_PROXY itself."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, ssl=ssl_context(config.verify)),
            timeout=aiohttp.ClientTimeout(total=None, connect=config.timeout_seconds, sock_read=config.timeout_seconds),
            trust_env=False,
        )

    # --- clients -----------------------------------------------------------------------------------------
    def get_client(self) -> CognigyClient:
        config, extra = self._load()
        cap = TokenBucket(self.requests_per_second) if self.requests_per_second else None
        pacer = Pacer(tenant_budget(config, extra), cap)
        return CognigyClient(config, bucket=pacer, session=self._session(config))  # type: ignore[arg-type]

    def get_job_status(self, job_id: str, dialect: str | None = None) -> JobStatus:
        """A training's status (sync: retried by the transport's rules on 429, 5xx, timeouts)."""
        client = self.get_client()
        dialect = dialect or client.dialect
        data = client.transport.json("GET", status_path(dialect, job_id), status_what(dialect, job_id), safe=True)
        return parse_status(dialect, data)

    async def _transport(self) -> AsyncTransport:
        if self._atransport is None:
            config, extra = await self._aload()
            # Polls draw from the tenant's shared budget (with priority over scoring) and honour its 429 pauses.
            budget = await asyncio.to_thread(tenant_budget, config, extra)
            if self._atransport is None:  # no await from here on: one session per hook even if called concurrently
                self._asession = self._async_session(config)
                self._atransport = AsyncTransport(config, self._asession, budget=budget)
        return self._atransport

    async def a_get_job_status(
        self, job_id: str, dialect: str | None = None, deadline: float | None = None
    ) -> JobStatus:
        """One status GET (one token refresh and resend after a 401), no retry: the caller polls again later.
        Raises `RateLimited`/`TransientError` (429, 5xx, timeout: poll again; `BudgetStoreUnavailable`: the budget's
        store stayed unreachable while the budget asked again with backoff) or another `CognigyError`; `deadline`
        (epoch seconds) bounds the wait for the budget (`TimeoutError` when there is no room before it).
        The connection is read and the session opened on the first call; `aclose()` closes it."""
        transport = await self._transport()
        dialect = dialect or transport.config.dialect
        data = await transport.get_json(status_path(dialect, job_id), status_what(dialect, job_id), deadline)
        return parse_status(dialect, data)

    async def aclose(self) -> None:
        session, self._asession, self._atransport = self._asession, None, None
        if session is not None:
            await session.close()

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one authenticated read."""
        try:
            client = self.get_client()
            client.transport.json(
                "GET",
                "/new/v2.0/locales?limit=1" if client.v2 else "/api/v2/ai/nlp/training/jobs",
                "test connection",
                safe=True,
            )
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, "Connection successfully tested"


def cancel_and_settle(client: CognigyClient, job_id: str, settle: float = CANCEL_SETTLE_SECONDS) -> JobStatus:
    """Cancel a training (a no-op if it already ended) and wait until Cognigy reports it ended."""
    status = client.job_status(job_id)
    if not status.terminal:
        try:
            client.cancel(job_id)
        except BadRequest:  # it ended between our read and the cancel
            log.info("training %s ended before it could be cancelled", job_id)
    deadline = time.monotonic() + settle
    while not status.terminal and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.job_status(job_id)
    return status


def finished_epoch(status: JobStatus) -> float:
    """When Cognigy says the task ended (its own clock), else now."""
    if status.finished_at:
        try:
            return datetime.fromisoformat(status.finished_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()
