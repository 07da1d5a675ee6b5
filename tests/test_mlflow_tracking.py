"""MLflow sync and outbox against a real MLflow tracking server (fixture ``mlflow_server``)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from devtools.servers import Server, free_port
from include.records.mlflow_tracking import (
    MlflowAuth,
    RegistryAction,
    SyncPayload,
    flatten_params,
    rollback_champion,
    sync,
)
from include.records.outbox import Outbox


@pytest.fixture
def names() -> dict[str, str]:
    """Names unique to one test, so tests sharing the session server do not see each other."""
    suffix = uuid.uuid4().hex[:8]
    return {"experiment": f"cognigy-retrain-{suffix}", "model": f"cognigy-customer-service-en-US-{suffix}"}


def _client(server: Server) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def _artifacts(tmp_path: Path) -> dict[str, str]:
    gate = tmp_path / "gate_report.json"
    gate.write_text(json.dumps({"passed": True, "macro_f1": 0.91}))
    request = tmp_path / "req.json"  # uploaded under another name than the file's
    request.write_text(json.dumps({"locale": "en-US"}))
    return {"gate_report.json": str(gate), "request/request.json": str(request)}


def _payload(
    names: dict[str, str],
    tmp_path: Path,
    *,
    run_id: str,
    version_key: str,
    promote: bool,
    f1: float = 0.91,
    status: str = "FINISHED",
) -> SyncPayload:
    request = {"project": "p-1", "flow": "f-1", "locale": "en-US", "gates": {"min_macro_f1": 0.8}}
    return SyncPayload(
        run_key=f"cognigy_retrain/{run_id}",
        experiment=names["experiment"],
        run_name=f"retrain en-US {run_id}",
        params=flatten_params(request),
        metrics={"macro_f1": f1, "accuracy": 0.93},
        tags={"cognigy_project": "p-1", "locale": "en-US"},
        artifacts=_artifacts(tmp_path),
        status=status,  # type: ignore[arg-type]
        registry=RegistryAction(
            model_name=names["model"],
            source=f"cognigy://p-1/f-1/en-US/{version_key}",
            version_key=version_key,
            tags={"cognigy_console_url": "https://cognigy.example/p-1"},
            promote=promote,
        ),
    )


def _runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_sync_is_idempotent_and_manages_champion(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    client = _client(mlflow_server)
    first_payload = _payload(names, tmp_path, run_id="manual__2026-01-01T00:00:00+00:00", version_key="task-1",
                             promote=True)  # fmt: skip

    first = sync(first_payload, mlflow_server.url)
    again = sync(SyncPayload.from_json(first_payload.to_json()), mlflow_server.url)  # an Airflow retry

    assert first.created_run and not again.created_run
    assert again.run_id == first.run_id
    assert first.run_url == f"{mlflow_server.url}/#/experiments/{first.experiment_id}/runs/{first.run_id}"
    runs = _runs(client, names["experiment"])
    assert [r.info.run_id for r in runs] == [first.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "retrain en-US manual__2026-01-01T00:00:00+00:00"
    assert run.data.tags["airflow_run_key"] == "cognigy_retrain/manual__2026-01-01T00:00:00+00:00"
    assert run.data.params["gates.min_macro_f1"] == "0.8" and run.data.params["locale"] == "en-US"
    assert run.data.metrics == {"macro_f1": 0.91, "accuracy": 0.93}
    assert len(client.get_metric_history(first.run_id, "macro_f1")) == 1
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert artifacts == {"gate_report.json", "request"}
    assert [a.path for a in client.list_artifacts(first.run_id, "request")] == ["request/request.json"]

    versions = client.search_model_versions(f"name='{names['model']}'")
    assert [v.version for v in versions] == ["1"]
    assert versions[0].source == "cognigy://p-1/f-1/en-US/task-1"
    assert versions[0].tags["cognigy_version_key"] == "task-1"
    assert first.model_version == again.model_version == "1"
    assert first.champion_version == again.champion_version == "1"
    assert client.get_registered_model(names["model"]).aliases == {"champion": "1", "challenger": "1"}

    # A second training that did not pass the gates: new version, challenger moves, champion stays.
    second = sync(
        _payload(names, tmp_path, run_id="manual__2026-01-02", version_key="task-2", promote=False, f1=0.7),
        mlflow_server.url,
    )
    assert second.created_run and second.run_id != first.run_id
    assert (second.model_version, second.champion_version, second.previous_champion_version) == ("2", "1", "1")
    assert client.get_registered_model(names["model"]).aliases == {"champion": "1", "challenger": "2"}
    assert client.get_run(second.run_id).data.tags["previous_champion_version"] == "1"

    # A third one is promoted, then rolled back later: champion returns to the version it replaced.
    third = sync(
        _payload(names, tmp_path, run_id="manual__2026-01-03", version_key="task-3", promote=True),
        mlflow_server.url,
    )
    assert (third.model_version, third.champion_version, third.previous_champion_version) == ("3", "3", "1")
    left = rollback_champion(names["model"], third.previous_champion_version, mlflow_server.url)
    assert left == "3"
    assert client.get_registered_model(names["model"]).aliases == {"champion": "1", "challenger": "3"}
    assert client.get_model_version(names["model"], "3").tags["champion_rolled_back_to"] == "1"
    assert len(_runs(client, names["experiment"])) == 3


def test_resync_after_outcome_changed_hands_champion_back(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    """A run synced as promoted, then re-synced as not promoted (post-deploy check failed)."""
    client = _client(mlflow_server)
    sync(_payload(names, tmp_path, run_id="r1", version_key="t1", promote=True), mlflow_server.url)
    promoted = sync(_payload(names, tmp_path, run_id="r2", version_key="t2", promote=True), mlflow_server.url)
    assert promoted.champion_version == "2"

    demoted = sync(
        _payload(names, tmp_path, run_id="r2", version_key="t2", promote=False, status="FAILED"),
        mlflow_server.url,
    )
    assert demoted.run_id == promoted.run_id and demoted.model_version == "2"
    assert demoted.champion_version == "1"
    assert client.get_registered_model(names["model"]).aliases == {"champion": "1", "challenger": "2"}
    assert client.get_run(promoted.run_id).info.status == "FAILED"


def test_many_params_and_metrics_are_chunked(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    payload = SyncPayload(
        run_key="cognigy_retrain/big",
        experiment=names["experiment"],
        run_name="big",
        params={f"intent.{i:03d}.examples": str(i) for i in range(250)},
        metrics={f"f1.intent_{i:04d}": i / 2000 for i in range(1500)},
        tags={},
        artifacts={},
        status="FINISHED",
        registry=None,
    )
    result = sync(payload, mlflow_server.url)
    sync(payload, mlflow_server.url)
    run = _client(mlflow_server).get_run(result.run_id)
    assert len(run.data.params) == 250 and len(run.data.metrics) == 1500
    assert result.model_version is None and result.champion_version is None


def test_changed_param_on_resync_does_not_fail(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    payload = _payload(names, tmp_path, run_id="r1", version_key="t1", promote=False)
    first = sync(payload, mlflow_server.url)
    payload.params["locale"] = "en-GB"
    payload.metrics["macro_f1"] = 0.95
    second = sync(payload, mlflow_server.url)
    run = _client(mlflow_server).get_run(second.run_id)
    assert second.run_id == first.run_id
    assert run.data.params["locale"] == "en-US"  # MLflow params are immutable: the first value stays
    assert run.data.tags["mlflow_sync.param_conflicts"] == "locale"
    assert run.data.metrics["macro_f1"] == 0.95  # metrics may change; the latest value wins


def test_secrets_never_reach_mlflow(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    token = "mlflow-token-" + uuid.uuid4().hex
    payload = _payload(names, tmp_path, run_id="r-secret", version_key="t-secret", promote=False)
    payload.params.update(
        {"cognigy.api_key": "sk-live-123456", "auth.client_secret": "cs-987", "note": f"token was {token}"}
    )
    payload.tags["Authorization"] = "Bearer abc.def"
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}

    # The test server has no auth, so it ignores the bearer token; what matters is what gets stored.
    result = sync(payload, mlflow_server.url, auth=MlflowAuth(token=token))

    assert {k: os.environ.get(k) for k in before} == before  # environment restored
    run = _client(mlflow_server).get_run(result.run_id)
    assert run.data.params["cognigy.api_key"] == "***"
    assert run.data.params["auth.client_secret"] == "***"
    assert run.data.params["note"] == "token was ***"
    assert run.data.tags["Authorization"] == "***"
    stored = json.dumps([run.data.params, run.data.tags])
    for secret in ("sk-live-123456", "cs-987", token, "abc.def"):
        assert secret not in stored
    assert token not in repr(MlflowAuth(token=token))
    assert "pw" not in repr(MlflowAuth(username="u", password="pw"))


def test_auth_env_is_applied_only_during_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.records.mlflow_tracking import mlflow_session

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "outer-token")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    with mlflow_session("http://127.0.0.1:1", MlflowAuth(username="u", password="p", ca_bundle="/ca.pem")):
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "u"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p"
        assert os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/ca.pem"
        assert "MLFLOW_TRACKING_TOKEN" not in os.environ  # the auth given is the only auth used
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "outer-token"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ
    with pytest.raises(ValueError):
        MlflowAuth(insecure_tls=True, ca_bundle="/ca.pem")


def test_payload_rejects_values_mlflow_would_truncate() -> None:
    with pytest.raises(ValueError, match="artifact"):
        SyncPayload(run_key="d/r", experiment="e", run_name="n", params={"examples": "x" * 6001})
    flat = flatten_params({"examples": ["utterance"] * 1000, "locale": "en-US", "dry_run": False, "x": None})
    assert flat["examples"].startswith("<") and "request.json" in flat["examples"]
    assert (flat["locale"], flat["dry_run"], flat["x"]) == ("en-US", "false", "null")


def test_mlflow_down_goes_to_outbox_then_resyncs_once(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    client = _client(mlflow_server)
    work = tmp_path / "task-tmp"
    work.mkdir()
    payload = _payload(names, work, run_id="scheduled__2026-02-01", version_key="task-9", promote=True)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - MlflowException or a connection error, both fine
        sync(payload, dead)
    assert time.monotonic() - started < 10, "the client must not retry for minutes"

    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.put(payload)
    assert entry.exists()
    # The task's temporary files disappear; the outbox kept its own copies.
    for path in work.iterdir():
        path.unlink()
    assert [p.run_key for p in outbox.pending()] == [payload.run_key]

    assert outbox.resync(dead) == []  # still down: the entry stays
    assert len(outbox.pending()) == 1

    results = outbox.resync(mlflow_server.url)
    assert len(results) == 1 and results[0].created_run
    assert outbox.pending() == []
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir() if not p.name.startswith(".")) == []
    assert outbox.resync(mlflow_server.url) == []

    runs = _runs(client, names["experiment"])
    assert [r.info.run_id for r in runs] == [results[0].run_id]
    assert {a.path for a in client.list_artifacts(results[0].run_id)} == {"gate_report.json", "request"}
    assert len(client.search_model_versions(f"name='{names['model']}'")) == 1


def test_outbox_put_replaces_and_done_removes(tmp_path: Path, names: dict) -> None:
    outbox = Outbox(tmp_path / "outbox")
    first = _payload(names, tmp_path, run_id="r1", version_key="t1", promote=False)
    outbox.put(first)
    second = _payload(names, tmp_path, run_id="r1", version_key="t1", promote=True, f1=0.97)
    outbox.put(second)
    other = _payload(names, tmp_path, run_id="r2", version_key="t2", promote=False)
    outbox.put(other)

    pending = {p.run_key: p for p in outbox.pending()}
    assert set(pending) == {first.run_key, other.run_key}
    assert pending[first.run_key].metrics["macro_f1"] == 0.97
    assert pending[first.run_key].registry.promote is True
    stored_gate = Path(pending[first.run_key].artifacts["gate_report.json"])
    assert stored_gate.parent.parent == outbox.dir and json.loads(stored_gate.read_text())["passed"] is True

    outbox.done(first.run_key)
    assert [p.run_key for p in outbox.pending()] == [other.run_key]
    assert not stored_gate.exists()
    outbox.done("never/stored")


def test_demoting_the_only_version_removes_champion(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    client = _client(mlflow_server)
    sync(_payload(names, tmp_path, run_id="r1", version_key="t1", promote=True), mlflow_server.url)
    demoted = sync(_payload(names, tmp_path, run_id="r1", version_key="t1", promote=False), mlflow_server.url)
    assert demoted.champion_version is None and demoted.previous_champion_version is None
    assert client.get_registered_model(names["model"]).aliases == {"challenger": "1"}


def test_the_audit_head_is_anchored_on_the_mlflow_run(mlflow_server: Server, names: dict, tmp_path: Path) -> None:
    """Issue 26, item 5: the run carries the seq and hash of its audit record; `verify --mlflow-uri` reads them."""
    from include.records.audit import AuditLog, main, verify
    from include.records.mlflow_tracking import AUDIT_HEAD_HASH_TAG, anchor_audit_head, audit_anchors

    key = "mlflow-anchor-test-key-0123456789"
    log = AuditLog(tmp_path / "audit.jsonl", key=key)
    log.append("retrain_initiated", run_id="a")
    result = sync(_payload(names, tmp_path, run_id="a", version_key="v-a", promote=False), mlflow_server.url)
    synced = log.append("mlflow_synced", run_id="a", mlflow_run_id=result.run_id)
    anchor_audit_head(mlflow_server.url, result.run_id, synced)

    tags = _client(mlflow_server).get_run(result.run_id).data.tags
    assert (tags["audit_head_seq"], tags[AUDIT_HEAD_HASH_TAG], tags["audit_key_id"]) == (
        "2", synced["hash"], synced["key_id"])  # fmt: skip
    anchors = audit_anchors(mlflow_server.url, names["experiment"])
    assert anchors == [{"seq": 2, "hash": synced["hash"], "source": f"MLflow run {result.run_id}"}]
    assert verify(log.path, keys=[key], anchors=anchors).tamper_evident
    key_file = tmp_path.parent / f"{tmp_path.name}-key"
    key_file.write_text(key)
    args = ["verify", str(log.path), "--key-file", str(key_file), "--mlflow-uri", mlflow_server.url]
    assert main([*args, "--experiment", names["experiment"]]) == 0

    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text(lines[0])  # the tail removed: the anchor says so
    assert main([*args, "--experiment", names["experiment"]]) == 1
