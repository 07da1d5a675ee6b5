"""Identifier and timestamp helpers shared by both dialects."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime


def object_id(now: float | None = None) -> str:
    """A 24-hex id shaped like a MongoDB ObjectId (4-byte timestamp + 8 random bytes)."""
    seconds = int(time.time() if now is None else now)
    return f"{seconds:08x}{os.urandom(8).hex()}"


def intent_id(flow_id: str, locale_id: str, name: str) -> str:
    """Stable 24-hex id of an intent, so it survives export/import and retraining."""
    return hashlib.sha1(f"{flow_id}/{locale_id}/{name}".encode()).hexdigest()[:24]


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds and a Z suffix (None stays None)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
