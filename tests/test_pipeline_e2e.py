"""The whole DAG under `airflow dags test` (deferral included) against the emulator and a real MLflow server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from devtools.airflow_env import DEMO_CONF, cognigy_conn, dags_test
from devtools.servers import Emulator, Server
from emulator import seed
from include.defaults import DEMO_STAGING_FLOW_ID
from include.records.audit import read, verify

FAST = {**DEMO_CONF, "requests_per_second": 100, "held_out_per_intent": 8, "samples_per_intent": 40}
pytestmark = pytest.mark.slow


def run_dag(airflow_home, tmp_path: Path, conf: dict, **env: str) -> tuple[str, str]:
    log = tmp_path / "dags_test.log"
    proc = dags_test(airflow_home(**env), {**FAST, **conf}, log_path=log, timeout=900)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0 or "DagRun Finished" in text, text[-3000:]
    final = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert final, text[-3000:]
    state = "success" if "state=success" in final[-1] else "failed"
    run_id = final[-1].split("run_id=")[1].split(",")[0]
    return state, run_id


def events_of(airflow_home, run_id: str) -> list[dict]:
    return read(airflow_home.state_dir / "audit" / "retrain_audit.jsonl", run_id=run_id)


def task_states(airflow_home, run_id: str) -> dict[str, str | None]:
    """Each task's state as the grid shows it (the Airflow DB's task_instance table): the path the branches took."""
    db = Path(airflow_home()["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)).fetchall()
    return dict(rows)


def test_happy_path_promotes_and_records_everything(
    airflow_home, emulator: Emulator, mlflow_server: Server, tmp_path: Path
) -> None:
    emulator.reset()
    emulator.knobs(training_seconds=3)
    before = emulator.stats()
    state, run_id = run_dag(airflow_home, tmp_path, {})
    assert state == "success"
    after = emulator.stats()
    # Staging promotion: exactly one training of the staging flow, then exactly one of production.
    assert after["trainings_total"] == before["trainings_total"] + 2
    for flow in (seed.FLOW_ID, DEMO_STAGING_FLOW_ID):
        key = f"{flow}/en-US"
        assert after["trainings_by_flow_locale"].get(key, 0) == before["trainings_by_flow_locale"].get(key, 0) + 1

    names = [e["event"] for e in events_of(airflow_home, run_id)]
    for event in (
        "retrain_initiated",
        "rollback_point_captured",
        "training_submitted",
        "validation_passed",
        "mlflow_synced",
        "retrain_completed",
    ):
        assert event in names, names
    assert "rollback_triggered" not in names
    states = task_states(airflow_home, run_id)  # decide took promote -> release; confirm took mlflow_sync
    taken = ("decide", "promote", "release", "confirm", "mlflow_sync", "audit")
    assert {states[k] for k in taken} == {"success"}, states
    assert states["approve"] == states["rollback"] == "skipped", states
    completed = [e for e in events_of(airflow_home, run_id) if e["event"] == "retrain_completed"][-1]
    assert completed["outcome"] == "promoted"
    assert len(completed["request_hash"]) == 64
    assert verify(airflow_home.state_dir / "audit" / "retrain_audit.jsonl").ok

    client = MlflowClient(mlflow_server.url)
    run = client.get_run(completed["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    for metric in ("f1_score", "precision", "recall", "accuracy_delta", "training_latency_seconds", "bias_score"):
        assert metric in run.data.metrics, sorted(run.data.metrics)
    assert run.data.metrics["accuracy_delta"] > 0  # 40 sentences per intent beat the seeded 10
    assert run.data.tags["retrain_trigger"] == "manual"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"gate_report.json", "confusion_matrix.png", "rollback_point.json", "request.json"} <= artifacts
    model = client.get_registered_model(f"cognigy-{seed.FLOW_ID}-en-US")
    assert "champion" in model.aliases


def test_training_error_rolls_back_verifies_and_fails_the_run(airflow_home, emulator: Emulator, tmp_path: Path):
    emulator.reset()
    emulator.knobs(training_seconds=2, fail_next_trainings=1)
    state, run_id = run_dag(airflow_home, tmp_path, {"promotion": "in_place"})
    assert state == "failed"
    events = events_of(airflow_home, run_id)
    names = [e["event"] for e in events]
    for event in ("retrain_failed", "rollback_triggered", "rollback_verified", "retrain_completed"):
        assert event in names, names
    completed = [e for e in events if e["event"] == "retrain_completed"][-1]
    assert completed["outcome"] == "training_failed_rolled_back"
    states = task_states(airflow_home, run_id)  # decide took rollback; the release path was skipped
    assert states["rollback"] == states["mlflow_sync"] == "success", states
    assert {states[k] for k in ("approve", "promote", "release", "confirm")} == {"skipped"}, states
    assert states["audit"] == "failed" and states["watcher"] == "failed", states  # audited, then the run fails
    # What serves is the rollback point: the seeded 10 example sentences per intent again.
    exported = _export(emulator)
    assert all(len(i["exampleSentences"]) == seed.SEED_PER_INTENT for i in exported)


def _export(emulator: Emulator) -> list[dict]:
    import requests

    resp = requests.post(
        f"{emulator.url}/new/v2.0/flows/{seed.FLOW_ID}/intents/export",
        json={"localeId": seed.LOCALE_IDS["en-US"], "format": "json"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    return resp.json()


def test_training_jobs_dialect_end_to_end(airflow_home, emulator: Emulator, tmp_path: Path) -> None:
    emulator.reset()
    emulator.knobs(training_seconds=2)
    env = {"AIRFLOW_CONN_COGNIGY_DEFAULT": cognigy_conn(emulator, dialect="training-jobs")}
    state, run_id = run_dag(airflow_home, tmp_path, {"promotion": "in_place"}, **env)
    names = [e["event"] for e in events_of(airflow_home, run_id)]
    assert state == "success", names
    assert "validation_passed" in names and "mlflow_synced" in names


def test_invalid_request_stops_at_validate_and_sends_nothing(airflow_home, emulator: Emulator, tmp_path: Path):
    """Values the form accepts one by one but that break a cross-field rule stop at `validate`."""
    before = emulator.stats()["requests_total"]
    state, run_id = run_dag(airflow_home, tmp_path, {"timeout_seconds": 300, "max_dataset_size": 100000})
    assert state == "failed"
    rejected = [e for e in events_of(airflow_home, run_id) if e["event"] == "request_rejected"]
    assert rejected, events_of(airflow_home, run_id)
    assert any(
        err.startswith("computeConstraints.timeoutSeconds:") and "time out" in err for err in rejected[0]["errors"]
    ), rejected[0]["errors"]
    assert emulator.stats()["requests_total"] == before  # nothing reached Cognigy


def test_a_hostile_flow_id_is_refused_before_the_run_exists(airflow_home, tmp_path: Path) -> None:
    log = tmp_path / "refused.log"
    dags_test(airflow_home(), {**FAST, "flow_id": "../../admin"}, log_path=log, timeout=300)
    text = log.read_text(errors="replace")
    assert "DagRun Finished" not in text
    assert "flow_id" in text


def test_a_run_without_its_target_is_refused_before_the_run_exists(airflow_home, tmp_path: Path) -> None:
    """The form has no demo ids as defaults: a run that does not name its bot never starts."""
    log = tmp_path / "no-target.log"
    conf = {k: v for k, v in FAST.items() if k not in ("project_id", "flow_id", "model_id")}
    dags_test(airflow_home(), conf, log_path=log, timeout=300)
    text = log.read_text(errors="replace")
    assert "DagRun Finished" not in text
    assert "project_id" in text or "flow_id" in text, text[-3000:]


def test_dry_run_validates_and_sends_nothing(airflow_home, emulator: Emulator, tmp_path: Path) -> None:
    before = emulator.stats()["requests_total"]
    state, run_id = run_dag(airflow_home, tmp_path, {"dry_run": True})
    assert state == "success"
    assert emulator.stats()["requests_total"] == before
    completed = [e for e in events_of(airflow_home, run_id) if e["event"] == "retrain_completed"]
    assert completed and completed[-1]["outcome"] == "dry_run"
