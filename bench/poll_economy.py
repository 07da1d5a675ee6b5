"""Benchmark 3 - poll economy: requests per job and detection lag of three polling policies, in simulated time.

No real waiting: a job is modelled the way the emulator (emulator/engine.py) runs it - queued for
0.3 s, then `currentStep` grows linearly from 0 to 99 (integer percent, floored) over the duration, and the
status turns `done` at start + duration. Each policy polls once when the wait starts (the wait operator's
first GET), then after the delays it chooses, until a poll sees the terminal status.

Policies: the project's `include.cognigy.poll_policy.PollPolicy` (progress-based prediction, 2..30 s), the
specification's exponential backoff (5 s x 1.5 capped at 30 s) and the Cognigy CLI's fixed 2 s.

Before/after: the PollPolicy before the poll-economy change (`LegacyPollPolicy`, a verbatim copy: aim just after
the two-point predicted end, never more than 30 s) against today's, on progress profiles: steady (the 10-minute
training of the goal, and 1-10 minutes), a queue wait at 0 % (20-120 s), a stall (20-120 s at 20-80 %), a jump
(+10-30 % at once), a slow-down (half speed after 30-70 %) and a speed-up (double speed).
Run: PYTHONPATH=. .venv/bin/python -m bench.poll_economy
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import banner, show, summary, write_result
from include.cognigy.poll_policy import PollPolicy

QUEUE_SECONDS = 0.3  # the emulator's queued -> active delay
BUCKETS = [(10, 30), (30, 60), (60, 120), (120, 300), (300, 601)]


@dataclass
class Outcome:
    duration: float
    requests: int
    lag: float


def progress_at(t: float, duration: float) -> float | None:
    """What a GET at time t (seconds since submission) reports: None once done, else currentStep/100."""
    if t >= QUEUE_SECONDS + duration:
        return None
    if t < QUEUE_SECONDS:
        return 0.0
    return max(0, min(99, int(100 * (t - QUEUE_SECONDS) / duration))) / 100


@dataclass
class LegacyPollPolicy:
    """include/cognigy/poll_policy.py before the poll-economy change (verbatim), for the before/after table."""

    minimum: float = 2.0
    maximum: float = 30.0
    factor: float = 1.5
    _delay: float = field(default=0.0, init=False)
    _first: tuple[float, float] | None = field(default=None, init=False)
    _last: tuple[float, float] | None = field(default=None, init=False)

    def observe(self, progress: float | None, now: float) -> None:
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
            return max(self.minimum, min(remaining + 0.5, self.maximum))
        return self._delay


class Policy:
    """After each non-terminal poll: how long to wait before the next one."""

    name = "?"

    def after_poll(self, progress: float, now: float) -> float:
        raise NotImplementedError


class ProjectPolicy(Policy):
    name = "project PollPolicy(2, 30)"

    def __init__(self, minimum: float = 2.0, maximum: float = 30.0) -> None:
        self.policy = PollPolicy(minimum=minimum, maximum=maximum)

    def after_poll(self, progress: float, now: float) -> float:
        self.policy.observe(progress, now)  # exactly what CognigyJobTrigger.run does
        return self.policy.next_delay(now)


class SpecPolicy(Policy):
    name = "specification 5 s x 1.5 <= 30 s"

    def __init__(self) -> None:
        self.delay = 0.0

    def after_poll(self, progress: float, now: float) -> float:
        self.delay = 5.0 if self.delay == 0 else min(30.0, self.delay * 1.5)
        return self.delay


class CliPolicy(Policy):
    name = "Cognigy CLI fixed 2 s"

    def after_poll(self, progress: float, now: float) -> float:
        return 2.0


def simulate(make: Callable[[], Policy], duration: float, wait_starts_at: float) -> Outcome:
    policy, t, requests = make(), wait_starts_at, 0
    finished = QUEUE_SECONDS + duration
    while True:
        requests += 1
        progress = progress_at(t, duration)
        if progress is None:
            return Outcome(duration, requests, t - finished)
        t += max(0.05, policy.after_poll(progress, t))  # the trigger never sleeps less than 50 ms


def durations(n: int, seed: int) -> list[float]:
    """Log-uniform between 10 s and 10 min: as many short trainings as long ones per decade."""
    rng = random.Random(seed)
    return [math.exp(rng.uniform(math.log(10), math.log(600))) for _ in range(n)]


def evaluate(n: int = 3000, seed: int = 7) -> dict:
    rng = random.Random(seed + 1)
    jobs = [(d, rng.uniform(0.2, 2.0)) for d in durations(n, seed)]  # wait starts 0.2-2 s after submission
    policies: list[Callable[[], Policy]] = [ProjectPolicy, SpecPolicy, CliPolicy]
    results = {}
    for make in policies:
        outcomes = [simulate(make, d, start) for d, start in jobs]
        by_bucket = {}
        for lo, hi in BUCKETS:
            part = [o for o in outcomes if lo <= o.duration < hi]
            by_bucket[f"{lo}-{hi if hi != 601 else 600}s"] = {
                "requests_per_job": summary([o.requests for o in part]),
                "lag_seconds": summary([o.lag for o in part]),
            }
        results[make().name] = {
            "requests_per_job": summary([o.requests for o in outcomes]),
            "lag_seconds": summary([o.lag for o in outcomes]),
            "by_duration": by_bucket,
        }
    return results


# --- before/after on progress profiles ------------------------------------------------------------------------
PROFILES = ["steady 10 min", "steady 1-10 min", "queue wait", "stall", "jump", "slow-down", "speed-up"]


def make_profile(kind: str, rng: random.Random) -> tuple[Callable[[float], float | None], float]:
    """(progress at t or None once done, finish time). Progress is whole percent, at most 99 %, as on the emulator."""
    d = 600.0 if kind == "steady 10 min" else rng.uniform(60, 600)
    start = QUEUE_SECONDS + (rng.uniform(20, 120) if kind == "queue wait" else 0.0)
    events: list[tuple[float, str, float]] = []
    if kind == "stall":
        events = [(rng.uniform(0.2, 0.8), "stall", rng.uniform(20, 120))]
    elif kind == "jump":
        events = [(rng.uniform(0.2, 0.7), "jump", rng.uniform(0.1, 0.3))]
    elif kind == "slow-down":
        events = [(rng.uniform(0.3, 0.7), "rate", 0.5)]
    elif kind == "speed-up":
        events = [(rng.uniform(0.3, 0.7), "rate", 2.0)]
    pieces, t, u, rate = [], start, 0.0, 1.0 / d
    for at, what, value in events:
        t_at = t + (at - u) / rate
        pieces.append((t, u, rate, t_at))
        t, u = t_at, at
        if what == "stall":
            pieces.append((t, u, 0.0, t + value))
            t += value
        elif what == "jump":
            u = min(0.99, u + value)
        else:
            rate *= value
    finish = t + (1 - u) / rate
    pieces.append((t, u, rate, finish))

    def progress(x: float) -> float | None:
        if x >= finish:
            return None
        if x < start:
            return 0.0
        for t0, u0, r, t1 in pieces:
            if t0 <= x < t1:
                return min(99, int(100 * (u0 + r * (x - t0)))) / 100
        return 0.99

    return progress, finish


def simulate_profile(policy, profile, wait_starts_at: float) -> tuple[int, float]:
    progress, finish = profile
    t, requests = wait_starts_at, 0
    while True:
        requests += 1
        p = progress(t)
        if p is None:
            return requests, t - finish
        policy.observe(p, t)
        t += max(0.05, policy.next_delay(t))  # the trigger never sleeps less than 50 ms


def before_after(n: int = 500, seed: int = 11) -> dict:
    out = {}
    for kind in PROFILES:
        rng = random.Random(seed)
        cases = [(make_profile(kind, rng), rng.uniform(0.2, 2.0)) for _ in range(n)]
        row = {}
        for label, make in (("before", LegacyPollPolicy), ("after", PollPolicy)):
            results = [simulate_profile(make(), profile, start) for profile, start in cases]
            row[label] = {
                "requests_per_job": summary([r for r, _ in results]),
                "lag_seconds": summary([lag for _, lag in results]),
            }
        out[kind] = row
    return out


def print_before_after(table: dict) -> None:
    print(f"  {'profile':<16} {'polls before':>12} {'after':>6}   {'lag mean before':>15} {'after':>6}"
          f"   {'lag p99 before':>14} {'after':>6}")  # fmt: skip
    for kind, row in table.items():
        b, a = row["before"], row["after"]
        print(
            f"  {kind:<16} {b['requests_per_job']['mean']:>12.1f} {a['requests_per_job']['mean']:>6.1f}   "
            f"{b['lag_seconds']['mean']:>15.2f} {a['lag_seconds']['mean']:>6.2f}   "
            f"{b['lag_seconds']['p99']:>14.2f} {a['lag_seconds']['p99']:>6.2f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args(argv)
    banner(f"3. Poll economy: {args.jobs} simulated trainings, durations log-uniform 10 s .. 10 min")
    results = evaluate(args.jobs)
    for name, r in results.items():
        req, lag = r["requests_per_job"], r["lag_seconds"]
        show(
            name,
            f"requests/job mean {req['mean']:.1f} p99 {req['p99']}; lag p50 {lag['p50']:.2f} s "
            f"p99 {lag['p99']:.2f} s max {lag['max']:.2f} s",
        )
    project, spec = results[ProjectPolicy().name], results[SpecPolicy().name]
    figures = {
        "project_requests_per_job": project["requests_per_job"]["mean"],
        "spec_requests_per_job": spec["requests_per_job"]["mean"],
        "cli_requests_per_job": results[CliPolicy.name]["requests_per_job"]["mean"],
        "project_lag_p50_s": project["lag_seconds"]["p50"],
        "project_lag_p99_s": project["lag_seconds"]["p99"],
        "spec_lag_p50_s": spec["lag_seconds"]["p50"],
        "spec_lag_p99_s": spec["lag_seconds"]["p99"],
        "requests_saved_vs_spec_pct": round(
            100 * (1 - project["requests_per_job"]["mean"] / spec["requests_per_job"]["mean"]), 1
        ),
        "goal_fewer_requests_no_worse_lag": project["requests_per_job"]["mean"] < spec["requests_per_job"]["mean"]
        and project["lag_seconds"]["p99"] <= spec["lag_seconds"]["p99"]
        and project["lag_seconds"]["p50"] <= spec["lag_seconds"]["p50"],
    }
    banner("3b. Before/after the poll-economy change, per progress profile (500 simulated trainings each)")
    table = before_after()
    print_before_after(table)
    steady = table["steady 10 min"]["after"]
    figures.update(
        steady_10min_polls_before=table["steady 10 min"]["before"]["requests_per_job"]["mean"],
        steady_10min_polls_after=steady["requests_per_job"]["mean"],
        steady_10min_lag_mean_before_s=table["steady 10 min"]["before"]["lag_seconds"]["mean"],
        steady_10min_lag_mean_after_s=steady["lag_seconds"]["mean"],
        goal_steady_10min_le_15_polls_le_1s_lag=steady["requests_per_job"]["mean"] <= 15
        and steady["lag_seconds"]["mean"] <= 1.0,
        irregular_lag_mean_no_worse={
            kind: row["after"]["lag_seconds"]["mean"] <= row["before"]["lag_seconds"]["mean"] + 0.05
            for kind, row in table.items()
        },
        irregular_polls_no_more={
            kind: row["after"]["requests_per_job"]["mean"] <= row["before"]["requests_per_job"]["mean"] + 0.05
            for kind, row in table.items()
        },
    )
    for key, value in figures.items():
        show(key, value)
    path = write_result("poll_economy", figures, policies=results, jobs=args.jobs, before_after=table)
    show("written", path)
    return figures


if __name__ == "__main__":
    main()
