"""Credentials: the API key, client credentials and the bearer tokens of both dialects.

Tokens are bound to the dialect that issued them (its "audience") and are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from emulator.store import Store

AUDIENCE_REST = "rest-v2"  # POST /auth/oauth2/token, used on /new/v2.0
AUDIENCE_JOBS = "training-jobs"  # POST /oauth/token, used on /api/v2/ai/nlp
JOBS_SCOPES = ("ai:nlp:read", "ai:nlp:write", "ai:training:execute", "ai:models:rollback")
REST_SCOPE = "api"  # Cognigy does not document scope names; the emulator grants this one


@dataclass(frozen=True)
class Principal:
    kind: str  # "api_key" | "token"
    audience: str
    scopes: frozenset[str]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, store: Store, api_key: str, client_id: str, client_secret: str) -> None:
        self._store = store
        self._api_key = api_key
        self._client_id = client_id
        self._client_secret = client_secret

    def client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        return hmac.compare_digest((client_id or "").encode(), self._client_id.encode()) & hmac.compare_digest(
            (client_secret or "").encode(), self._client_secret.encode()
        )

    def api_key_ok(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(key.encode(), self._api_key.encode())

    def issue(self, audience: str, scopes: tuple[str, ...], ttl_seconds: float) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._store.purge_tokens(now)
        self._store.add_token(_hash(token), audience, scopes, now + ttl_seconds)
        return token

    def verify(self, token: str, audience: str) -> Principal | None:
        """The principal of a valid, unexpired token for this dialect, else None."""
        row = self._store.get_token(_hash(token))
        if row is None or row["audience"] != audience or row["expires_at"] <= time.time():
            return None
        return Principal("token", audience, frozenset(row["scopes"].split()))


def granted_scopes(requested: str | None) -> tuple[str, ...]:
    """Intersection of the requested (space-separated) scopes and the client's; none requested -> all."""
    if not requested or not requested.strip():
        return JOBS_SCOPES
    wanted = set(requested.split())
    return tuple(scope for scope in JOBS_SCOPES if scope in wanted)
