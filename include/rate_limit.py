"""Client-side pacing under the tenant's rate limit (Cognigy: 1,000 requests per 5 minutes by default)."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """A thread-safe token bucket: `rate` requests per second on average, bursts up to `capacity`.

    Evaluation and polling on one worker share one bucket, so together they stay under the budget the
    pipeline is given (a share of the tenant limit, leaving room for other API users).
    """

    def __init__(self, rate: float, capacity: float | None = None, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    @classmethod
    def for_tenant_limit(cls, requests: int, window_seconds: float, share: float = 0.8) -> TokenBucket:
        """A bucket using `share` of a tenant limit of `requests` per `window_seconds`, with a small burst."""
        rate = requests * share / window_seconds
        return cls(rate=rate, capacity=max(1.0, min(10.0, rate * 2)))

    def acquire(self, tokens: float = 1.0) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= tokens
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.waited_seconds += wait
            self._sleep(wait)
