"""Child process of bench.triggerer_fleet: runs N CognigyJobTriggers in one asyncio loop, like one triggerer.

Reads the jobs from a JSON file, writes one JSON result: per-job event time and event, CPU seconds and
RSS (baseline before the triggers exist, samples while they run, peak). Not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(jobs: list[dict], poll_min: float, poll_max: float) -> dict:
    from airflow.sdk import BaseHook
    from cognigy_provider.triggers.cognigy import CognigyJobTrigger

    await BaseHook.aget_connection("cognigy_default")  # warm the connection lookup once
    baseline_rss, baseline_cpu = rss_mb(), cpu_seconds()
    events: dict[str, dict] = {}
    samples: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def one(trigger: CognigyJobTrigger) -> None:
        async for event in trigger.run():
            events[trigger.job_id] = {"at": time.time(), "event": event.payload}

    async def sample() -> None:
        while not done.is_set():
            samples.append((time.time(), rss_mb()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)

    sampler = asyncio.create_task(sample())
    started = time.time()
    triggers = [
        CognigyJobTrigger(
            conn_id="cognigy_default",
            dialect="rest-v2",
            job_id=job["id"],
            end_time=started + 3600,
            started_at=job["created"],
            poll_min=poll_min,
            poll_max=poll_max,
        )
        for job in jobs
    ]
    await asyncio.gather(*(one(t) for t in triggers))
    done.set()
    await sampler
    return {
        "baseline_rss_mb": baseline_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_samples_mb": samples,
        "cpu_seconds_total": cpu_seconds(),
        "cpu_seconds_triggers": cpu_seconds() - baseline_cpu,
        "started_at": started,
        "finished_at": time.time(),
        "events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--poll-min", type=float, default=2.0)
    parser.add_argument("--poll-max", type=float, default=30.0)
    args = parser.parse_args()
    jobs = json.loads(args.jobs.read_text())
    result = asyncio.run(run(jobs, args.poll_min, args.poll_max))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
