"""CognigyHook: reads an Airflow Connection and hands out a client for either Cognigy dialect.

The connection type and its form (fields, labels, help text) are defined once, in the provider package
`providers/cognigy_provider` (`cognigy_provider`); this hook reads its type and name from there.

Connection (conn type `cognigy`, default id `cognigy_default`):
- host: tenant API base URL with scheme, e.g. https://api-app.cognigy.ai
- login + password: OAuth2 client id and secret (client-credentials grant); or
- password alone: the Cognigy API key (sent as X-API-Key)
- extra: {"api": "rest-v2" | "training-jobs", "token_url": ..., "scopes": "a b" | ["a", "b"],
          "verify": true | false, "ca_bundle": "/path/ca.pem", "timeout": 30, "console_url": ...}
  TLS verification is on unless "verify" is false; "ca_bundle" (or a path given as "verify") names a PEM
  bundle of the CAs to trust (a private CA).
- extra, the tenant's rate limit (docs/operations.md): "rate_limit": {"requests": 1000, "per_seconds": 300}
  (default: Cognigy's 1,000 per 5 minutes; optional "share" 0.9, "poll_reserve" 0.2), and "rate_limit_storage":
  where every process keeps the shared budget (redis://host:6379/0; else $COGNIGY_RATE_LIMIT_STORAGE, else a
  SQLite file under the state folder, which is shared by the processes of one machine only).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from include.cognigy.client import CognigyClient
from include.cognigy.config import ConnectionConfig
from include.cognigy.rate_limit import (
    Pacer,
    TenantBudget,
    TenantLimit,
    TokenBucket,
    budget_key,
    shared_budget,
    storage_url,
)
from include.cognigy.transport import register_config_secrets

try:
    from cognigy_provider import CONN_TYPE, HOOK_NAME
except ModuleNotFoundError:  # provider package not installed: no form, AIRFLOW_CONN_* JSON connections still work
    CONN_TYPE, HOOK_NAME = "cognigy", "Cognigy.AI"


def config_from_connection(host: str | None, login: str | None, password: str | None, extra: dict[str, Any]):
    """Map Connection fields to ConnectionConfig (shared by the sync hook and the async trigger)."""
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


class CognigyHook(BaseHook):
    conn_name_attr = "cognigy_conn_id"
    default_conn_name = "cognigy_default"
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    def __init__(self, cognigy_conn_id: str = default_conn_name, requests_per_second: float | None = None) -> None:
        super().__init__()
        self.cognigy_conn_id = cognigy_conn_id
        # Optional per-task cap on top of the tenant's shared budget (the DAG's `requests_per_second`).
        self.requests_per_second = requests_per_second
        self._extra: dict[str, Any] | None = None

    def get_config(self) -> ConnectionConfig:
        conn = self.get_connection(self.cognigy_conn_id)
        if conn.conn_type and conn.conn_type != self.conn_type:
            raise ValueError(
                f"connection {self.cognigy_conn_id!r} is of type {conn.conn_type!r}; the Cognigy hook needs a "
                f"connection of type {self.conn_type!r} (a {conn.conn_type} connection's fields mean something else)"
            )
        config = config_from_airflow_connection(conn, conn.extra_dejson)
        register_config_secrets(config)  # masked in every log, XCom, audit and MLflow text of this process
        return config

    def get_client(self) -> CognigyClient:
        config = self.get_config()
        if self._extra is None:
            self._extra = self.get_connection(self.cognigy_conn_id).extra_dejson or {}
        cap = TokenBucket(self.requests_per_second) if self.requests_per_second else None
        return CognigyClient(config, bucket=Pacer(tenant_budget(config, self._extra), cap))  # type: ignore[arg-type]

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
