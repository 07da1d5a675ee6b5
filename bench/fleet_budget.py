"""Benchmark 7 - a nightly fleet at the tenant's speed limit: the old one-slot pool vs the shared budget.

Both under a REAL scheduler (bench/fleet_stack.py: LocalExecutor scheduler, dag-processor, triggerer and
api-server processes, PostgreSQL and Redis of their own), one fresh emulator each, its rate limit scaled down
(default 100 requests / 30 s), trainings of random length (the emulator's `training_seconds` knob is re-drawn
every second while the fleet runs), one night of the fleet DAG `cognigy_nlu_fleet` (one `cognigy_nlu_retrain`
run per target; promotion in place, demo data); wall time = trigger of the night -> its end.

- before: pool `cognigy_tenant` with 1 slot, deferred waits included, each task paced at the old default
  0.8 x limit / window (`requests_per_second`), no shared budget (the connection's rate_limit set out of reach);
- after: 8 slots, waits hold no slot, the connection's `rate_limit` = the emulator's (share 1.0: nobody else
  calls this tenant; default poll reserve 5 %), per-task cap off.

Figures per mode: wall time (trigger -> night end) vs the bound max(total requests / allowed rate, longest
training), peak use of the limit in any window (sampled), achieved rate / allowed, 429s, training polls,
detection lag (the wait task's end - the emulator's finish), run state.
The one-slot pool runs its targets one after another by construction (its wall time is the sum of per-target
times), so `--before-targets N` may run it on fewer targets; the table then also shows its per-target time and
that time x the fleet size, labelled as extrapolated. The shared budget always runs the whole fleet.
Run: PYTHONPATH=. .venv/bin/python -m bench.fleet_budget --targets 20 --before-targets 4 --min 60 --max 180
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

import requests

from bench.common import STATE, banner, show, summary, write_result
from bench.fleet_stack import RequestSampler, fleet_conf, local_stack, make_fleet, max_overlap, night_task_instances
from devtools.servers import start_emulator
from include.records.audit import read

MODES = {
    "one-slot pool (before)": {"pool_slots": 1, "include_deferred": True, "shared": False},
    "shared budget (after)": {"pool_slots": 8, "include_deferred": False, "shared": True},
}
STATUS_ROUTE = "GET /new/v2.0/tasks/{taskId}"


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _vary_trainings(emulator, lo: float, hi: float, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        with contextlib.suppress(requests.RequestException):
            emulator.knobs(training_seconds=round(rng.uniform(lo, hi), 1))
        stop.wait(1.0)


def run_mode(name: str, mode: dict, args: argparse.Namespace, targets: int) -> dict:
    work = STATE / "fleet_budget" / name.split()[0]
    shutil.rmtree(work, ignore_errors=True)
    emulator = start_emulator(work / "emulator")
    try:
        emulator.knobs(rate_limit_requests=None, training_seconds=args.min)
        fleet = make_fleet(emulator, targets)
        emulator.knobs(rate_limit_requests=args.limit, rate_limit_window_seconds=args.window)
        rate_limit = (
            # the emulator is a tenant only this pipeline calls: the whole limit is its share (default 0.9)
            {"requests": args.limit, "per_seconds": args.window, "share": 1.0}
            if mode["shared"]
            else {"requests": 10**9, "per_seconds": 1}  # out of reach: no shared budget, as before
        )
        old_pacing = round(0.8 * args.limit / args.window / mode["pool_slots"], 3)
        conf = fleet_conf(args.held_out, old_pacing if not mode["shared"] else 100)
        with local_stack(
            work / "airflow",
            emulator,
            rate_limit=rate_limit,
            pool_slots=mode["pool_slots"],
            include_deferred=mode["include_deferred"],
            extra_env={"AIRFLOW_VAR_COGNIGY_FLEET": json.dumps(fleet)},
        ) as stack:
            before = emulator.stats()
            stop = threading.Event()
            varier = threading.Thread(target=_vary_trainings, args=(emulator, args.min, args.max, stop, 7), daemon=True)
            varier.start()
            started = time.time()
            try:
                with RequestSampler(emulator, interval=0.5) as sampler:
                    night = stack.run_fleet_night(conf, timeout=args.timeout)  # cognigy_nlu_fleet: a run per target
            finally:
                stop.set()
            wall = time.time() - started
            after = emulator.stats()
            run = {"state": night["state"]}
            tis = night_task_instances(night)
            events = read(stack.state_dir / "audit" / "retrain_audit.jsonl", run_id=sorted(night["runs"]))
        emulator.knobs(rate_limit_requests=None)
        figures = _figures(emulator, args, run, wall, before, after, tis, events, sampler, conf)
        figures["targets"] = targets
        if targets != args.targets:
            figures["wall_seconds_per_target"] = round(wall / targets, 1)
            figures[f"wall_seconds_extrapolated_to_{args.targets}"] = round(wall / targets * args.targets, 1)
        return figures
    finally:
        emulator.stop()


def _figures(emulator, args, run, wall, before, after, tis, events, sampler, conf) -> dict:
    requests_total = after["requests_total"] - before["requests_total"]
    started_trainings = after.get("trainings_total", 0) - before.get("trainings_total", 0)
    polls = after["by_route"].get(STATUS_ROUTE, 0) - before["by_route"].get(STATUS_ROUTE, 0)
    session = requests.Session()
    session.trust_env = False
    session.headers["X-API-Key"] = emulator.api_key
    waits = {ti["dag_run_id"]: ti for ti in tis if ti["task_id"] == "wait_for_training"}  # one per retrain run
    submitted = {
        e["target"]["locale"] + e["target"]["flow_id"]: e for e in events if e["event"] == "training_submitted"
    }
    lags, trainings = [], []
    for e in submitted.values():
        job = session.get(f"{emulator.url}/new/v2.0/tasks/{e['cognigy_job_id']}", timeout=30).json()
        created, finished = _epoch(job.get("createdAt")), _epoch(job.get("lastFinishedAt") or job.get("finishedAt"))
        if created and finished:
            trainings.append(finished - created)
        # detection lag: from the training's end (Cognigy's clock) to the end of the wait task of the same target
        # (same retrain run), which includes the triggerer's poll delay and the resumed task's queueing for a slot
        wait_end = _epoch((waits.get(e.get("run_id")) or {}).get("end_date"))
        if wait_end and finished:
            lags.append(max(0.0, wait_end - finished))
    allowed_rate = args.limit / args.window
    bound = max(requests_total / allowed_rate, max(trainings, default=0.0))
    completed = [e for e in events if e["event"] == "retrain_completed"]
    outcomes = Counter(e.get("outcome") for e in completed)
    not_promoted = Counter(e.get("gate_reason") for e in completed if e.get("outcome") != "promoted")
    scored_all = all(
        (e.get("held_out") or {}).get("rows") and e["metrics"].get("n_scored") == e["held_out"]["rows"]
        for e in completed
    )
    return {
        "run_state": run["state"],
        "wall_seconds": round(wall, 1),
        "bound_seconds": round(bound, 1),
        "wall_over_bound": round(wall / bound, 2) if bound else None,
        "requests_total": requests_total,
        "responses_429": after["responses_429"] - before["responses_429"],
        "training_polls": polls,
        "trainings_started": started_trainings,
        "polls_per_training": round(polls / max(1, started_trainings), 1),
        "achieved_over_allowed_rate": round(requests_total / wall / allowed_rate, 3),
        "peak_window_use": round(sampler.max_in_window(args.window) / args.limit, 3),
        "max_trainings_waited_at_once": max_overlap(tis),
        "detection_lag_s": summary(lags),
        "training_seconds": summary(trainings),
        "targets_completed": len(completed),
        "outcomes": dict(outcomes),
        "why_not_promoted": dict(not_promoted),  # the gate reasons: a rejection adds a restoring training
        "every_held_out_utterance_scored": scored_all,
        "requests_per_second_param": conf["requests_per_second"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=6)
    parser.add_argument("--before-targets", type=int, default=None, help="targets for the one-slot pool (serial)")
    parser.add_argument("--min", type=float, default=30.0, help="shortest emulator training (s)")
    parser.add_argument("--max", type=float, default=60.0, help="longest emulator training (s)")
    parser.add_argument("--limit", type=int, default=100, help="emulator rate limit: requests per window")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--held-out", type=int, default=2, help="held-out utterances per intent (19 intents)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    config = {k: v for k, v in vars(args).items() if k != "modes"}
    banner(f"7. Fleet budget: {config}")
    results = {}
    for name in args.modes:
        t0 = time.monotonic()
        targets = args.before_targets if MODES[name]["shared"] is False and args.before_targets else args.targets
        results[name] = r = run_mode(name, MODES[name], args, targets)
        show(name, f"done in {time.monotonic() - t0:.0f} s (stack start included)")
        show(name, json.dumps(r, default=str))  # kept in the log even if a later mode fails
    keys = list(dict.fromkeys(k for r in results.values() for k in r if k != "training_seconds"))
    print(f"  {'':<34}" + "".join(f"{n:>28}" for n in results))
    for key in keys:
        cells = []
        for r in results.values():
            value = r.get(key, "-")
            if isinstance(value, dict):
                value = f"mean {value['mean']} p99 {value['p99']}" if value.get("mean") is not None else "-"
            cells.append(f"{value!s:>28}")
        print(f"  {key:<34}" + "".join(cells), flush=True)
    after = results.get("shared budget (after)", {})
    figures = {
        "config": config,
        **{f"{n.split()[0]}_{k}": v for n, r in results.items() for k, v in r.items() if not isinstance(v, dict)},
        "goal_no_429_all_scored": bool(after)
        and after["responses_429"] == 0
        and after["every_held_out_utterance_scored"],
        "goal_within_1_25x_of_bound": bool(after)
        and after["run_state"] == "success"
        and after["wall_over_bound"] is not None
        and after["wall_over_bound"] <= 1.25,
    }
    show("written", write_result("fleet_budget", figures, modes=results))
    return figures


if __name__ == "__main__":
    main()
