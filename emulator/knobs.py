"""Fault-injection knobs, the tenant rate limiter and in-memory request statistics.

Knobs live in memory (they are test configuration, not tenant state): a restart or `POST /_emulator/reset`
brings them back to the values the process was started with (CLI flags, else the defaults below).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter, deque
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_FAIL_REASON = "Intent training failed: the NLU training service returned an internal error"


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "*"  # "*" matches any method
    path_regex: str = ".*"  # re.search against the request path (no query string)
    count: int | None = Field(default=1, ge=0)  # how many requests it applies to; null = every request

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    def matches(self, method: str, path: str) -> bool:
        if self.count == 0:
            return False
        return self.method in ("*", method.upper()) and re.search(self.path_regex, path) is not None


class FailRule(_Rule):
    status: int = Field(ge=400, le=599)
    detail: str | None = None


class HangRule(_Rule):
    seconds: float = Field(gt=0)


class DropRule(_Rule):
    # False: drop before doing anything; True: process the request fully, then drop instead of answering.
    after_processing: bool = False


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    training_seconds: float = Field(default=3.0, ge=0)
    fail_next_trainings: int = Field(default=0, ge=0)
    fail_reason: str = DEFAULT_FAIL_REASON
    fail_next_imports: int = Field(default=0, ge=0)
    max_snapshots: int = Field(default=10, ge=0)  # per project (agent); dedicated installations may raise it
    latency_ms: int = Field(default=0, ge=0)
    # the most items one page of `GET /tasks` holds, whatever `limit` asks (the platform: 100); tests make it small
    # so that a client reading one page only misses tasks
    task_page_cap: int = Field(default=100, ge=1, le=100)
    rate_limit_requests: int | None = Field(default=1000, ge=1)
    rate_limit_window_seconds: float = Field(default=300.0, gt=0)
    token_ttl_seconds: float = Field(default=3600.0, gt=0)
    fail_next_requests: list[FailRule] = Field(default_factory=list)
    hang_after_accept: list[HangRule] = Field(default_factory=list)
    drop_connections: list[DropRule] = Field(default_factory=list)


class KnobError(ValueError):
    """A PATCH named an unknown knob or gave a value of the wrong type."""


RuleKind = Literal["fail_next_requests", "hang_after_accept", "drop_connections"]


class KnobState:
    """Thread-safe knobs shared by the HTTP layer and the task engine."""

    def __init__(self, initial: Knobs | None = None) -> None:
        self._initial = (initial or Knobs()).model_copy(deep=True)
        self._knobs = self._initial.model_copy(deep=True)
        self._lock = threading.Lock()

    def get(self) -> Knobs:
        with self._lock:
            return self._knobs.model_copy(deep=True)

    def as_json(self) -> dict[str, Any]:
        return self.get().model_dump(mode="json")

    def patch(self, changes: dict[str, Any]) -> tuple[Knobs, set[str]]:
        with self._lock:
            merged = {**self._knobs.model_dump(), **changes}
            try:
                updated = Knobs.model_validate(merged)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"])
                raise KnobError(f"knob '{field}': {first['msg']}") from exc
            self._knobs = updated
            return updated.model_copy(deep=True), set(changes)

    def reset(self) -> None:
        with self._lock:
            self._knobs = self._initial.model_copy(deep=True)

    def take_rule(self, kind: RuleKind, method: str, path: str) -> Any | None:
        """Return (a copy of) the first matching rule of that kind and use up one of its count."""
        with self._lock:
            rules = getattr(self._knobs, kind)
            for index, rule in enumerate(rules):
                if rule.matches(method, path):
                    taken = rule.model_copy()
                    if rule.count is not None:
                        remaining = rule.count - 1
                        if remaining <= 0:
                            rules = rules[:index] + rules[index + 1 :]
                        else:
                            rules = [*rules[:index], rule.model_copy(update={"count": remaining}), *rules[index + 1 :]]
                        setattr(self._knobs, kind, rules)
                    return taken
            return None

    def take_counter(self, name: Literal["fail_next_trainings", "fail_next_imports"]) -> bool:
        """Decrement a fail-next counter; True when it was positive (this operation must fail)."""
        with self._lock:
            value = getattr(self._knobs, name)
            if value > 0:
                setattr(self._knobs, name, value - 1)
                return True
            return False


class RateLimiter:
    """Sliding window over accepted tenant requests (rejected ones do not count)."""

    def __init__(self) -> None:
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()

    def check(self, limit: int | None, window: float, now: float | None = None) -> int | None:
        """Record a request; return None when allowed, else the Retry-After seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._hits and self._hits[0] <= now - window:
                self._hits.popleft()
            if limit is None or len(self._hits) < limit:
                self._hits.append(now)
                return None
            oldest_allowed_again = self._hits[len(self._hits) - limit] + window
            return max(1, math.ceil(oldest_allowed_again - now))


class RequestStats:
    """Counters over tenant traffic since start or the last reset (admin routes are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.requests_total = 0
            self.responses_429 = 0
            self.by_route: Counter[str] = Counter()
            self.by_status: Counter[str] = Counter()
            # nlu/scores answered while a training of that flow/locale was open (keyed "<flow id>/<locale name>"):
            # a client that judges a model must wait for the training to end, so this should stay empty
            self.scores_while_training: Counter[str] = Counter()

    def request(self, route: str) -> None:
        with self._lock:
            self.requests_total += 1
            self.by_route[route] += 1

    def scored_while_training(self, flow_locale: str) -> None:
        with self._lock:
            self.scores_while_training[flow_locale] += 1

    def response(self, status: int) -> None:
        with self._lock:
            self.by_status[str(status)] += 1
            if status == 429:
                self.responses_429 += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "responses_429": self.responses_429,
                "by_route": dict(sorted(self.by_route.items())),
                "by_status": dict(sorted(self.by_status.items())),
                "scores_while_training": dict(sorted(self.scores_while_training.items())),
            }
