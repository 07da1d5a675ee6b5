"""`make bench`: the five benchmarks in a row (about 15-20 minutes), figures printed and in bench/results/.

Figures are measurements, not assertions: the `goal_*` fields say whether a goal was met, and the run fails
only when a benchmark could not run. Run on a quiet machine for numbers worth comparing (the load average at
the start of each benchmark is recorded in its JSON).
"""

from __future__ import annotations

import sys
import time
import traceback

from bench import eval_throughput, pipeline_overhead, poll_economy, slot_seconds, triggerer_fleet
from bench.common import banner, machine, show, write_result

FLEET = ["--jobs", "1000", "--min", "30", "--max", "180"]
PLAN = [
    ("poll_economy", poll_economy.main, []),
    ("eval_throughput", eval_throughput.main, ["--utterances", "150", "--trainings", "50"]),
    ("triggerer_fleet", triggerer_fleet.main, FLEET),
    ("slot_seconds", slot_seconds.main, ["--training-seconds", "60"]),
    ("pipeline_overhead", pipeline_overhead.main, ["--training-seconds", "30"]),
    ("staging_vs_in_place", lambda argv: __import__("bench.staging_vs_in_place", fromlist=["main"]).main(argv), []),
    ("fleet_budget", lambda argv: __import__("bench.fleet_budget", fromlist=["main"]).main(argv), []),
]


def main() -> int:
    only = set(sys.argv[1:])
    started = time.monotonic()
    print(f"machine: {machine()}", flush=True)
    results, failed = {}, []
    for name, run, argv in PLAN:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            results[name] = run(argv)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            results[name] = {"error": traceback.format_exc(limit=3)}
        show(f"[{name} took]", f"{time.monotonic() - t0:.0f} s")
    total = time.monotonic() - started
    banner(f"all benchmarks: {total / 60:.1f} min" + (f"; could not run: {', '.join(failed)}" if failed else ""))
    for name, figures in results.items():
        goals = {k: v for k, v in figures.items() if k.startswith("goal_")}
        show(name, goals or "(see its JSON)")
    write_result("summary", {"total_minutes": round(total / 60, 1), "failed": failed}, results=results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
