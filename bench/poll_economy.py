"""Benchmark 3 - poll economy: requests per job and detection lag of three polling policies, in simulated time.

No real waiting: a job is modelled the way the emulator (include/emulator/engine.py) runs it - queued for
0.3 s, then `currentStep` grows linearly from 0 to 99 (integer percent, floored) over the duration, and the
status turns `done` at start + duration. Each policy polls once when the wait starts (the wait operator's
first GET), then after the delays it chooses, until a poll sees the terminal status.

Policies: the project's `include.poll_policy.PollPolicy` (progress-based prediction, 2..30 s), the
specification's exponential backoff (5 s x 1.5 capped at 30 s) and the Cognigy CLI's fixed 2 s.
Run: PYTHONPATH=. .venv/bin/python -m bench.poll_economy
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import banner, show, summary, write_result
from include.poll_policy import PollPolicy

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
    for key, value in figures.items():
        show(key, value)
    path = write_result("poll_economy", figures, policies=results, jobs=args.jobs)
    show("written", path)
    return figures


if __name__ == "__main__":
    main()
