"""Benchmark 1 - worker slot-seconds per retrain: deferrable wait vs a poke-mode sensor vs reschedule mode.

Each variant of bench/dags/bench_wait.py runs once with `airflow dags test` against the emulator, with a
training of fixed duration (emulator knob training_seconds). The wait task holds a worker slot from the
start to the end of each of its run segments: one for poke mode, one per poke for reschedule mode, and
two (before deferring, after resuming) for the deferrable operator; the time in the trigger does not count.

Segments are read from the `airflow dags test` log ("[DAG TEST] running task" -> "running trigger in line" or
"end task"), cross-checked against the Airflow DB (task_instance, task_reschedule).
Figure: slot-seconds of the wait task / training duration (goal <= 2 % for the deferrable wait).

Under `dags test` every segment runs inside one process, so a real executor's cost of starting a task
process (seconds of imports per segment) is NOT included: reschedule mode pays it once per poke and the
deferrable operator twice per retrain, so on a real deployment both are higher than measured here.
Run: PYTHONPATH=. .venv/bin/python -m bench.slot_seconds [--training-seconds 90]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from bench.common import STATE, banner, fresh_emulator, show, write_result
from devtools.airflow_env import airflow_env, dags_test, migrate
from devtools.servers import ROOT

DAGS = ROOT / "bench" / "dags"
VARIANTS = ("deferrable", "reschedule", "poke")
TS = r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace(",", ".").replace(" ", "T")[:26]).timestamp()


def segments_from_log(text: str, task_id: str = "wait") -> list[tuple[float, float]]:
    """(start, end) of each run segment of `task_id` in an `airflow dags test` log."""
    segments, start, current = [], None, None
    for line in text.splitlines():
        match = re.search(TS, line)
        if not match:
            continue
        at = _ts(match.group(1))
        if "[DAG TEST] running task" in line:
            current = task_id if f"task_id={task_id}" in line or f".{task_id} " in line else None
            if current is None:
                found = re.search(r"TaskInstance: [\w.-]+\.([\w.-]+) ", line)
                current = found.group(1) if found else None
            start = at if current == task_id else None
        elif start is not None and ("running trigger in line" in line or "[DAG TEST] end task" in line):
            segments.append((start, at))
            start = None
    return segments


def segments_from_db(db: Path, dag_id: str, run_id: str, task_id: str = "wait") -> dict:
    """What the Airflow DB recorded: the task instance's times and its reschedule rows."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        ti = conn.execute(
            "SELECT id, start_date, end_date, duration, try_number, state FROM task_instance "
            "WHERE dag_id=? AND run_id=? AND task_id=?",
            (dag_id, run_id, task_id),
        ).fetchone()
        reschedules = []
        if ti is not None:
            cols = {r[1] for r in conn.execute("PRAGMA table_info(task_reschedule)")}
            key = "ti_id" if "ti_id" in cols else None
            if key:
                reschedules = [
                    dict(r)
                    for r in conn.execute(
                        "SELECT start_date, end_date, reschedule_date FROM task_reschedule WHERE ti_id=?", (ti["id"],)
                    )
                ]
    if ti is None:
        return {}

    def secs(a, b):
        return (_ts(b) - _ts(a)) if a and b else None

    return {
        "state": ti["state"],
        "try_number": ti["try_number"],
        "start_date": ti["start_date"],
        "end_date": ti["end_date"],
        "duration": ti["duration"],
        "reschedule_rows": len(reschedules),
        "reschedule_slot_seconds": round(sum(secs(r["start_date"], r["end_date"]) or 0 for r in reschedules), 3),
    }


def run_variant(env: dict, variant: str, training_seconds: float, emulator, logs: Path) -> dict:
    emulator.knobs(training_seconds=training_seconds)
    log = logs / f"dags_test_{variant}.log"
    dag_id = f"bench_wait_{variant}"
    started = time.time()
    proc = dags_test(env, dag_id=dag_id, log_path=log, timeout=1800)
    wall = time.time() - started
    text = log.read_text(errors="replace")
    finished = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    run_id = finished[-1].split("run_id=")[1].split(",")[0] if finished else None
    segments = segments_from_log(text)
    slot = sum(end - start for start, end in segments)
    db = segments_from_db(Path(env["AIRFLOW_HOME"]) / "airflow.db", dag_id, run_id) if run_id else {}
    return {
        "returncode": proc.returncode,
        "dag_run_state": "success" if finished and "state=success" in finished[-1] else "failed",
        "run_id": run_id,
        "wall_seconds": round(wall, 2),
        "segments": len(segments),
        "slot_seconds": round(slot, 3),
        "slot_over_training": round(slot / training_seconds, 4),
        "segment_seconds": [round(end - start, 3) for start, end in segments],
        "db": db,
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-seconds", type=float, default=90.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    banner(f"1. Worker slot-seconds per retrain: training of {args.training_seconds:g} s, three ways to wait")
    emulator = fresh_emulator("slot_seconds")
    work = STATE / "slot_seconds"
    try:
        env = airflow_env(
            work / "airflow", work / "pipeline", emulator, "http://127.0.0.1:9",
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS), AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        )  # fmt: skip
        migrate(env)
        results = {}
        for variant in args.variants:
            results[variant] = r = run_variant(env, variant, args.training_seconds, emulator, work)
            show(
                variant,
                f"{r['slot_seconds']:.2f} slot-s in {r['segments']} segments = "
                f"{r['slot_over_training']:.2%} of the training; run {r['dag_run_state']}, wall {r['wall_seconds']} s",
            )
    finally:
        emulator.stop()
    figures = {f"{v}_slot_over_training": results[v]["slot_over_training"] for v in results}
    figures.update({f"{v}_slot_seconds": results[v]["slot_seconds"] for v in results})
    figures["training_seconds"] = args.training_seconds
    if "deferrable" in results:
        figures["goal_deferrable_le_2pct"] = results["deferrable"]["slot_over_training"] <= 0.02
    show("written", write_result("slot_seconds", figures, variants=results))
    return figures


if __name__ == "__main__":
    main()
