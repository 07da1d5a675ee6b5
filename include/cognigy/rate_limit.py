"""Pacing under the tenant's rate limit (Cognigy: 1,000 requests per 5 minutes by default).

Two pieces:

- `TenantBudget`: ONE request budget per tenant, shared by every process that calls it (Airflow workers and
  triggerers). The window accounting is pyrate-limiter's sliding-window log on a shared backend: Redis for
  deployments (`redis://…`), a SQLite file behind a file lock for one machine (`sqlite:///path`, the default
  under the state folder: `make run` and the tests start the scheduler's workers and the triggerer as separate
  processes on one host), or in-process memory (`memory://`, unit tests and single-process tools only). The
  backend also holds the "blocked until" of a 429, so a `Retry-After` pauses everyone sharing the budget.
  Status polls of running trainings have priority: every request goes into the same log, but bulk requests
  (scoring, exports, imports) are admitted only while the log holds fewer than `bulk_budget` entries - the
  rest of the budget (`poll_reserve`) is kept for polls. The priority is strict: a poll waits only when the
  whole window is full, and then every entry that leaves it makes room for a poll first (the log stays at or
  above the bulk watermark until no poll waits). So a small reserve (5 %) is enough: scoring soaks up all the
  rest, and a finished training is still seen at once.
- `TokenBucket`: a per-process token bucket, kept as the optional per-task cap (`requests_per_second`).

When the budget store (Redis, the SQLite file) does not answer, nothing is sent (fail closed): `acquire` and
`aacquire` ask again with backoff for up to `outage_seconds` (or their `timeout`), then raise
`BudgetStoreUnavailable`, which names the store (never its password). A Redis that restarted has forgotten the
Lua script of the log; it is loaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from include.cognigy.errors import TransientError
from include.records.redaction import redact_text, register_secret

log = logging.getLogger(__name__)

POLL = "poll"
BULK = "bulk"
STORAGE_ENV = "COGNIGY_RATE_LIMIT_STORAGE"
DEFAULT_REQUESTS = 1000
DEFAULT_PER_SECONDS = 300.0
STORE_OUTAGE_SECONDS = 60.0  # how long one acquire waits for an unreachable budget store before failing closed
STORE_BACKOFF = (0.25, 5.0)  # first and longest pause between asks while the store does not answer


class BudgetStoreUnavailable(TransientError):
    """The shared budget's store (Redis, the SQLite file) did not answer: nothing was sent to Cognigy."""


def store_errors() -> tuple[type[BaseException], ...]:
    """What a budget store raises while it is briefly unreachable (down, restarting, loading, locked)."""
    errors: list[type[BaseException]] = [sqlite3.OperationalError]
    try:
        import redis

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]  # BusyLoadingError included
    except ModuleNotFoundError:
        pass
    return tuple(errors)


def display_storage(url: str) -> str:
    """The storage URL without its password (redis://user:***@host:6379/0)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    register_secret(parts.password)
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class TokenBucket:
    """A thread-safe token bucket: `rate` requests per second on average, bursts up to `capacity`.

    In any interval of `w` seconds it lets through at most `capacity + rate * w` requests (the bucket starts
    full). One process only: the product uses it as the optional per-task cap on top of the shared
    `TenantBudget`.
    """

    def __init__(self, rate: float, capacity: float | None = None, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1 (one request)")
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    @classmethod
    def for_tenant_limit(
        cls, requests: int, window_seconds: float, share: float = 0.8, burst: float | None = None
    ) -> TokenBucket:
        """A bucket that never sends more than `share * requests` in any `window_seconds` (a sliding window).

        The burst counts against the window, so the sustained rate is `(share * requests - burst) / window`;
        the default burst is 1 % of the budget (at least 1, at most 10 requests), which keeps the sustained
        rate within ~1 % of the budget at Cognigy's 1,000 per 5 minutes and at scaled-down limits alike.
        """
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        budget = requests * share
        capacity = burst if burst is not None else max(1.0, min(10.0, budget * 0.01))
        if budget - capacity <= 0:
            raise ValueError(f"a burst of {capacity:g} leaves no sustained rate in a budget of {budget:g}")
        return cls(rate=(budget - capacity) / window_seconds, capacity=capacity)

    def max_in(self, seconds: float) -> float:
        """The most requests this bucket lets through in any interval of `seconds`."""
        return self.capacity + self.rate * seconds

    def acquire(self, tokens: float = 1.0) -> None:
        """Take `tokens`, sleeping until they are available. Callers are served in the order they arrive."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= tokens
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)

    # The pacer interface `Transport` calls (a bare bucket knows no priorities and no shared 429 pause).
    def acquire_request(self, kind: str = BULK) -> None:
        self.acquire()

    def rate_limited(self, retry_after: float | None) -> None:
        return None


# --- the tenant's limit -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TenantLimit:
    """The tenant's limit (connection extra `rate_limit`) and how much of it the product may use.

    `share`: the part of the limit this product uses (the rest is for people in the Cognigy UI, other
    integrations, token requests). `poll_reserve`: the part of that budget only status polls may use.
    `margin_seconds`: added to the window, so requests that reach the server later than they were admitted
    (network, a loaded worker) still fall in separate windows.
    """

    requests: int = DEFAULT_REQUESTS
    per_seconds: float = DEFAULT_PER_SECONDS
    share: float = 0.9
    poll_reserve: float = 0.05
    margin_seconds: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.requests, int) or isinstance(self.requests, bool) or self.requests < 1:
            problems.append(f"requests must be a whole number ≥ 1, not {self.requests!r}")
        if not self.per_seconds > 0:
            problems.append(f"per_seconds must be > 0, not {self.per_seconds!r}")
        if not 0 < self.share <= 1:
            problems.append(f"share must be in (0, 1], not {self.share!r}")
        if not 0 <= self.poll_reserve < 1:
            problems.append(f"poll_reserve must be in [0, 1), not {self.poll_reserve!r}")
        if problems:
            raise ValueError("rate_limit: " + "; ".join(problems))

    @classmethod
    def from_extra(cls, value: Any) -> TenantLimit:
        """From the connection extra `rate_limit`: {"requests": 1000, "per_seconds": 300} (+ optional "share",
        "poll_reserve", "margin_seconds"); absent → Cognigy's default 1,000 per 5 minutes."""
        if value in (None, "", {}):
            return cls()
        if not isinstance(value, dict):
            raise ValueError(f'rate_limit: expected {{"requests": N, "per_seconds": S}}, got {value!r}')
        unknown = sorted(set(value) - {"requests", "per_seconds", "share", "poll_reserve", "margin_seconds"})
        if unknown:
            raise ValueError(f"rate_limit: unknown keys {unknown}")
        kwargs = {k: v for k, v in value.items() if v is not None}
        if isinstance(kwargs.get("requests"), float) and kwargs["requests"].is_integer():
            kwargs["requests"] = int(kwargs["requests"])
        for key in ("per_seconds", "share", "poll_reserve", "margin_seconds"):
            if key in kwargs:
                kwargs[key] = float(kwargs[key])
        return cls(**kwargs)

    @property
    def budget(self) -> int:
        """Requests the product may send in any window."""
        return max(1, math.floor(self.requests * self.share))

    @property
    def bulk_budget(self) -> int:
        """The watermark for everything but polls: bulk requests wait while the window holds this many."""
        return max(1, self.budget - math.ceil(self.budget * self.poll_reserve))

    @property
    def window_seconds(self) -> float:
        margin = self.margin_seconds if self.margin_seconds is not None else max(1.0, 0.01 * self.per_seconds)
        return self.per_seconds + margin

    def describe(self) -> str:
        return (
            f"{self.budget} of the tenant's {self.requests} requests per {self.per_seconds:g} s "
            f"(polls alone above {self.bulk_budget})"
        )


def budget_key(base_url: str, credentials_id: str | None) -> str:
    """Which budget a connection draws from: the tenant URL and the credentials' id (never a secret)."""
    return f"{base_url.rstrip('/')}|{credentials_id or 'api-key'}"


def default_storage() -> str:
    from include.settings import state_dir

    return f"sqlite:///{state_dir() / 'rate_limit' / 'budget.sqlite'}"


def storage_url(extra_value: str | None = None) -> str:
    """The backend: the connection extra `rate_limit_storage`, else $COGNIGY_RATE_LIMIT_STORAGE, else a SQLite
    file under the state folder (one machine)."""
    return extra_value or os.environ.get(STORAGE_ENV) or default_storage()


# --- backends -----------------------------------------------------------------------------------------------
class _Backend:
    """Two pyrate-limiter buckets over ONE log: polls admitted below `budget`, the rest below `bulk_budget`."""

    poll: Any
    bulk: Any

    def put(self, kind: str, now_ms: int) -> int:
        """Admit one request (0) or say how many ms until it may be admitted."""
        from pyrate_limiter import RateItem

        bucket = self.poll if kind == POLL else self.bulk
        item = RateItem(kind, now_ms)
        if bucket.put(item):
            return 0
        wait = bucket.waiting(item)
        return max(1, int(wait)) if wait >= 0 else 1000

    def leak(self, now_ms: int) -> None:
        self.poll.leak(now_ms)

    def blocked_until(self) -> float:
        raise NotImplementedError

    def block_until(self, until: float) -> None:
        raise NotImplementedError

    def count(self) -> int:
        return int(self.poll.count())


class _SQLiteBackend(_Backend):
    def __init__(self, path: str, table: str, limit: TenantLimit) -> None:
        from pyrate_limiter import Rate, SQLiteBucket

        window_ms = int(limit.window_seconds * 1000)
        memory = path == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.poll = SQLiteBucket.init_from_file(
            [Rate(limit.budget, window_ms)], table=table, db_path=path, use_file_lock=not memory
        )
        # The same table and lock: both buckets count every request of the tenant.
        lock = self.poll.lock if not memory else None
        self.bulk = SQLiteBucket([Rate(limit.bulk_budget, window_ms)], self.poll.conn, table, lock=lock)
        self._lock = self.poll.lock if not memory else threading.RLock()
        self._table = table
        with self._lock:
            self.poll.conn.execute("CREATE TABLE IF NOT EXISTS cognigy_blocked (key TEXT PRIMARY KEY, until REAL)")
            self.poll.conn.commit()

    def blocked_until(self) -> float:
        with self._lock:
            row = self.poll.conn.execute("SELECT until FROM cognigy_blocked WHERE key = ?", (self._table,)).fetchone()
        return float(row[0]) if row else 0.0

    def block_until(self, until: float) -> None:
        with self._lock:
            self.poll.conn.execute(
                "INSERT INTO cognigy_blocked (key, until) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET until = max(until, excluded.until)",
                (self._table, until),
            )
            self.poll.conn.commit()


class _RedisBackend(_Backend):
    def __init__(self, url: str, key: str, limit: TenantLimit) -> None:
        import redis
        from pyrate_limiter import Rate

        window_ms = int(limit.window_seconds * 1000)
        # Bounded timeouts: a store that hangs must not hang a task or the triggerer's poll.
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        self._log_key = f"cognigy-budget:{key}"
        self._blocked_key = f"cognigy-budget-blocked:{key}"
        self._rates = ([Rate(limit.budget, window_ms)], [Rate(limit.bulk_budget, window_ms)])
        self._load_script()
        self._ttl_ms = window_ms * 2

    def _load_script(self) -> None:
        from pyrate_limiter import RedisBucket

        self.poll = RedisBucket.init(self._rates[0], self.redis, self._log_key)
        self.bulk = RedisBucket.init(self._rates[1], self.redis, self._log_key)

    def put(self, kind: str, now_ms: int) -> int:
        import redis

        try:
            wait = super().put(kind, now_ms)
        except redis.exceptions.NoScriptError:  # a restarted Redis has forgotten the log's Lua script
            self._load_script()
            wait = super().put(kind, now_ms)
        if wait == 0:
            self.redis.pexpire(self._log_key, self._ttl_ms)  # an idle tenant's log goes away by itself
        return wait

    def blocked_until(self) -> float:
        score = self.redis.zscore(self._blocked_key, "until")
        return float(score) if score is not None else 0.0

    def block_until(self, until: float) -> None:
        self.redis.zadd(self._blocked_key, {"until": until}, gt=True)  # atomic max(): never shortens a pause
        self.redis.expireat(self._blocked_key, int(until) + 60)


def _open_backend(url: str, key: str, limit: TenantLimit, connect: bool = True) -> _Backend | None:
    """The backend for a storage URL (`connect=False`: only check the URL)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisBackend(url, key, limit) if connect else None
    if url.startswith("sqlite:///"):
        return _SQLiteBackend(sqlite_path(url), f"budget_{digest}", limit) if connect else None
    if url in ("memory://", "memory"):
        return _SQLiteBackend(":memory:", f"budget_{digest}", limit) if connect else None
    shown = display_storage(url)
    raise ValueError(f"rate limit storage {shown!r}: use redis://host:port/db, sqlite:///path or memory://")


# --- the shared budget --------------------------------------------------------------------------------------
class TenantBudget:
    """One tenant's request budget, shared through the backend by every process using the same key and URL."""

    def __init__(
        self,
        key: str,
        limit: TenantLimit,
        storage: str = "memory://",
        *,
        clock=time.time,
        sleep=time.sleep,
        outage_seconds: float = STORE_OUTAGE_SECONDS,
    ) -> None:
        self.key = key
        self.limit = limit
        self.storage = storage
        self.outage_seconds = outage_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()  # pyrate-limiter buckets keep the last verdict on the instance
        self._puts = 0
        self.acquired = {POLL: 0, BULK: 0}
        self.waited_seconds = {POLL: 0.0, BULK: 0.0}
        self.store_failures = 0  # asks the store did not answer (each one paused and asked again, or failed closed)
        self._backend: _Backend | None = None
        _open_backend(storage, key, limit, connect=False)  # a wrong URL is a configuration error: raise now
        with contextlib.suppress(BudgetStoreUnavailable):  # a store that is down now is opened on the next ask
            self._store(lambda backend: None)

    def _store(self, op):
        """Run `op(backend)`; an unreachable store (opening it included) raises `BudgetStoreUnavailable`."""
        try:
            if self._backend is None:
                self._backend = _open_backend(self.storage, self.key, self.limit)
            return op(self._backend)
        except store_errors() as exc:
            self.store_failures += 1
            cause = redact_text(f"{type(exc).__name__}: {exc}")[:300]
            raise BudgetStoreUnavailable(
                f"the tenant's rate-limit budget store {display_storage(self.storage)} is unreachable ({cause}); "
                "nothing was sent to Cognigy"
            ) from None

    def try_acquire(self, kind: str = BULK) -> float:
        """Take one request now (returns 0.0), or return how many seconds to wait before asking again.
        `BudgetStoreUnavailable` when the store does not answer."""
        now = self._clock()
        kind = POLL if kind == POLL else BULK
        with self._lock:

            def put(backend: _Backend) -> float:
                blocked = backend.blocked_until() - now
                return blocked if blocked > 0 else -backend.put(kind, int(now * 1000)) / 1000

            wait = self._store(put)
            if wait > 0:
                return wait  # a 429's pause
            if wait == 0:
                self.acquired[kind] += 1
                self._puts += 1
                if self._puts % 200 == 0:
                    self._store(lambda backend: backend.leak(int(now * 1000)))
                return 0.0
        # Spread the waiters a little, so they do not all come back in the same millisecond.
        return -wait * random.uniform(1.0, 1.15) + 0.005

    def _outage_pause(self, exc: BudgetStoreUnavailable, failures: int, down_since: float, limit: float) -> float:
        """The pause before asking an unreachable store again (backoff with jitter), or raise past `limit`."""
        down_for = self._clock() - down_since
        pause = min(STORE_BACKOFF[1], STORE_BACKOFF[0] * 2 ** (failures - 1)) * random.uniform(0.75, 1.0)
        if down_for + pause > limit:
            raise BudgetStoreUnavailable(f"{exc}; gave up after {down_for:.1f} s (fail closed)") from None
        if failures == 1:
            log.warning("%s; asking again with backoff for up to %.0f s", exc, limit)
        return pause

    def _next_wait(self, kind: str, started: float, timeout: float | None, outage: list) -> float:
        """One ask: 0 (admitted), a wait (room or a store outage), or raise (timeout, outage too long)."""
        try:
            wait = self.try_acquire(kind)
        except BudgetStoreUnavailable as exc:
            if not outage:
                outage[:] = [self._clock(), 0]
            outage[1] += 1
            limit = self.outage_seconds  # from the outage's start; a `timeout` counts from the ask's
            if timeout is not None:
                limit = min(limit, timeout - (outage[0] - started))
            return self._outage_pause(exc, outage[1], outage[0], limit)
        if outage:
            log.warning("the budget store answers again after %.1f s", self._clock() - outage[0])
            outage.clear()
        if wait > 0 and timeout is not None and self._clock() + wait - started > timeout:
            raise TimeoutError(f"no room in the tenant budget within {timeout:g} s ({self.limit.describe()})")
        return wait

    def acquire(self, kind: str = BULK, timeout: float | None = None) -> float:
        """Block until one request may be sent; returns the seconds waited. TimeoutError past `timeout`;
        `BudgetStoreUnavailable` when the store stays unreachable past `outage_seconds` (or `timeout`)."""
        started = self._clock()
        outage: list = []
        while (wait := self._next_wait(kind, started, timeout, outage)) > 0:
            self._sleep(wait)
        waited = self._clock() - started
        self.waited_seconds[POLL if kind == POLL else BULK] += waited
        return waited

    async def aacquire(self, kind: str = POLL, timeout: float | None = None) -> float:
        """`acquire` for the triggerer's event loop: the backend call runs in a thread, the wait is async."""
        started = self._clock()
        outage: list = []
        while (wait := await asyncio.to_thread(self._next_wait, kind, started, timeout, outage)) > 0:
            await asyncio.sleep(wait)
        waited = self._clock() - started
        self.waited_seconds[POLL if kind == POLL else BULK] += waited
        return waited

    def block_for(self, seconds: float | None) -> None:
        """A 429: nobody sharing this budget sends before `seconds` from now (default 1 s)."""
        until = self._clock() + (seconds if seconds and seconds > 0 else 1.0)
        try:
            self._store(lambda backend: backend.block_until(until))
        except BudgetStoreUnavailable as exc:  # the caller still honours the 429 itself (its own retry wait)
            log.warning("%s: the 429 pause is not shared", exc)

    def blocked_for(self) -> float:
        return max(0.0, self._store(lambda backend: backend.blocked_until()) - self._clock())

    def in_window(self) -> int:
        """Entries in the shared log (including some older than the window until they are leaked)."""
        with self._lock:

            def count(backend: _Backend) -> int:
                backend.leak(int(self._clock() * 1000))
                return backend.count()

            return self._store(count)

    # The pacer interface `Transport` calls.
    def acquire_request(self, kind: str = BULK) -> None:
        self.acquire(kind)

    def rate_limited(self, retry_after: float | None) -> None:
        self.block_for(retry_after)


_BUDGETS: dict[tuple[str, str, TenantLimit], TenantBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def shared_budget(key: str, limit: TenantLimit, storage: str) -> TenantBudget:
    """The process's one `TenantBudget` per (storage, key, limit): one connection/file handle for all tasks and
    triggers of the process."""
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get((storage, key, limit))
        if budget is None:
            budget = _BUDGETS[(storage, key, limit)] = TenantBudget(key, limit, storage)
        return budget


class Pacer:
    """What a client waits for before each request: the shared tenant budget and, optionally, a per-task cap."""

    def __init__(self, budget: TenantBudget | None, cap: TokenBucket | None = None) -> None:
        self.budget = budget
        self.cap = cap

    def acquire_request(self, kind: str = BULK) -> None:
        if self.cap is not None:
            self.cap.acquire()
        if self.budget is not None:
            self.budget.acquire(kind)

    def rate_limited(self, retry_after: float | None) -> None:
        if self.budget is not None:
            self.budget.block_for(retry_after)


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// storage URL: sqlite:///relative/path, sqlite:////absolute/path."""
    return url[len("sqlite:///") :]


def read_log(url: str, key: str) -> list[int]:
    """Timestamps (ms) of the requests still in a SQLite budget's log - for tests and benchmarks."""
    table = f"budget_{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    with sqlite3.connect(sqlite_path(url)) as conn:
        return [row[0] for row in conn.execute(f"SELECT item_timestamp FROM '{table}' ORDER BY item_timestamp")]
