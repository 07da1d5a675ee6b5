"""Benchmark 6 - staging vs in place: what each promotion mode costs, and what customers meet.

Four whole DAG runs (`airflow dags test cognigy_nlu_retrain`, real MLflow server) against the bundled emulator's
demo project, the emulator reset to its seed before each: a challenger that is promoted (40 example sentences per
intent, better than the seeded champion's 10) and one that is rejected (3 per intent), each with
`promotion=staging` (train and judge in the staging flow no endpoint serves, then promote) and `promotion=in_place`
(train production, restore it on rejection). Per run:
- trainings started on the production and on the staging flow (emulator `trainings_by_flow_locale`),
- requests the tenant received (emulator `requests_total` delta; by kind: imports, trainings, status polls,
  scores, other reads),
- wall time of the DAG run (Airflow DB: dag_run start -> end) and of the `airflow dags test` process,
- ungated exposure seconds (the run's `retrain_completed` audit record): how long the endpoint-served production
  flow served a model the gates had not passed.
Polling uses the DAG's defaults (2-30 s), so the in-place exposure includes the real detection lag.
Caveat: the four runs share one pipeline state dir, so the champion's held-out scores (152 requests) are paid by
the first run (promoted / staging) only; the later runs take them from the champion cache. Subtract 152 from the
first run's requests to compare like with like.
Run: PYTHONPATH=. .venv/bin/python -m bench.staging_vs_in_place [--training-seconds 10]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import STATE, banner, fresh_emulator, show, write_result
from devtools.airflow_env import DEMO_CONF, airflow_env, dags_test, migrate
from devtools.servers import start_mlflow
from include import defaults
from include.records.audit import read

DAG_ID = "cognigy_nlu_retrain"
LOCALE = "en-US"
CONF = {**DEMO_CONF, "requests_per_second": 100, "held_out_per_intent": 8}
CHALLENGERS = {"promoted": 40, "rejected": 3}  # samples_per_intent: better / worse than the seeded champion
MODES = ("staging", "in_place")


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00").replace(" ", "T")).timestamp()


def _dag_run_seconds(db: Path, run_id: str) -> float | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT start_date, end_date FROM dag_run WHERE dag_id=? AND run_id=?", (DAG_ID, run_id))
        start, end = row.fetchone() or (None, None)
    return round(_epoch(end) - _epoch(start), 2) if start and end else None


def _kind(route: str) -> str:
    method, _, path = route.partition(" ")
    if path.endswith("/intents/import"):
        return "imports"
    if path.endswith("/intents/train"):
        return "trainings"
    if method == "GET" and "/tasks/" in path:
        return "task_status"
    if path.endswith("/nlu/scores"):
        return "scores"
    return "other"


def _trainings(stats: dict[str, Any]) -> dict[str, int]:
    by = stats["trainings_by_flow_locale"]
    return {
        "production": by.get(f"{defaults.DEMO_FLOW_ID}/{LOCALE}", 0),
        "staging": by.get(f"{defaults.DEMO_STAGING_FLOW_ID}/{LOCALE}", 0),
    }


def one_run(emulator, env: dict[str, str], work: Path, challenger: str, mode: str, training: float) -> dict:
    emulator.reset()  # the seed tenant: production and staging flows with the champion
    emulator.knobs(training_seconds=training)
    before = emulator.stats()
    conf = {**CONF, "samples_per_intent": CHALLENGERS[challenger], "promotion": mode}
    log = work / f"dags_test-{challenger}-{mode}.log"
    started = time.time()
    proc = dags_test(env, conf, log_path=log, timeout=1800)
    wall = time.time() - started
    after = emulator.stats()
    text = log.read_text(errors="replace")
    final = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    run_id = final[-1].split("run_id=")[1].split(",")[0] if final else ""
    events = read(Path(env["COGNIGY_RETRAIN_STATE_DIR"]) / "audit" / "retrain_audit.jsonl", run_id=run_id)
    completed = next((e for e in reversed(events) if e["event"] == "retrain_completed"), {})
    t0, t1 = _trainings(before), _trainings(after)
    routes: Counter[str] = Counter()
    for route, count in after["by_route"].items():
        routes[_kind(route)] += count - before["by_route"].get(route, 0)
    return {
        "challenger": challenger,
        "promotion": mode,
        "state": "success" if final and "state=success" in final[-1] else "failed",
        "returncode": proc.returncode,
        "outcome": completed.get("outcome"),
        "trainings_production": t1["production"] - t0["production"],
        "trainings_staging": t1["staging"] - t0["staging"],
        "requests": after["requests_total"] - before["requests_total"],
        "requests_by_kind": dict(sorted(routes.items())),
        "dag_run_seconds": _dag_run_seconds(Path(env["AIRFLOW_HOME"]) / "airflow.db", run_id),
        "process_wall_seconds": round(wall, 2),
        "ungated_exposure_seconds": completed.get("ungated_exposure_seconds"),
        "run_id": run_id,
        "log": str(log),
    }


COLUMNS = (
    ("challenger", "challenger"), ("promotion", "promotion"), ("outcome", "outcome"),
    ("trainings_production", "train prod"), ("trainings_staging", "train stag"), ("requests", "requests"),
    ("dag_run_seconds", "DAG run s"), ("ungated_exposure_seconds", "ungated exp. s"),
)  # fmt: skip


def table(rows: list[dict]) -> str:
    cells = [[str(label) for _, label in COLUMNS]] + [[str(r.get(key)) for key, _ in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    banner(f"6. Staging vs in place: promoted and rejected challenger, training {args.training_seconds:g} s")
    emulator = fresh_emulator("staging_vs_in_place")
    work = STATE / "staging_vs_in_place"
    for sub in ("airflow", "pipeline", "mlflow"):
        shutil.rmtree(work / sub, ignore_errors=True)
    mlflow = start_mlflow(work / "mlflow")
    rows: list[dict] = []
    try:
        env = airflow_env(work / "airflow", work / "pipeline", emulator, mlflow.url)
        migrate(env)
        for challenger in CHALLENGERS:
            for mode in MODES:
                row = one_run(emulator, env, work, challenger, mode, args.training_seconds)
                show(f"{challenger} / {mode}", {k: v for k, v in row.items() if k not in ("log", "run_id")})
                rows.append(row)
    finally:
        mlflow.stop()
        emulator.stop()
    print(table(rows), flush=True)
    by = {(r["challenger"], r["promotion"]): r for r in rows}
    figures: dict[str, Any] = {"training_seconds": args.training_seconds}
    for challenger in CHALLENGERS:
        staging, in_place = by[(challenger, "staging")], by[(challenger, "in_place")]
        figures[f"{challenger}_exposure_seconds_staging"] = staging["ungated_exposure_seconds"]
        figures[f"{challenger}_exposure_seconds_in_place"] = in_place["ungated_exposure_seconds"]
        figures[f"{challenger}_production_trainings_staging_vs_in_place"] = [
            staging["trainings_production"], in_place["trainings_production"],
        ]  # fmt: skip
        figures[f"{challenger}_requests_staging_vs_in_place"] = [staging["requests"], in_place["requests"]]
        figures[f"{challenger}_dag_run_seconds_staging_vs_in_place"] = [
            staging["dag_run_seconds"], in_place["dag_run_seconds"],
        ]  # fmt: skip
    figures["goal_staging_exposes_nobody"] = all(
        r["ungated_exposure_seconds"] == 0 for r in rows if r["promotion"] == "staging"
    )
    figures["goal_rejected_staging_leaves_production_alone"] = by[("rejected", "staging")]["trainings_production"] == 0
    for key, value in figures.items():
        show(key, value)
    show("written", write_result("staging_vs_in_place", figures, runs=rows, table=table(rows).splitlines(), conf=CONF))
    return figures


if __name__ == "__main__":
    main()
