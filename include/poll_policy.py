"""When to ask again: back off while nothing moves, and aim at the predicted finish when progress is known.

The specification polled every 5 s × 1.5 up to 30 s; the Cognigy CLI every 2 s. Cognigy tasks report
`currentStep/totalStep`, so the remaining time can be estimated from the progress rate and the next poll
placed just after the predicted end, capped so detection lag stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PollPolicy:
    minimum: float = 2.0
    maximum: float = 30.0
    factor: float = 1.5
    _delay: float = field(default=0.0, init=False)
    _first: tuple[float, float] | None = field(default=None, init=False)
    _last: tuple[float, float] | None = field(default=None, init=False)

    def observe(self, progress: float | None, now: float) -> None:
        """Record a status. The rate is measured from the last time progress was at its lowest, so a long
        queue wait at 0 % (or a restart) does not make the training look slower than it is."""
        if progress is None:
            return
        if self._first is None or progress <= self._first[1]:
            self._first = (now, progress)
        self._last = (now, progress)

    def predicted_remaining(self) -> float | None:
        if not self._first or not self._last:
            return None
        (t0, p0), (t1, p1) = self._first, self._last
        if t1 <= t0 or p1 <= p0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        return max(0.0, (1.0 - p1) / rate)

    def next_delay(self, now: float) -> float:
        self._delay = self.minimum if self._delay == 0 else min(self.maximum, self._delay * self.factor)
        remaining = self.predicted_remaining()
        if remaining is not None:
            # Land just after the predicted end; the cap bounds the lag when the prediction is wrong.
            return max(self.minimum, min(remaining + 0.5, self.maximum))
        return self._delay
