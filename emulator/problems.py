"""RFC 7807 problem responses, the only error shape the emulator answers with (both dialects)."""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Cognigy documents 1000 (missing/invalid argument) and 1002 (not found); the others are emulator choices.
CODES = {400: 1000, 401: 1001, 403: 1003, 404: 1002, 409: 1004, 413: 1005, 429: 1006}


class Problem(Exception):
    """Raise anywhere in a handler to answer with an RFC 7807 problem."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def not_found(what: str, identifier: str) -> Problem:
    return Problem(404, f"{what} '{identifier}' not found")


def problem_body(status: int, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return {
        "type": f"urn:cognigy-emulator:problem:{phrase.lower().replace(' ', '-')}",
        "title": phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": CODES.get(status, 1999 if status >= 500 else 1000),
        "traceId": uuid.uuid4().hex,
        **extra,
    }


def problem_bytes(status: int, detail: str, instance: str, **extra: Any) -> bytes:
    return json.dumps(problem_body(status, detail, instance, **extra)).encode()
