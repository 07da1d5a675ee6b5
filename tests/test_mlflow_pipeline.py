"""The pipeline's MLflow record and audit trail, end to end: whole DAG runs (`airflow dags test`) against the
Cognigy emulator and real MLflow servers.

Scenarios: a promotion whose MLflow sync is retried by Airflow; a gate failure with rollback; MLflow down for
the whole run, then back and the resync DAG; recognisable secrets that must not show up in any output; the
audit chain's CLI on the real audit file. Five DAG runs in all (four retrains, one resync).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from mlflow import MlflowClient

from devtools.airflow_env import DEMO_CONF, cognigy_conn, dags_test
from devtools.servers import ROOT, Emulator, Server, free_port, start_emulator, start_mlflow
from emulator import seed
from include.data import dataset
from include.records.audit import read
from include.records.mlflow_tracking import RegistryAction, SyncPayload, sync
from include.records.outbox import Outbox

sys.path.insert(0, str(ROOT / "plugins"))  # what Airflow does with its plugins folder
from cognigy_airflow.auditing import retrain_trigger, triggered_by

pytestmark = pytest.mark.slow

# Small, fast runs. The per-intent recall floor is relaxed so that the "pass" runs pass whatever the
# random split of a 6-per-intent held-out set does to one intent: the gates have their own tests.
PASS = {"requests_per_second": 100, "held_out_per_intent": 8, "samples_per_intent": 40, "per_intent_recall_floor": 0.3}
MODEL = f"cognigy-{seed.FLOW_ID}-en-US"
EXPERIMENT = "cognigy-nlu-retrain"
LOCALE = "en-US"
GOVERNANCE_FIELDS = {
    "seq", "ts", "event", "dag_id", "run_id", "task_id", "run_type", "triggered_by", "request_hash", "target",
    "cognigy_job_id", "metrics", "latency_seconds", "accuracy_delta", "outcome", "prev_hash", "hash",
}  # fmt: skip


# --- helpers -------------------------------------------------------------------------------------------
@dataclass
class DagRun:
    state: str
    run_id: str
    log: str


def run_dag(env: dict[str, str], log_path: Path, conf: dict | None = None, dag_id: str = "cognigy_nlu_retrain"):
    if dag_id == "cognigy_nlu_retrain":
        conf = {**DEMO_CONF, **(conf or {})}
    proc = dags_test(env, conf, dag_id=dag_id, log_path=log_path, timeout=600)
    text = log_path.read_text(errors="replace")
    final = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert final, f"exit {proc.returncode}\n{text[-3000:]}"
    state = "success" if "state=success" in final[-1] else "failed"
    return DagRun(state, final[-1].split("run_id=")[1].split(",")[0], text)


def audit_file(env: dict[str, str]) -> Path:
    return Path(env["COGNIGY_RETRAIN_STATE_DIR"]) / "audit" / "retrain_audit.jsonl"


def events(env: dict[str, str], run_id: str, event: str | None = None) -> list[dict]:
    return read(audit_file(env), run_id=run_id, event=event)


def one(records: list[dict]) -> dict:
    assert len(records) == 1, records
    return records[0]


def runs_of(client: MlflowClient, **tags: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in found if all(r.data.tags.get(k) == v for k, v in tags.items())]


def versions_of(client: MlflowClient, job_id: str) -> list:
    return client.search_model_versions(f"name='{MODEL}' and tags.cognigy_version_key='{job_id}'")


def champion_of(client: MlflowClient) -> str | None:
    try:
        return client.get_registered_model(MODEL).aliases.get("champion")
    except Exception:  # the model does not exist yet
        return None


class FlakyProxy:
    """A pass-through HTTP proxy to MLflow that answers 503 to the first `times` requests matching
    (method, path). Fault injection: a real MLflow server cannot be told to fail one specific call."""

    def __init__(self, upstream: str, method: str, path: str, times: int = 1) -> None:
        self.upstream, self.rule, self.left, self.failed = upstream.rstrip("/"), (method, path), times, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if (self.command, self.path.split("?")[0]) == proxy.rule and proxy.left > 0:
                    proxy.left -= 1
                    proxy.failed += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=60
                )
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_emulator_with_secrets(state_dir: Path, api_key: str, client_secret: str) -> Emulator:
    """An emulator accepting only these credentials (given by environment, so not in the process list)."""
    return start_emulator(state_dir, api_key=api_key, client_id="canary-client", client_secret=client_secret)


# --- who triggered a run -------------------------------------------------------------------------------
def test_scheduled_runs_are_automated_and_manual_runs_name_the_user() -> None:
    from airflow.sdk.api.datamodels._generated import DagRunType  # the enum a task's context carries

    scheduled = {"dag_run": SimpleNamespace(run_type=DagRunType.SCHEDULED, triggering_user_name=None)}
    manual = {"dag_run": SimpleNamespace(run_type=DagRunType.MANUAL, triggering_user_name="alice")}
    assert (triggered_by(scheduled), retrain_trigger(scheduled)) == ("schedule", "automated")
    assert (triggered_by(manual), retrain_trigger(manual)) == ("user:alice", "manual")


def test_mlflow_connection_gives_tracking_uri_and_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from cognigy_airflow.mlflow_sync import mlflow_target

    basic = {"conn_type": "http", "host": "mlflow.example.com", "schema": "https", "port": 8443, "login": "svc",
             "password": "basic-pass", "extra": {"ca_bundle": "/etc/ca.pem"}}  # fmt: skip
    token = {
        "conn_type": "http",
        "host": "https://mlflow.example.com/ml",
        "extra": {"token": "tok-123", "insecure": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_BASIC", json.dumps(basic))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TOKEN", json.dumps(token))
    uri, auth, secrets = mlflow_target("mlflow_basic")
    assert (uri, auth.username, auth.password, auth.ca_bundle, secrets) == (
        "https://mlflow.example.com:8443",
        "svc",
        "basic-pass",
        "/etc/ca.pem",
        ["basic-pass"],
    )
    assert "basic-pass" not in repr(auth)
    uri, auth, secrets = mlflow_target("mlflow_token")
    assert (uri, auth.token, auth.insecure_tls, secrets) == (
        "https://mlflow.example.com/ml",
        "tok-123",
        True,
        ["tok-123"],
    )


# --- a promotion whose MLflow sync Airflow had to retry -------------------------------------------------
@pytest.fixture(scope="module")
def promoted(airflow_home, emulator: Emulator, mlflow_server: Server, tmp_path_factory) -> Iterator[dict]:
    """One passing DAG run; its first MLflow sync try fails at the first alias call (after the run and the
    model version were created), so Airflow's retry has to find both again."""
    emulator.reset()
    emulator.knobs(training_seconds=3)
    client = MlflowClient(mlflow_server.url)
    champion_before = champion_of(client)
    proxy = FlakyProxy(mlflow_server.url, "POST", "/api/2.0/mlflow/registered-models/alias")
    try:
        env = airflow_home(AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps({"conn_type": "http", "host": proxy.url}))
        run = run_dag(env, tmp_path_factory.mktemp("promoted") / "dags_test.log", PASS)
    finally:
        proxy.stop()
    yield {"run": run, "env": env, "client": client, "champion_before": champion_before, "faults": proxy.failed}


def test_promotion_records_one_complete_mlflow_run_and_moves_champion(promoted, tmp_path: Path) -> None:
    run, env, client = promoted["run"], promoted["env"], promoted["client"]
    assert run.state == "success", run.log[-3000:]
    submitted = one(events(env, run.run_id, "training_submitted"))
    job_id = submitted["cognigy_job_id"]
    completed = one(events(env, run.run_id, "retrain_completed"))
    assert completed["outcome"] == "promoted"

    mlflow_run = one(runs_of(client, airflow_run_id=run.run_id))
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.info.run_id == completed["mlflow_run_id"]
    # params: the flattened request; the whole canonical request as an artifact, hashing to request_hash
    params = mlflow_run.data.params
    assert params["flowId"] == seed.FLOW_ID and params["projectId"] == seed.PROJECT_ID
    assert params["computeConstraints.timeoutSeconds"] == "600" and params["heldOut.perIntent"] == "8"
    assert params["trainingDataSliceMatrix.total"] == str(40 * len(dataset.intents(LOCALE)))
    request_json = Path(client.download_artifacts(mlflow_run.info.run_id, "request.json", str(tmp_path)))
    assert hashlib.sha256(request_json.read_bytes()).hexdigest() == completed["request_hash"]
    # metrics: run level and per intent
    metrics = mlflow_run.data.metrics
    for name in ("training_latency_seconds", "accuracy_delta", "precision", "recall", "f1_score", "bias_score",
                 "dataset_size"):  # fmt: skip
        assert name in metrics, sorted(metrics)
    assert metrics["dataset_size"] == 40 * len(dataset.intents(LOCALE))
    assert metrics["accuracy_delta"] == completed["accuracy_delta"]
    assert metrics["training_latency_seconds"] == pytest.approx(completed["latency_seconds"])
    for intent in dataset.intents(LOCALE):
        assert {f"intent.{intent}.{m}" for m in ("precision", "recall", "f1")} <= metrics.keys()
    # tags
    tags = mlflow_run.data.tags
    assert tags["flow_id"] == seed.FLOW_ID and tags["model_id"] == submitted["target"]["model_id"]
    assert tags["cognigy_job_id"] == job_id
    assert tags["retrain_trigger"] == "manual" and tags["status"] == "promoted"
    assert tags["airflow_run_url"].endswith(f"/dags/cognigy_nlu_retrain/runs/{requests.utils.quote(run.run_id, '')}")
    # artifacts: gate report, confusion matrix, per-intent table, rollback point export, request
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"gate_report.json", "confusion_matrix.png", "per_intent.csv", "per_intent.md", "rollback_point.json",
            "request.json"} <= artifacts  # fmt: skip
    # registry: one version for this training, champion and challenger on it
    version = one(versions_of(client, job_id))
    assert version.source == f"cognigy://{seed.PROJECT_ID}/{seed.FLOW_ID}/{LOCALE}/{job_id}"
    assert version.run_id == mlflow_run.info.run_id
    aliases = client.get_registered_model(MODEL).aliases
    assert aliases["champion"] == aliases["challenger"] == version.version
    if promoted["champion_before"]:
        assert version.tags["previous_champion_version"] == promoted["champion_before"]


def test_retried_sync_creates_no_second_run_or_version(promoted) -> None:
    run, env, client = promoted["run"], promoted["env"], promoted["client"]
    assert promoted["faults"] == 1  # the first try really failed half-way
    assert "MLflow sync failed (try 1 of 3)" in run.log
    synced = one(events(env, run.run_id, "mlflow_synced"))
    assert synced["try_number"] == 2 and synced["mlflow_run_created"] is False
    assert len(runs_of(client, airflow_run_id=run.run_id)) == 1
    job_id = one(events(env, run.run_id, "training_submitted"))["cognigy_job_id"]
    assert len(versions_of(client, job_id)) == 1
    assert synced["model_version"] == synced["champion_version"] == versions_of(client, job_id)[0].version


def test_every_audit_record_carries_the_governance_fields(promoted) -> None:
    run, env = promoted["run"], promoted["env"]
    records = events(env, run.run_id)
    names = [r["event"] for r in records]
    for event in ("retrain_initiated", "rollback_point_captured", "training_submitted", "validation_passed",
                  "mlflow_synced", "retrain_completed"):  # fmt: skip
        assert event in names, names
    plan_hash = records[0]["request_hash"]
    job_id = one(events(env, run.run_id, "training_submitted"))["cognigy_job_id"]
    for record in records:
        assert record.keys() >= GOVERNANCE_FIELDS, (record["event"], GOVERNANCE_FIELDS - record.keys())
        assert record["request_hash"] == plan_hash and len(plan_hash) == 64
        assert record["triggered_by"] == "user:dag_test" and record["run_type"] == "manual"
        assert record["outcome"], (record["event"], record)
        assert record["target"]["flow_id"] == seed.FLOW_ID
    after_training = names.index("training_submitted")
    for record in records[after_training:]:
        assert record["cognigy_job_id"] == job_id, record
    for record in records[names.index("validation_passed") :]:
        assert record["metrics"]["macro_f1"] > 0 and record["latency_seconds"] > 0, record
        assert record["accuracy_delta"] == records[names.index("validation_passed")]["accuracy_delta"]


# --- a gate failure: rollback, champion stays ----------------------------------------------------------
def test_gate_failure_keeps_champion_and_marks_new_version_challenger(
    promoted, airflow_home, emulator: Emulator, mlflow_server: Server, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server.url)
    champion_before = champion_of(client)
    assert champion_before is not None  # the promotion above made one
    emulator.reset()
    emulator.knobs(training_seconds=3)
    env = airflow_home()
    # In place: this test is about the MLflow record of a rolled-back run (staging would not touch production).
    run = run_dag(env, tmp_path / "dags_test.log", {**PASS, "precision_floor": 0.99, "promotion": "in_place"})
    assert run.state == "success", run.log[-3000:]  # a rejected, verified rollback is a healthy outcome
    names = [e["event"] for e in events(env, run.run_id)]
    for event in ("validation_failed", "rollback_triggered", "rollback_verified", "mlflow_synced"):
        assert event in names, names
    job_id = one(events(env, run.run_id, "training_submitted"))["cognigy_job_id"]

    mlflow_run = one(runs_of(client, airflow_run_id=run.run_id))
    assert mlflow_run.info.status == "FAILED"
    assert mlflow_run.data.tags["status"] == "rejected_rolled_back"
    assert mlflow_run.data.tags["rollback_verified"] == "true"
    assert "precision_recall_balance" in mlflow_run.data.tags["gate_result"]
    version = one(versions_of(client, job_id))
    assert client.get_model_version(MODEL, version.version).aliases == ["challenger"]
    assert champion_of(client) == champion_before != version.version
    assert one(events(env, run.run_id, "retrain_completed"))["outcome"] == "rejected_rolled_back"


# --- MLflow down for the whole run, then back: the resync DAG -----------------------------------------
def test_mlflow_down_keeps_the_record_and_resync_pushes_it_once(
    airflow_home, emulator: Emulator, tmp_path: Path
) -> None:
    state = tmp_path / "mlflow"
    mlflow = start_mlflow(state)
    port = int(mlflow.url.rsplit(":", 1)[1])
    mlflow.stop()  # down before the run starts, so every sync try meets a closed port
    outbox_dir = tmp_path / "outbox"
    env = airflow_home(
        AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps({"conn_type": "http", "host": mlflow.url}),
        COGNIGY_RETRAIN_OUTBOX_DIR=str(outbox_dir),
    )
    emulator.reset()
    emulator.knobs(training_seconds=3)
    run = run_dag(env, tmp_path / "dags_test.log", PASS)
    assert run.state == "success", run.log[-3000:]
    deferred = one(events(env, run.run_id, "mlflow_sync_deferred"))
    assert deferred["try_number"] == 3 and "ConnectionError" in deferred["error"]  # retried twice first
    assert "MLflow sync failed (try 2 of 3)" in run.log
    completed = one(events(env, run.run_id, "retrain_completed"))
    assert completed["outcome"] == "promoted" and completed["mlflow_deferred"] is True
    pending = Outbox(outbox_dir).pending()
    assert [p.run_key.split("/")[1] for p in pending] == [run.run_id]

    backup = tmp_path / "outbox-backup"
    shutil.copytree(outbox_dir, backup)
    mlflow = start_mlflow(state, port=port)  # back, same port and state
    try:
        client = MlflowClient(mlflow.url)
        assert runs_of(client) == []
        resync = run_dag(env, tmp_path / "resync.log", dag_id="cognigy_mlflow_resync")
        assert resync.state == "success", resync.log[-3000:]
        mlflow_run = one(runs_of(client))
        assert mlflow_run.data.tags["airflow_run_id"] == run.run_id and mlflow_run.info.status == "FINISHED"
        assert {"gate_report.json", "request.json"} <= {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
        version = one(client.search_model_versions(f"name='{MODEL}'"))
        assert client.get_registered_model(MODEL).aliases["champion"] == version.version
        assert Outbox(outbox_dir).pending() == []
        pushed = one(read(audit_file(env), event="mlflow_synced", origin_run_id=run.run_id))
        assert pushed["dag_id"] == "cognigy_mlflow_resync" and pushed["mlflow_run_id"] == mlflow_run.info.run_id
        assert pushed["request_hash"] == completed["request_hash"] and pushed["accuracy_delta"] is not None
        # A resync that crashed after pushing, before clearing its entry, pushes it again: nothing new appears.
        shutil.copytree(backup, outbox_dir, dirs_exist_ok=True)
        assert len(Outbox(outbox_dir).resync(mlflow.url)) == 1 and Outbox(outbox_dir).pending() == []
        assert len(runs_of(client)) == 1 and len(client.search_model_versions(f"name='{MODEL}'")) == 1
    finally:
        mlflow.stop()


def test_a_late_resync_does_not_take_champion_from_a_newer_model(mlflow_server: Server, tmp_path: Path) -> None:
    """Outbox replays arrive out of order: an older promotion must not displace a newer champion."""
    model, experiment = f"order-{uuid.uuid4().hex[:8]}", f"order-{uuid.uuid4().hex[:8]}"
    artifact = tmp_path / "gate_report.json"
    artifact.write_text("{}")

    def payload(run: str, decided_at: float) -> SyncPayload:
        return SyncPayload(
            run_key=f"dag/{run}", experiment=experiment, run_name=run, artifacts={"gate_report.json": str(artifact)},
            registry=RegistryAction(model, f"cognigy://p/f/en-US/{run}", run, promote=True, decided_at=decided_at),
        )  # fmt: skip

    newer = sync(payload("newer", 2000.0), mlflow_server.url)
    older = sync(payload("older", 1000.0), mlflow_server.url)
    aliases = MlflowClient(mlflow_server.url).get_registered_model(model).aliases
    assert aliases == {"champion": newer.model_version, "challenger": newer.model_version}
    assert older.champion_version == newer.model_version


# --- secrets -------------------------------------------------------------------------------------------
def test_secrets_never_reach_logs_audit_xcom_or_mlflow(airflow_home, mlflow_server: Server, tmp_path: Path) -> None:
    canary = uuid.uuid4().hex[:12]
    api_key, client_secret = f"SECRET-canary-{canary}-apikey", f"SECRET-canary-{canary}-clientsecret"
    mlflow_password = f"SECRET-canary-{canary}-mlflow"
    secrets = (api_key, client_secret, mlflow_password)
    emulator = start_emulator_with_secrets(tmp_path / "emulator", api_key, client_secret)
    try:
        emulator.knobs(training_seconds=3)
        cognigy = json.loads(cognigy_conn(emulator))  # API key in the password field, as users configure it
        cognigy.update(login="canary-client")  # ... next to a client id/secret pair: both in the connection
        cognigy["extra"]["api_key"], cognigy["password"] = api_key, client_secret
        mlflow = {"conn_type": "http", "host": mlflow_server.url, "login": "svc-airflow", "password": mlflow_password}
        env = airflow_home(
            AIRFLOW_CONN_COGNIGY_DEFAULT=json.dumps(cognigy), AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps(mlflow)
        )
        run = run_dag(env, tmp_path / "dags_test.log", PASS)
        assert emulator.stats()["trainings_total"] >= 1  # the emulator took the canary key: it was used
    finally:
        emulator.stop()
    assert run.state == "success", run.log[-3000:]
    assert "[DAG TEST] starting task_id=submit" in run.log  # the task logs are in this output

    outputs, mlflow_run = run_outputs(env, run, mlflow_server.url, tmp_path)
    assert str(audit_file(env)) in outputs
    assert len([k for k in outputs if k.startswith("xcom ")]) >= 5
    client = MlflowClient(mlflow_server.url)
    version = one(client.search_model_versions(f"name='{MODEL}' and run_id='{mlflow_run.info.run_id}'"))
    outputs["model version"] = json.dumps({"source": version.source, "tags": version.tags}).encode()
    assert len([k for k in outputs if k.startswith("artifact ")]) >= 5

    leaks = [(where, s) for where, data in outputs.items() for s in secrets if s.encode() in data]
    assert not leaks, leaks
    assert not [where for where, data in outputs.items() if f"SECRET-canary-{canary}".encode() in data]


def run_outputs(
    env: dict[str, str], run, mlflow_url: str, tmp_path: Path, *folders: Path
) -> tuple[dict[str, bytes], object]:
    """Everything a DAG run wrote, by where: the `dags test` output, task logs, the state folder (audit file, run
    folders, outbox) and `folders`, every XCom, the Airflow database, and the MLflow run's params, tags and
    artifacts; with the MLflow run."""
    outputs: dict[str, bytes] = {"dags test output": run.log.encode()}
    home, state = Path(env["AIRFLOW_HOME"]), Path(env["COGNIGY_RETRAIN_STATE_DIR"])
    for folder in (home / "logs", state, *folders):
        outputs.update({str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    with sqlite3.connect(home / "airflow.db") as db:
        xcoms = db.execute("SELECT task_id, value FROM xcom WHERE run_id = ?", (run.run_id,)).fetchall()
    outputs.update({f"xcom {task}": str(value).encode() for task, value in xcoms})
    outputs["airflow.db"] = (home / "airflow.db").read_bytes()
    client = MlflowClient(mlflow_url)
    mlflow_run = one(runs_of(client, airflow_run_id=run.run_id))
    outputs["mlflow params"] = json.dumps(mlflow_run.data.params).encode()
    outputs["mlflow tags"] = json.dumps(mlflow_run.data.tags).encode()
    downloaded = Path(client.download_artifacts(mlflow_run.info.run_id, "", str(tmp_path / "artifacts")))
    outputs.update({f"artifact {p.name}": p.read_bytes() for p in downloaded.rglob("*") if p.is_file()})
    return outputs, mlflow_run


# --- the audit chain's CLI on the real pipeline audit file --------------------------------------------
def test_verify_cli_accepts_the_pipeline_audit_file_and_names_tampering(promoted, tmp_path: Path) -> None:
    real = audit_file(promoted["env"])
    lines = real.read_text().splitlines(keepends=True)
    assert len(lines) >= 8

    def cli(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "include.records.audit", "verify", str(path)], cwd=ROOT,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    ok = cli(real)
    assert ok.returncode == 0 and ok.stdout.strip() == f"OK: {len(lines)} records, chain intact", ok.stdout
    stamp = hashlib.sha256((ROOT / "requirements.lock").read_bytes() + (ROOT / "requirements-dev.txt").read_bytes())
    made = subprocess.run(["make", "-s", "-o", f".venv/.installed-{stamp.hexdigest()[:12]}", "verify-audit",
                           f"AUDIT={real}"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0 and "chain intact" in made.stdout, made.stdout + made.stderr

    record = json.loads(lines[2])
    record["outcome"] = "promoted" if record.get("outcome") != "promoted" else "rejected"
    edited = [*lines[:2], json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n", *lines[3:]]
    tampered = {
        "edited": (edited, "line 3", "edited"),
        "deleted": ([*lines[:2], *lines[3:]], "line 3", "deleted"),
        "reordered": ([*lines[:2], lines[3], lines[2], *lines[4:]], "line 3", "reordered"),
    }
    for name, (content, where, why) in tampered.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(content))
        result = cli(path)
        assert result.returncode == 1 and result.stdout.startswith(f"BROKEN at {where} "), (name, result.stdout)
        assert why in result.stdout, (name, result.stdout)
