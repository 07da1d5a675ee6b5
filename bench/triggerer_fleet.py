"""Benchmark 2 - the triggerer at fleet scale: 1,000 concurrent trainings polled by CognigyJobTrigger.

The emulator gets 1,000 rest-v2 trainings of various durations through its HTTP API (rate limit off, every
training ends in `error` at its end time so the emulator does not fit 1,000 classifiers - see
bench.common.create_trainings). One child process (bench/fleet_worker.py) then runs one CognigyJobTrigger
per training in a single asyncio loop, as a triggerer would, with the connection from
AIRFLOW_CONN_COGNIGY_DEFAULT. Figures: CPU seconds and peak RSS of that process, requests per job, and
detection lag = event time - the emulator's `lastFinishedAt`, p50/p99, against the goal 1.1 x poll cap.
Run: PYTHONPATH=. .venv/bin/python -m bench.triggerer_fleet [--jobs 1000 --min 30 --max 240]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import datetime

import requests

from bench.common import (
    STATE,
    banner,
    create_trainings,
    fresh_emulator,
    process_cpu_seconds,
    show,
    summary,
    write_result,
)
from devtools.airflow_env import cognigy_conn
from devtools.servers import ROOT
from emulator.engine import QUEUE_SECONDS


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def sample_load(stop: threading.Event, into: list[float], every: float = 5.0) -> threading.Thread:
    """1-minute load average every few seconds while the trigger process runs (the machine may be shared)."""

    def loop() -> None:
        while True:
            into.append(os.getloadavg()[0])
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--min", type=float, default=30.0, help="shortest training, seconds")
    parser.add_argument("--max", type=float, default=240.0, help="longest training, seconds")
    parser.add_argument("--poll-max", type=float, default=30.0)
    parser.add_argument("--name", default="triggerer_fleet", help="result file name")
    args = parser.parse_args(argv)
    banner(f"2. Triggerer at fleet scale: {args.jobs} trainings of {args.min:g}-{args.max:g} s, one asyncio process")
    rng = random.Random(11)
    durations = sorted(round(rng.uniform(args.min, args.max)) for _ in range(args.jobs))
    emulator = fresh_emulator(args.name)
    work = STATE / args.name
    try:
        t0 = time.time()
        tasks = create_trainings(emulator, durations)
        emulator.knobs(rate_limit_requests=None)
        show("created trainings", f"{len(tasks)} in {time.time() - t0:.1f} s")
        jobs = [
            {"id": t["_id"], "created": epoch(t["createdAt"]), "duration": d}
            for t, d in zip(tasks, durations, strict=True)
        ]
        (work / "jobs.json").write_text(json.dumps(jobs))
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW_CONN_COGNIGY_DEFAULT": cognigy_conn(emulator),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        emu_cpu0, stats0 = process_cpu_seconds(emulator.proc.pid), emulator.stats()
        wall0 = time.time()
        argv = [
            sys.executable,
            "-m",
            "bench.fleet_worker",
            str(work / "jobs.json"),
            str(work / "result.json"),
            "--poll-max",
            str(args.poll_max),
        ]
        loads: list[float] = []
        stop_sampling = threading.Event()
        sampler = sample_load(stop_sampling, loads)
        try:
            with open(work / "worker.log", "w") as log:
                subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
        finally:
            stop_sampling.set()
            sampler.join()
        wall = time.time() - wall0
        emu_cpu, stats1 = process_cpu_seconds(emulator.proc.pid) - emu_cpu0, emulator.stats()
        result = json.loads((work / "result.json").read_text())
        session = requests.Session()
        session.headers["X-API-Key"] = emulator.api_key
        finished = {j["id"]: session.get(f"{emulator.url}/new/v2.0/tasks/{j['id']}", timeout=30).json() for j in jobs}
    finally:
        emulator.stop()

    lags, nominal_lags, slips, polls, outcomes = [], [], [], [], {}
    for job in jobs:
        ev = result["events"].get(job["id"])
        if ev is None:
            outcomes["missing"] = outcomes.get("missing", 0) + 1
            continue
        payload = ev["event"]
        outcomes[payload["outcome"]] = outcomes.get(payload["outcome"], 0) + 1
        polls.append(payload.get("polls", 0))
        done_at = epoch(finished[job["id"]]["lastFinishedAt"])
        nominal = job["created"] + QUEUE_SECONDS + job["duration"]
        lags.append(ev["at"] - done_at)
        nominal_lags.append(ev["at"] - nominal)
        slips.append(done_at - nominal)
    get_route = "GET /new/v2.0/tasks/{taskId}"
    server_gets = stats1["by_route"].get(get_route, 0) - stats0["by_route"].get(get_route, 0)
    rss = [mb for _, mb in result["rss_samples_mb"]]
    steady = sorted(rss)[len(rss) // 2] if rss else 0.0
    per_trigger_peak_kb = 1024 * (result["peak_rss_mb"] - result["baseline_rss_mb"]) / args.jobs
    per_trigger_steady_kb = 1024 * (steady - result["baseline_rss_mb"]) / args.jobs
    lag = summary(lags)
    base = result["baseline_rss_mb"]
    figures = {
        "jobs": args.jobs,
        "outcomes": outcomes,
        "wall_seconds": round(wall, 1),
        "trigger_process_cpu_seconds": round(result["cpu_seconds_triggers"], 1),
        "trigger_process_cpu_seconds_incl_imports": round(result["cpu_seconds_total"], 1),
        "cpu_ms_per_request": round(1000 * result["cpu_seconds_triggers"] / max(1, sum(polls)), 2),
        "baseline_rss_mb": round(result["baseline_rss_mb"], 1),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "median_rss_mb_while_polling": round(steady, 1),
        "rss_kb_per_trigger_peak": round(per_trigger_peak_kb, 1),
        "rss_kb_per_trigger_median": round(per_trigger_steady_kb, 1),
        "projected_rss_mb_10000_triggers_from_peak": round(base + 10000 * per_trigger_peak_kb / 1024),
        "projected_rss_mb_10000_triggers_from_median": round(base + 10000 * per_trigger_steady_kb / 1024),
        "requests_per_job_mean": round(sum(polls) / max(1, len(polls)), 2),
        "server_counted_gets_per_job": round(server_gets / args.jobs, 2),
        "detection_lag_s": lag,
        "lag_from_nominal_end_s": summary(nominal_lags),
        "emulator_finish_slip_s": summary(slips),
        "emulator_cpu_seconds": round(emu_cpu, 1),
        "load_average_1min_during_run": summary(loads),
        "poll_cap_s": args.poll_max,
        "goal_lag_p99_le_1_1_cap": (lag.get("p99") or 1e9) <= 1.1 * args.poll_max,
    }
    for key, value in figures.items():
        show(key, value)
    show("written", write_result(args.name, figures, durations={"min": args.min, "max": args.max}))
    return figures


if __name__ == "__main__":
    main()
