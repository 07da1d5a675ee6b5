"""Small helpers the route modules share."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from emulator.auth import Principal
from emulator.problems import Problem
from emulator.runtime import Runtime

MAX_PAGE = 100
DEFAULT_PAGE = 25


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def principal(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    if found is None:  # the gateway authenticates every dialect route; this is a programming error
        raise Problem(401, "Not authenticated")
    return found


def encode_cursor(skip: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"skip": skip}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, name: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        skip = int(json.loads(base64.urlsafe_b64decode(padded))["skip"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Problem(400, f"Invalid request: {name}: not a cursor this server issued") from exc
    return max(0, skip)


def page_window(
    limit: int | None, skip: int | None, next_cursor: str | None, previous_cursor: str | None
) -> tuple[int, int]:
    """(limit, skip) from Cognigy's query parameters; a cursor wins over skip."""
    limit = DEFAULT_PAGE if limit is None else limit
    if not 1 <= limit <= MAX_PAGE:
        raise Problem(400, f"Invalid request: limit: must be between 1 and {MAX_PAGE}, got {limit}")
    if skip is not None and skip < 0:
        raise Problem(400, f"Invalid request: skip: must be >= 0, got {skip}")
    if next_cursor:
        return limit, decode_cursor(next_cursor, "next")
    if previous_cursor:
        return limit, decode_cursor(previous_cursor, "previous")
    return limit, skip or 0


def page(items: Sequence[Any], total: int, limit: int, skip: int) -> dict[str, Any]:
    """Cognigy page shape; `items` is already the window [skip, skip + limit)."""
    return {
        "items": list(items),
        "total": total,
        "nextCursor": encode_cursor(skip + limit) if skip + limit < total else None,
        "previousCursor": encode_cursor(max(0, skip - limit)) if skip > 0 else None,
    }


@dataclass(frozen=True)
class Window:
    """One page's `limit` and `skip`, from Cognigy's paging query parameters."""

    limit: int
    skip: int

    def of(self, items: Sequence[Any]) -> dict[str, Any]:
        """The page of a whole list."""
        return page(items[self.skip : self.skip + self.limit], len(items), self.limit, self.skip)


def window(
    limit: int | None = None, skip: int | None = None, next: str | None = None, previous: str | None = None
) -> Window:
    """The paging query parameters every list route takes (`limit`, `skip`, cursors `next` / `previous`)."""
    return Window(*page_window(limit, skip, next, previous))


Paging = Annotated[Window, Depends(window)]
