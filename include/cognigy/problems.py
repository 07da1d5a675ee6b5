"""Turn an HTTP answer into a Python value or the matching `CognigyError` (RFC 7807 bodies)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from datetime import UTC
from typing import Any

from include.cognigy.errors import (
    AuthenticationError,
    BadRequest,
    CognigyError,
    NotFound,
    PermissionDenied,
    RateLimited,
    TransientError,
)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # asctime form ("Sun Nov  6 08:49:37 1994"): an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def missing_scope(problem: dict[str, Any], headers: dict[str, str]) -> str | None:
    """The OAuth2 scope a 403 asks for: the problem's `requiredScope`, else RFC 6750 `WWW-Authenticate`.
    `headers` have lower-case names."""
    scope = problem.get("requiredScope") or problem.get("required_scope")
    if scope:
        return str(scope)
    challenge = headers.get("www-authenticate") or ""
    found = re.search(r'scope="([^"]+)"', challenge)
    return found.group(1) if found else None


def _problem(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {"detail": body[:300].decode("utf-8", "replace")}
    return data if isinstance(data, dict) else {"detail": str(data)[:300]}


def raise_for_problem(status: int, body: bytes, headers: dict[str, str], what: str) -> None:
    """Raise the error for a non-2xx answer. `what` names the call, e.g. "GET task 6630…"."""
    if status < 400:
        return
    headers = {name.lower(): value for name, value in headers.items()}
    problem = _problem(body)
    detail = problem.get("detail") or problem.get("title") or problem.get("message") or ""
    trace = problem.get("traceId")
    kw = {"status": status, "trace_id": trace}
    if status == 401:
        raise AuthenticationError(
            f"{what}: authentication expired or invalid ({detail}). Check the connection's API key or "
            "OAuth2 client id/secret.",
            **kw,
        )
    if status == 403:
        scope = missing_scope(problem, headers)
        if scope:
            raise PermissionDenied(
                f"{what}: permission denied: missing OAuth2 scope '{scope}' ({detail}). Add it to the "
                'connection\'s extra "scopes" and make sure the OAuth2 client may request it.',
                **kw,
            )
        raise PermissionDenied(f"{what}: permission denied: {detail}", **kw)
    if status == 404:
        raise NotFound(f"{what}: not found: {detail}", **kw)
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        when = f"retry after {retry_after:g} s" if retry_after is not None else "no Retry-After given"
        raise RateLimited(f"{what}: tenant rate limit reached ({when})", retry_after=retry_after, **kw)
    if status in (400, 409, 413, 422):
        raise BadRequest(f"{what}: Cognigy refused the request ({status}): {detail}", **kw)
    if status >= 500 or status == 408:
        retry_after = parse_retry_after(headers.get("retry-after"))
        raise TransientError(f"{what}: server error {status}: {detail}", retry_after=retry_after, **kw)
    raise CognigyError(f"{what}: unexpected HTTP {status}: {detail}", **kw)


def decode_json(body: bytes, what: str = "answer") -> Any:
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise CognigyError(
            f"{what}: the answer is not JSON ({body[:80]!r}); is the base URL the tenant's API host?"
        ) from None
