"""Benchmark 5 - pipeline overhead: the DAG run vs a plain script making the same Cognigy calls.

Both retrain the demo flow (en-US) on the emulator with the same training duration and held-out set:
- the DAG: `airflow dags test cognigy_nlu_retrain` (dags/), with a real MLflow server (everything it does:
  validation, rollback point, champion + challenger scoring, gates and report files, MLflow, audit);
- the script (the specification's shape): export intents, score the champion, import the training data,
  start the training, poll every 5 s, score the new model, print a log line.
Overhead = wall time - emulator training time (task createdAt -> lastFinishedAt) - evaluation (scoring) time.
Figure: DAG overhead / script overhead, with the DAG's overhead split by task from the Airflow DB.
Run: PYTHONPATH=. .venv/bin/python -m bench.pipeline_overhead [--training-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import requests

from bench.common import STATE, banner, demo_target, fresh_emulator, show, write_result
from devtools.airflow_env import DEMO_TARGET, airflow_env, dags_test, migrate
from devtools.servers import start_mlflow
from include.cognigy.client import CognigyClient
from include.cognigy.config import ConnectionConfig
from include.cognigy.rate_limit import TokenBucket
from include.data import dataset
from include.evaluation.held_out import score_utterances

# One run retrains one flow/locale, named in the conf (the form's target fields are required): the demo flow's en-US.
CONF = {**DEMO_TARGET, "locales": ["en-US"], "requests_per_second": 100, "held_out_per_intent": 8,
        "samples_per_intent": 40}  # fmt: skip
THRESHOLD = 0.3


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00").replace(" ", "T")).timestamp()


def training_seconds_since(emulator, since: float) -> float:
    """Sum of createdAt -> lastFinishedAt of the trainings started after `since` (emulator's own clock)."""
    session = requests.Session()
    session.headers["X-API-Key"] = emulator.api_key
    page = session.get(
        f"{emulator.url}/new/v2.0/tasks", params={"type": "trainIntents", "limit": 100}, timeout=30
    ).json()
    total = 0.0
    for task in page.get("items", []):
        created, finished = _epoch(task["createdAt"]), _epoch(task.get("lastFinishedAt"))
        if created and finished and created >= since - 1:
            total += finished - created
    return total


def plain_script(emulator, training: float) -> dict:
    """The specification's shape, sequential, no orchestration."""
    emulator.knobs(training_seconds=training)
    target, locale = demo_target(), "en-US"
    client = CognigyClient(
        ConnectionConfig(base_url=emulator.url, api_key=emulator.api_key),
        bucket=TokenBucket(CONF["requests_per_second"]),
    )
    held = dataset.held_out(locale, CONF["held_out_per_intent"])
    started = time.time()
    client.capture_rollback_point(target)
    _, champion_seconds = score_utterances(held, lambda s: client.score(target, s), THRESHOLD)
    client.load_training_data(target, dataset.sample_training(locale, None, CONF["samples_per_intent"]))
    job = client.start_training(target, mode="full", spec_body={}, idempotency_key=f"script-{started}")
    polls = 0
    while not job.terminal:
        time.sleep(5.0)
        job = client.job_status(job.job_id)
        polls += 1
    predictions, eval_seconds = score_utterances(held, lambda s: client.score(target, s), THRESHOLD)
    accuracy = sum(p.predicted_intent == p.true_intent for p in predictions) / len(predictions)
    print(f"  script: training {job.raw_status}, accuracy {accuracy:.3f}, {polls} polls", flush=True)
    wall = time.time() - started
    trained = training_seconds_since(emulator, started)
    return {
        "wall_seconds": round(wall, 2),
        "training_seconds": round(trained, 2),
        "eval_seconds": round(champion_seconds + eval_seconds, 2),
        "overhead_seconds": round(wall - trained - champion_seconds - eval_seconds, 2),
        "polls": polls,
    }


def _xcom_numbers(db: Path, dag_id: str, run_id: str, key: str) -> list[float]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND key='return_value'", (dag_id, run_id)
        ).fetchall()
    found = []
    for (value,) in rows:
        try:
            data = json.loads(value) if isinstance(value, str | bytes) else value
        except (TypeError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get(key), int | float):
            found.append(float(data[key]))
    return found


def _task_durations(db: Path, dag_id: str, run_id: str) -> dict[str, float]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT task_id, map_index, start_date, end_date, duration FROM task_instance WHERE dag_id=? AND run_id=?",
            (dag_id, run_id),
        ).fetchall()
    return {f"{t}[{m}]" if m >= 0 else t: round(d or 0.0, 2) for t, m, _, _, d in rows}


def _dag_run_span(db: Path, dag_id: str, run_id: str) -> float | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT start_date, end_date FROM dag_run WHERE dag_id=? AND run_id=?", (dag_id, run_id))
        start, end = row.fetchone() or (None, None)
    return (_epoch(end) - _epoch(start)) if start and end else None


def dag_run(emulator, mlflow_url: str, training: float, work: Path) -> dict:
    emulator.knobs(training_seconds=training)
    env = airflow_env(work / "airflow", work / "pipeline", emulator, mlflow_url)
    migrate(env)
    log = work / "dags_test.log"
    started = time.time()
    proc = dags_test(env, CONF, log_path=log, timeout=1800)
    wall = time.time() - started
    text = log.read_text(errors="replace")
    final = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    run_id = final[-1].split("run_id=")[1].split(",")[0] if final else ""
    db = work / "airflow" / "airflow.db"
    dag_id = "cognigy_nlu_retrain"
    span = _dag_run_span(db, dag_id, run_id) or wall
    trained = training_seconds_since(emulator, started)
    evals = [n for key in ("champion_eval_seconds", "eval_seconds") for n in _xcom_numbers(db, dag_id, run_id, key)]
    return {
        "returncode": proc.returncode,
        "state": "success" if final and "state=success" in final[-1] else "failed",
        "process_wall_seconds": round(wall, 2),
        "dag_run_seconds": round(span, 2),
        "training_seconds": round(trained, 2),
        "eval_seconds": round(sum(evals), 2),
        "overhead_seconds": round(span - trained - sum(evals), 2),
        "process_overhead_seconds": round(wall - trained - sum(evals), 2),
        "task_seconds": _task_durations(db, dag_id, run_id),
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    banner(f"5. Pipeline overhead: DAG run vs plain script, training {args.training_seconds:g} s")
    emulator = fresh_emulator("pipeline_overhead")
    work = STATE / "pipeline_overhead"
    mlflow = start_mlflow(work / "mlflow")
    try:
        script = plain_script(emulator, args.training_seconds)
        show("plain script", script)
        emulator.reset()
        dag = dag_run(emulator, mlflow.url, args.training_seconds, work)
        show("DAG run", {k: v for k, v in dag.items() if k != "task_seconds"})
    finally:
        mlflow.stop()
        emulator.stop()
    figures = {
        "dag_overhead_seconds": dag["overhead_seconds"],
        "dag_overhead_incl_cli_start_seconds": dag["process_overhead_seconds"],
        "script_overhead_seconds": script["overhead_seconds"],
        "overhead_ratio_dag_over_script": round(dag["overhead_seconds"] / max(0.01, script["overhead_seconds"]), 2),
        "dag_run_state": dag["state"],
        "training_seconds": args.training_seconds,
    }
    for key, value in figures.items():
        show(key, value)
    show("written", write_result("pipeline_overhead", figures, dag=dag, script=script, conf=CONF))
    return figures


if __name__ == "__main__":
    main()
