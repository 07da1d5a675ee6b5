"""The specification's API exactly as written (issue 25): its example request, run through `airflow dags test`
against a gateway that offers ONLY the specification's five calls.

`SpecGateway` is that gateway: the token POST, `POST /training/jobs`, `GET /training/jobs/{jobId}`,
`GET /models/{id}/versions/{vid}/metrics?include_bias_detection=true&include_precision_recall=true` and
`POST /models/{id}/rollback`. Everything else answers 404 and is counted; each test asserts that nothing else was
asked. Metrics and the job's end are scripted per case; a version id is a free string (`v2.4.1`) as in the
specification's example answer.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow import MlflowClient

from devtools.airflow_env import DEMO_TARGET, dags_test
from include.records.audit import read

pytestmark = pytest.mark.slow

MODEL_ID = "550e8400-e29b-41d4-a716-446655440000"
ROLLBACK_VERSION = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
NEW_VERSION = "v2.4.1"
# The specification's example request under the trigger form's names, and nothing else.
EXAMPLE_REQUEST = {
    "model_id": MODEL_ID,
    "training_data_slice_matrix": {"booking": 300, "cancellation": 150, "faq": 120},
    "convergence_threshold": 0.001,
    "max_gpu_memory_mb": 8192,
    "max_cpu_cores": 4,
    "timeout_seconds": 3600,
    "max_dataset_size": 50000,
    "rollback_trigger_version_id": ROLLBACK_VERSION,
}
# The trigger form requires the bot and locale of every run (no defaults); the training-jobs dialect sends none of
# them (its model is `modelId`), so any will do: the demo's.
FORM_TARGET = {k: v for k, v in DEMO_TARGET.items() if k in ("project_id", "flow_id", "locales")}
GOOD = {"precision": 0.97, "recall": 0.96, "f1Score": 0.965, "biasScore": 0.05,
        "intentDistribution": {"booking": 0.53, "cancellation": 0.26, "faq": 0.21}}  # fmt: skip
BAD = {**GOOD, "precision": 0.91, "biasScore": 0.22}

TOKEN = "POST /oauth/token"
SUBMIT = "POST /api/v2/ai/nlp/training/jobs"
STATUS = "GET /api/v2/ai/nlp/training/jobs/{jobId}"
METRICS = "GET /api/v2/ai/nlp/models/{modelId}/versions/{versionId}/metrics"
ROLLBACK = "POST /api/v2/ai/nlp/models/{modelId}/rollback"
ROUTES = [
    ("POST", re.compile(r"^/oauth/token$"), TOKEN),
    ("POST", re.compile(r"^/api/v2/ai/nlp/training/jobs$"), SUBMIT),
    ("GET", re.compile(r"^/api/v2/ai/nlp/training/jobs/(?P<job>[^/]+)$"), STATUS),
    ("GET", re.compile(r"^/api/v2/ai/nlp/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)/metrics$"), METRICS),
    ("POST", re.compile(r"^/api/v2/ai/nlp/models/(?P<model>[^/]+)/rollback$"), ROLLBACK),
]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class SpecGateway:
    """A gateway with the specification's five calls only (a real HTTP server on 127.0.0.1)."""

    def __init__(self, metrics: dict[str, Any], job_end: str = "completed", job_seconds: float = 2.0) -> None:
        self.metrics, self.job_end, self.job_seconds = metrics, job_end, job_seconds
        self.by_route: Counter[str] = Counter()
        self.unknown: list[str] = []
        self.bodies: dict[str, list[Any]] = {}
        self.metrics_queries: list[dict[str, list[str]]] = []
        self.jobs: dict[str, float] = {}
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                for method, pattern, route in ROUTES:
                    if method == self.command and (match := pattern.match(url.path)):
                        gateway.by_route[route] += 1
                        if route != TOKEN and self.headers.get("Authorization") != "Bearer spec-token":
                            return self._answer(401, {"detail": "invalid or expired token"})
                        return self._answer(*gateway.answer(route, match.groupdict(), url.query, raw))
                gateway.unknown.append(f"{self.command} {url.path}")
                self._answer(404, {"detail": "Not Found"})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, route: str, ids: dict[str, str], query: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if route == TOKEN:
            form = parse_qs(raw.decode())
            if form.get("grant_type") != ["client_credentials"] or form.get("client_secret") != ["spec-secret"]:
                return 401, {"detail": "invalid client"}
            return 200, {"access_token": "spec-token", "token_type": "Bearer", "expires_in": 3600}
        body = json.loads(raw or b"null")
        self.bodies.setdefault(route, []).append(body)
        if route == SUBMIT:
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = time.time()
            return 202, self.job(job_id)
        if route == STATUS:
            if ids["job"] not in self.jobs:
                return 404, {"detail": "Training job not found"}
            return 200, self.job(ids["job"])
        if route == METRICS:
            self.metrics_queries.append(parse_qs(query))
            if ids["version"] != NEW_VERSION:
                return 404, {"detail": "Model version not found or metrics generation failed."}
            return 200, self.metrics
        return 200, {"modelId": ids["model"], "activeVersionId": body["target_version_id"], "status": "rolled_back"}

    def job(self, job_id: str) -> dict[str, Any]:
        started = self.jobs[job_id]
        done = time.time() - started >= self.job_seconds
        ended = iso(started + self.job_seconds) if done else None
        return {"jobId": job_id, "status": self.job_end if done else "running", "modelVersionId": NEW_VERSION,
                "startedAt": iso(started), "completedAt": ended}  # fmt: skip

    def calls(self) -> dict[str, int]:
        return dict(self.by_route)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(airflow_home, tmp_path: Path, gateway: SpecGateway) -> tuple[str, list[dict[str, Any]], str]:
    """The example request through `airflow dags test` with `extra.api = training-jobs` and nothing else."""
    conn = {"conn_type": "cognigy", "host": gateway.url, "login": "spec-client", "password": "spec-secret",
            "extra": {"api": "training-jobs"}}  # fmt: skip
    log = tmp_path / "dags_test.log"
    conf = {**FORM_TARGET, **EXAMPLE_REQUEST}
    dags_test(airflow_home(AIRFLOW_CONN_COGNIGY_DEFAULT=json.dumps(conn)), conf, log_path=log, timeout=900)
    text = log.read_text(errors="replace")
    finished = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert finished, text[-3000:]
    state = "success" if "state=success" in finished[-1] else "failed"
    run_id = finished[-1].split("run_id=")[1].split(",")[0]
    return state, read(airflow_home.state_dir / "audit" / "retrain_audit.jsonl", run_id=run_id), text


def only_the_five_calls(gateway: SpecGateway, rollbacks: int) -> None:
    assert gateway.unknown == [], gateway.unknown  # nothing outside the specification was asked
    calls = gateway.calls()
    assert set(calls) <= {TOKEN, SUBMIT, STATUS, METRICS, ROLLBACK}, calls
    assert calls[SUBMIT] == 1 and calls[STATUS] >= 1, calls
    assert calls.get(ROLLBACK, 0) == rollbacks, calls
    (body,) = gateway.bodies[SUBMIT]
    assert body == {
        "modelId": MODEL_ID,
        "trainingDataSliceMatrix": {"booking": 300, "cancellation": 150, "faq": 120},
        "convergenceThreshold": 0.001,
        "computeConstraints": {"maxGpuMemory": 8192, "maxCpuCores": 4, "timeoutSeconds": 3600},
        "maxDatasetSize": 50000,
        "rollbackTriggerVersionId": ROLLBACK_VERSION,
    }


def event(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == name]
    assert found, [e["event"] for e in events]
    return found[-1]


@pytest.fixture
def gateway(request: pytest.FixtureRequest):
    server = SpecGateway(**request.param)
    yield server
    server.stop()


@pytest.mark.parametrize("gateway", [{"metrics": GOOD}], indirect=True)
def test_good_metrics_pass_on_platform_reported_gates(airflow_home, mlflow_server, gateway, tmp_path: Path) -> None:
    state, events, text = run(airflow_home, tmp_path, gateway)
    assert state == "success", text[-3000:]
    only_the_five_calls(gateway, rollbacks=0)
    assert gateway.calls()[METRICS] == 1
    assert gateway.metrics_queries[0] == {"include_bias_detection": ["true"], "include_precision_recall": ["true"]}
    passed = event(events, "validation_passed")
    assert passed["gate_source"] == "platform-reported" and passed["model_version_id"] == NEW_VERSION
    completed = event(events, "retrain_completed")
    assert completed["outcome"] == "promoted"
    for name in ("retrain_initiated", "training_submitted"):
        event(events, name)

    run_data = MlflowClient(mlflow_server.url).get_run(completed["mlflow_run_id"]).data
    seven = ("training_latency_seconds", "accuracy_delta", "precision", "recall", "f1_score", "bias_score",
             "dataset_size")  # fmt: skip
    assert set(seven) <= set(run_data.metrics), sorted(run_data.metrics)
    assert run_data.metrics["precision"] == 0.97 and run_data.metrics["bias_score"] == 0.05
    assert run_data.metrics["accuracy_delta"] == pytest.approx(0.965 - 0.85)
    assert run_data.metrics["dataset_size"] == 570
    tags = run_data.tags
    assert (tags["model_id"], tags["version_id"], tags["retrain_trigger"], tags["status"]) == (
        MODEL_ID, NEW_VERSION, "manual", "promoted")  # fmt: skip
    assert tags["gate_source"] == "platform-reported"


@pytest.mark.parametrize("gateway", [{"metrics": BAD}], indirect=True)
def test_bad_metrics_are_a_verdict_and_roll_back_once(airflow_home, mlflow_server, gateway, tmp_path: Path) -> None:
    state, events, text = run(airflow_home, tmp_path, gateway)
    assert state == "success", text[-3000:]
    only_the_five_calls(gateway, rollbacks=1)
    assert gateway.bodies[ROLLBACK] == [{"target_version_id": ROLLBACK_VERSION}]
    failed = event(events, "validation_failed")
    assert failed["gate_source"] == "platform-reported"
    assert "precision" in failed["reason"] and "bias_score" in failed["reason"], failed["reason"]
    event(events, "rollback_triggered")
    assert event(events, "rollback_verified")["rollback_version_id"] == ROLLBACK_VERSION
    assert event(events, "retrain_completed")["outcome"] == "rejected_rolled_back"
    assert "[VALIDATION] precision 0.9100" in text and "[VALIDATION] bias_score 0.2200" in text


@pytest.mark.parametrize("gateway", [{"metrics": GOOD, "job_end": "failed"}], indirect=True)
def test_a_failed_job_fails_the_run_after_auditing_it(airflow_home, mlflow_server, gateway, tmp_path: Path) -> None:
    state, events, text = run(airflow_home, tmp_path, gateway)
    assert state == "failed", text[-3000:]
    only_the_five_calls(gateway, rollbacks=1)  # back to rollbackTriggerVersionId, as after bad metrics
    assert METRICS not in gateway.calls()  # a failed job has no version to judge
    completed = event(events, "retrain_completed")
    assert completed["outcome"] == "training_failed_rolled_back" and completed["training_state"] == "failed"
