"""When to ask again: aim at a fraction of the predicted remaining time while progress is steady, back off
while it stalls, jumps or is unknown.

The specification polled every 5 s × 1.5 up to 30 s; the Cognigy CLI every 2 s. Cognigy tasks report
`currentStep/totalStep` (whole percent on the emulator), so every status bounds where the training was at that
moment: progress p means the true fraction done lay in [p, p + quantum). While those bounds fit ONE straight
line (steady progress, a queue wait at 0 % included), they bound the finish time to an interval
[earliest, latest] that narrows with every poll. The next poll then goes

- to `fraction` × the time left until the earliest possible finish (few polls while the end is far away:
  the interval may exceed `maximum`, up to `steady_maximum`, because the prediction bounds the lag), or
- just after the latest possible finish once that is near (the end is pinned down: lag ≤ its uncertainty).

When no line fits (a stall, a jump, a restart) the model starts again from the newest status and the policy
backs off (`minimum` × `factor`ⁿ ≤ `maximum`) until progress is steady again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_EPS = 1e-9
MIN_SECONDS = 2.0  # the defaults of the form's poll_min_seconds / poll_max_seconds and of every caller
MAX_SECONDS = 30.0


@dataclass
class PollPolicy:
    minimum: float = MIN_SECONDS
    maximum: float = MAX_SECONDS
    factor: float = 1.5
    fraction: float = 0.5
    steady_maximum: float | None = None  # default: 3 × maximum
    quantum: float = 0.01
    keep: int = 12  # statuses kept besides the first of the steady run (bounds the CPU per poll)
    _delay: float = field(default=0.0, init=False)
    _points: list[tuple[float, float]] = field(default_factory=list, init=False)
    _steady: bool = field(default=False, init=False)
    _last: float = field(default=0.0, init=False)

    def observe(self, progress: float | None, now: float) -> None:
        """Record a non-terminal status."""
        if progress is None:
            return
        progress = min(max(float(progress), 0.0), 1.0)
        if self._points and progress < self._points[-1][1]:  # went backwards: a restart
            self._restart(now, progress, ahead=True)
            return
        ahead = self._ahead_of_line(now, progress)
        self._points.append((now, progress))
        if len(self._points) > self.keep + 1:
            del self._points[1]  # keep the first (the longest baseline) and the newest
        if self._bounds() is None:  # no straight line fits every status: a stall or a jump
            self._restart(now, progress, ahead)
            return
        self._steady = any(p > self._points[0][1] for _, p in self._points) and self._has_two_times()

    def _ahead_of_line(self, now: float, progress: float) -> bool:
        """Is this status ahead of the line through the earlier ones (a jump, a speed-up)?"""
        if len(self._points) < 2:
            return True
        (t0, p0), (t1, p1) = self._points[0], self._points[-1]
        rate = (p1 - p0) / (t1 - t0) if t1 > t0 else 0.0
        return progress > p1 + rate * (now - t1)

    def _restart(self, now: float, progress: float, ahead: bool) -> None:
        """Start the line again from this status. Ahead of the old line (a jump, a speed-up, a restart) the end
        may be near: back off from `minimum`. Behind it (a stall, a slow-down) the end moved away: keep the
        interval used so far (at most `maximum`), as a plain backoff would."""
        self._points = [(now, progress)]
        self._steady = False
        self._delay = 0.0 if ahead else min(self.maximum, self._last) / self.factor

    def _has_two_times(self) -> bool:
        return self._points[-1][0] - self._points[0][0] > _EPS and self._points[-1][1] > self._points[0][1]

    def _bounds(self) -> tuple[float, float] | None:
        """[earliest, latest] finish time consistent with every status on one line; None when none fits.

        With finish time T and rate a, the fraction done at t is u = 1 - a (T - t). A status (t, p) says
        p ≤ u < p + quantum, except on the plateau the line starts from (0 % while queued, the level of a stall):
        there the line may not have begun, so only u < p + quantum holds. For two statuses i, j a rate exists
        iff (1 - up_i)(T - t_j) < (1 - p_j)(T - t_i): linear in T, so every pair bounds T.
        """
        points = self._points
        if not points:
            return None
        base = points[0][1]
        lo, hi = points[-1][0], math.inf
        for ti, pi in points:
            up_i = min(pi + self.quantum, 1.0)
            for tj, pj in points:
                if pj <= base:
                    continue
                coef = pj - up_i
                rhs = (1 - up_i) * tj - (1 - pj) * ti
                if coef > _EPS:
                    hi = min(hi, rhs / coef)
                elif coef < -_EPS:
                    lo = max(lo, rhs / coef)
                elif rhs <= -_EPS:
                    return None
        if lo > hi + 1e-6:
            return None
        return lo, hi

    def predicted_finish(self) -> tuple[float, float] | None:
        """(earliest, latest) finish while progress is steady, else None."""
        if not self._steady:
            return None
        bounds = self._bounds()
        if bounds is None or math.isinf(bounds[1]):
            return None
        return bounds

    def predicted_remaining(self) -> float | None:
        bounds = self.predicted_finish()
        if bounds is None or not self._points:
            return None
        return max(0.0, (bounds[0] + bounds[1]) / 2 - self._points[-1][0])

    def next_delay(self, now: float) -> float:
        self._last = self._next_delay(now)
        return self._last

    def _next_delay(self, now: float) -> float:
        bounds = self.predicted_finish()
        if bounds is None:
            self._delay = self.minimum if self._delay == 0 else min(self.maximum, self._delay * self.factor)
            self._delay = max(self._delay, self.minimum)
            return self._delay
        self._delay = 0.0
        earliest, latest = bounds
        cap = self.steady_maximum if self.steady_maximum is not None else 3 * self.maximum
        if latest - earliest <= self.minimum or latest - now <= self.minimum:
            # The end is pinned down: the first poll after the latest possible finish sees it.
            return max(self.minimum, min(latest - now + 0.05, cap))
        return max(self.minimum, min(self.fraction * (earliest - now), cap))
