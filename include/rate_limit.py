"""Client-side pacing under the tenant's rate limit (Cognigy: 1,000 requests per 5 minutes by default)."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """A thread-safe token bucket: `rate` requests per second on average, bursts up to `capacity`.

    In any interval of `w` seconds it lets through at most `capacity + rate * w` requests (the bucket starts
    full). Evaluation and polling on one worker share one bucket, so together they stay under the budget the
    pipeline is given (a share of the tenant limit, leaving room for other API users).
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
