"""`make run`: the main job against the embedded defaults.

Starts the Cognigy emulator and a real MLflow tracking server on loopback (state under .state/), migrates a
SQLite Airflow home inside the project, runs the DAG once with `airflow dags test` (deferrable wait included),
prints a verdict, stops the servers, and exits non-zero when the DAG run failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from devtools.airflow_env import DEMO_CONF, airflow_env, dags_test, demo_audit_key, migrate
from devtools.servers import ROOT, start_emulator, start_mlflow

SCENARIOS = {
    # The seeded champion learnt from 10 sentences per intent, this challenger from 40: it wins by design.
    "promote": {**DEMO_CONF, "samples_per_intent": 40},
    # The challenger learns from 3 sentences per intent: worse than the champion; staging keeps it away.
    "worse": {**DEMO_CONF, "samples_per_intent": 3},
    # Production endpoints on snapshot "Release 1" (as Cognigy recommends): the better challenger is released as a
    # new snapshot and every endpoint is switched to it.
    "snapshot": {**DEMO_CONF, "samples_per_intent": 40},
}


def serve_from_a_snapshot(emulator) -> str:
    """The demo tenant as Cognigy recommends running it: every endpoint on snapshot "Release 1" (its id)."""
    import requests

    from emulator import seed

    release = emulator.add_snapshot(seed.PROJECT_ID, "Release 1", "what customers meet before the run")
    headers = {"X-API-Key": emulator.api_key, "Accept": "application/json"}
    listed = requests.get(f"{emulator.url}/new/v2.0/endpoints", params={"projectId": seed.PROJECT_ID},
                          headers=headers, timeout=30).json()["items"]  # fmt: skip
    for endpoint in listed:
        requests.patch(f"{emulator.url}/new/v2.0/endpoints/{endpoint['_id']}", json={"entrypoint": release["_id"]},
                       headers=headers, timeout=30).raise_for_status()  # fmt: skip
    return release["_id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=str(ROOT / ".state"))
    parser.add_argument("--conf", default="{}", help="JSON params for the run (overrides the scenario's)")
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="promote",
        help="promote: new data (40 sentences per intent) beats the seeded champion (10); "
        "worse: the new data is worse than what serves, and the pipeline refuses it; "
        "snapshot: the endpoints serve a snapshot, and the better model is released as a new one",
    )
    parser.add_argument("--training-seconds", default="8", help="emulated training duration")
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    started = time.monotonic()
    print(f"state under {state}", flush=True)
    emulator = start_emulator(state / "emulator", port=None)
    mlflow = None
    try:
        emulator.knobs(training_seconds=float(args.training_seconds))
        if args.scenario == "snapshot":
            print(f"endpoints on snapshot Release 1 ({serve_from_a_snapshot(emulator)})", flush=True)
        print(f"Cognigy emulator  {emulator.url}", flush=True)
        mlflow = start_mlflow(state / "mlflow")
        print(f"MLflow server     {mlflow.url}", flush=True)
        key_file, key_env = demo_audit_key(state / "secrets")  # the demo deployment's audit key (its own connection)
        env = airflow_env(state / "airflow-home", state / "pipeline", emulator, mlflow.url, **key_env)
        migrate(env)
        log_path = state / "last_run.log"
        print(f"running: airflow dags test cognigy_nlu_retrain  (log: {log_path})", flush=True)
        proc = dags_test(env, {**SCENARIOS[args.scenario], **json.loads(args.conf)}, log_path=log_path)
        log_text = log_path.read_text(errors="replace")
        run_id = _run_id(log_text)
        ok = proc.returncode == 0 and _run_ok(log_text)
        _verdict(state / "pipeline", run_id, mlflow.url, ok, time.monotonic() - started)
        default = state == (ROOT / ".state").resolve()  # make verify-audit's defaults: this log and this key
        where = "" if default else f" AUDIT={state / 'pipeline' / 'audit' / 'retrain_audit.jsonl'} KEY={key_file}"
        print(f"audit chain        keyed; check it: make verify-audit{where}")
        return 0 if ok else 1
    finally:
        if mlflow:
            mlflow.stop()
        emulator.stop()


def _finished_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if "DagRun Finished" in ln]
    return lines[-1] if lines else ""


def _run_id(log: str) -> str | None:
    match = re.search(r"run_id=([^\s,]+)", _finished_line(log))
    return match.group(1) if match else None


def _run_ok(log: str) -> bool:
    """`airflow dags test` exits 0 even when the run failed; read the final run state from its log."""
    return "state=success" in _finished_line(log)


SCENARIO_NOTE = (
    "the demo promotes by design: its champion learnt from 10 sentences per intent, the challenger from 40 "
    "(make run SCENARIO=worse shows a refusal)"
)


def _verdict(pipeline_state: Path, run_id: str | None, mlflow_url: str, ok: bool, seconds: float) -> None:
    outcomes = sorted(pipeline_state.glob("runs/*/*/*/outcome.json"), key=lambda p: p.stat().st_mtime)
    recent = [json.loads(p.read_text()) for p in outcomes if run_id is None or f"/{_safe(run_id)[:100]}." in str(p)]
    print("\n==== verdict " + "=" * 60)
    for o in recent or [json.loads(p.read_text()) for p in outcomes[-1:]]:
        s = o.get("summary") or {}
        t = o["target"]
        print(f"flow/locale        {t['flow_id']} / {t['locale']}")
        print(f"Cognigy task id    {o.get('job_id')}   (training {o.get('training_state')})")
        print(f"training latency   {o.get('latency_seconds')} s")
        print(
            f"held-out P/R/F1    {s.get('macro_precision')} / {s.get('macro_recall')} / {s.get('macro_f1')}"
            f"   accuracy {s.get('accuracy')}  Δacc vs champion {s.get('accuracy_delta')} (p={s.get('p_value')})"
        )
        verdict = "PASSED" if s.get("passed") else f"FAILED {s.get('failed_gates')}"
        print(f"gate result        {verdict if s else 'not evaluated (no challenger was judged)'}")
        policy = o.get("gate_policy") or {}
        summary = str(policy.get("summary") or "form (no deployment policy)").removeprefix("gate policy: ")
        print(f"gate policy        {summary}")
        held = o.get("held_out") or {}
        sha = str(held.get("sha256"))[:12]
        print(f"held-out set       {held.get('name')}  ({held.get('rows')} rows, sha256 {sha}…)")
        print(f"outcome            {o['outcome']}   (promotion: {o.get('promotion')})")
        print(f"ungated exposure   {o.get('ungated_exposure_seconds')} s  (customers served by a model not yet gated)")
        release = o.get("release") or {}
        if release.get("path") == "snapshot":
            now, before = release.get("snapshot") or {}, release.get("previous") or {}
            print(f"serving snapshot   {now.get('name')} ({now.get('id')}, hash {str(now.get('hash'))[:12]}…); "
                  f"before: {before.get('name')} ({before.get('id')})")  # fmt: skip
        if o["outcome"] == "promoted" and SCENARIO_NOTE:
            print(f"note               {SCENARIO_NOTE}")
        print(f"MLflow run         {o.get('mlflow_run_id')}   {o.get('mlflow_run_url') or mlflow_url}")
        print(f"audit log          {o.get('audit_path')}")
    print(f"DAG run            {run_id}: {'SUCCESS' if ok else 'FAILED'}   ({seconds:.0f} s wall)")
    print("=" * 73)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)[:150]


if __name__ == "__main__":
    sys.exit(main())
