"""`make bench`: the eight benchmarks of bench/README.md in a row, figures printed and in bench/results/.

About 76 minutes: the sum of the latest run of each (the `MINUTES` column below; `make bench` as a whole has not
been timed since it ran five of them in 13.8 min on 2026-11-24). The arguments are the ones that produced the
figures in bench/README.md and the README. One benchmark alone: `python -m bench.run_all fleet_budget`.

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


def _lazy(module: str):
    """Import on use: these modules pull in Airflow-stack helpers that the others do not need."""
    return lambda argv: __import__(f"bench.{module}", fromlist=["main"]).main(argv)


TRIGGERS = ["--jobs", "1000", "--min", "30", "--max", "180"]
FLEET = ["--targets", "20", "--before-targets", "4", "--min", "60", "--max", "180"]
DEFAULTS_FLEET = ["--targets", "20", "--min", "30", "--max", "90", "--limit", "300"]
# number in bench/README.md, name (= bench/results/<name>.json), run, arguments, minutes of its latest run
PLAN = [
    (1, "slot_seconds", slot_seconds.main, ["--training-seconds", "60"], 4.5),
    (2, "triggerer_fleet", triggerer_fleet.main, TRIGGERS, 3.2),
    (3, "poll_economy", poll_economy.main, [], 0.1),
    (4, "eval_throughput", eval_throughput.main, ["--utterances", "150", "--trainings", "50"], 7),
    (5, "pipeline_overhead", pipeline_overhead.main, ["--training-seconds", "30"], 2.4),
    (6, "staging_vs_in_place", _lazy("staging_vs_in_place"), [], 13),
    (7, "fleet_budget", _lazy("fleet_budget"), FLEET, 25),
    # 8: the fleet at the product's defaults (20 targets, 2026-12-06: 20.5 min)
    (8, "fleet_defaults", _lazy("fleet_defaults"), DEFAULTS_FLEET, 20.5),
]


def main() -> int:
    only = set(sys.argv[1:])
    started = time.monotonic()
    print(f"machine: {machine()}", flush=True)
    plan = [step for step in PLAN if not only or step[1] in only]
    print(f"{len(plan)} benchmark(s), about {sum(step[4] for step in plan):.0f} min (their latest runs)", flush=True)
    results, failed = {}, []
    for number, name, run, argv, _minutes in plan:
        t0 = time.monotonic()
        try:
            results[name] = run(argv)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            results[name] = {"error": traceback.format_exc(limit=3)}
        show(f"[{number}. {name} took]", f"{time.monotonic() - t0:.0f} s")
    total = time.monotonic() - started
    banner(f"all benchmarks: {total / 60:.1f} min" + (f"; could not run: {', '.join(failed)}" if failed else ""))
    for name, figures in results.items():
        goals = {k: v for k, v in figures.items() if k.startswith("goal_")}
        show(name, goals or "(see its JSON)")
    write_result("summary", {"total_minutes": round(total / 60, 1), "failed": failed}, results=results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
