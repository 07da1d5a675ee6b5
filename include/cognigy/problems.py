"""Turn an HTTP answer into a Python value or the matching `CognigyError` (RFC 7807 bodies)."""

from __future__ import annotations

import email.utils
import json
import time
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
    return max(0.0, when.timestamp() - time.time())


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
        raise PermissionDenied(f"{what}: permission denied: {detail}", **kw)
    if status == 404:
        raise NotFound(f"{what}: not found: {detail}", **kw)
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
        raise RateLimited(
            f"{what}: tenant rate limit reached (retry after {retry_after}s)", retry_after=retry_after, **kw
        )
    if status in (400, 409, 413, 422):
        raise BadRequest(f"{what}: Cognigy refused the request ({status}): {detail}", **kw)
    if status >= 500 or status == 408:
        raise TransientError(f"{what}: server error {status}: {detail}", **kw)
    raise CognigyError(f"{what}: unexpected HTTP {status}: {detail}", **kw)


def decode_json(body: bytes) -> Any:
    if not body:
        return {}
    return json.loads(body)
