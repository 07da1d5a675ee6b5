"""The state store (include/state/state_store.py) on local disk AND on real object-store APIs on 127.0.0.1: S3
(moto in server mode), Google Cloud Storage (fake-gcs-server) and Azure Blob Storage (Azurite; its tests are skipped
on a machine without Node.js).

Each server is one process for this test session (tests/fixtures_s3.py, tests/fixtures_blob_stores.py, devtools/:
free port, stopped at the end); the store is reached the way a deployment reaches it, through
``COGNIGY_RETRAIN_STATE_URI=<s3|gs|abfs>://<conn_id>@<bucket>/<prefix>`` and an Airflow connection
(``AIRFLOW_CONN_<ID>``) opened by ``ObjectStoragePath``. "Workers" are separate processes with local state folders
of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from cognigy_airflow import state_storage
from devtools import azurite, gcs
from devtools.s3 import ACCESS_KEY, BUCKET, CONN_ID, SECRET_KEY, s3_uri
from devtools.servers import ROOT, Server
from include import settings
from include.records.mlflow_tracking import SyncPayload
from include.records.outbox import Outbox
from include.state import state_store

pytest_plugins = ["tests.fixtures_s3", "tests.fixtures_blob_stores"]

STORES = ["s3", "gs", "abfs"]
SERVER = {"s3": "s3_server", "gs": "gcs_server", "abfs": "azurite_server"}
URI = {"s3": s3_uri, "gs": gcs.gs_uri, "abfs": azurite.abfs_uri}
CONN = {"s3": CONN_ID, "gs": gcs.CONN_ID, "abfs": azurite.CONN_ID}
SECRETS = [SECRET_KEY, ACCESS_KEY, azurite.ACCOUNT_KEY]


def store_uri(request: pytest.FixtureRequest, store: str) -> str:
    """A fresh state root URI in `store`, its server started (once a session)."""
    request.getfixturevalue(SERVER[store])
    return URI[store]()


@pytest.fixture(params=["local", *STORES])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh state root: a local folder, or a prefix in the S3 / GCS bucket or the Azure container (an
    ObjectStoragePath, opened as the plugins open COGNIGY_RETRAIN_STATE_URI)."""
    if request.param == "local":
        return tmp_path / "state"
    return state_storage.open_uri(store_uri(request, request.param))


# --- the store's operations ------------------------------------------------------------------------------
def test_default_is_the_local_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COGNIGY_RETRAIN_STATE_URI", raising=False)
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path / "here"))
    assert state_store.root() == tmp_path / "here"
    assert settings.run_dir("d", "r", "t").is_relative_to(tmp_path / "here" / "runs")
    assert settings.outbox_dir() == tmp_path / "here" / "mlflow_outbox"
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_URI", (tmp_path / "uri").as_uri())
    assert state_store.root() == tmp_path / "uri"  # a file:// URI is the local form too


def test_the_connection_comes_from_the_uri_or_the_setting(
    s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"{BUCKET}/conn-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_URI", f"s3://{prefix}")
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_CONN_ID", CONN_ID)
    state_store.write_text(state_store.root() / "x.txt", "via the setting")
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_CONN_ID", "no_such_connection")  # the URI's connection wins
    assert state_store.read_text(state_storage.open_uri(f"s3://{CONN_ID}@{prefix}") / "x.txt") == "via the setting"
    assert str(state_store.root()).startswith("s3://no_such_connection@")


def test_read_write_list_delete(root: Any) -> None:
    folder = root / "runs" / "a"
    state_store.ensure_dir(folder)
    assert not state_store.exists(folder / "x.json") and state_store.read_json(folder / "x.json") is None
    state_store.write_json(folder / "x.json", {"v": 1})
    state_store.write_json(folder / "x.json", {"v": 2})  # replaced whole
    state_store.write_text(folder / "y.txt", "why")
    assert state_store.read_json(folder / "x.json") == {"v": 2}
    assert state_store.read_text(folder / "y.txt") == "why"
    assert [n for n in state_store.list_names(folder) if not n.startswith(".")] == ["x.json", "y.txt"]
    assert state_store.list_names(root / "runs") == ["a"] and state_store.list_names(root / "nothing") == []
    assert state_store.modified(folder / "x.json") > 0
    state_store.delete(folder / "x.json")
    state_store.delete(folder / "x.json")  # gone already: no error
    assert not state_store.exists(folder / "x.json")
    with pytest.raises(FileNotFoundError):
        state_store.read_bytes(folder / "x.json")


def test_create_exclusive_lets_exactly_one_of_racing_writers_win(root: Any) -> None:
    """Eight writers start together on one name, five rounds: each round exactly one creates it, with its content."""
    for round_ in range(5):
        path = root / "leases" / f"{round_:010d}"
        barrier = threading.Barrier(8)
        won: list[int] = []
        errors: list[BaseException] = []

        def write(me: int, path: Any = path, barrier: Any = barrier, won: list = won, errors: list = errors) -> None:
            barrier.wait()
            try:
                if state_store.create_exclusive(path, f"writer {me}".encode()):
                    won.append(me)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and len(won) == 1, (won, errors)
        assert state_store.read_text(path) == f"writer {won[0]}"
        assert not state_store.create_exclusive(path, b"late")  # and nobody after
        assert state_store.read_text(path) == f"writer {won[0]}"


def test_rollback_point_round_trip_with_checksum(root: Any) -> None:
    from cognigy_airflow import run_files

    point = {"kind": "intents-export", "fingerprint": "f" * 64, "intents": [{"name": "a", "exampleSentences": ["x"]}]}
    data = json.dumps(point).encode()
    path = root / "runs" / "r1" / "rollback_point.json"
    stored, created = state_store.create_or_read_verified(path, data)
    assert created and stored == data
    # A retry (or a racing try) never overwrites it: it gets the first capture back.
    again, created = state_store.create_or_read_verified(path, json.dumps({**point, "fingerprint": "later"}).encode())
    assert not created and again == data
    captured = {"rollback_point_path": str(path), "rollback_point_sha256": state_store.sha256(data)}
    assert run_files.read_rollback_point(captured) == point  # read back by the rollback task, checksum checked
    # The object changed after capture (a real overwrite): whoever reads it refuses to restore from it.
    state_store.write_bytes(path, json.dumps({**point, "fingerprint": "tampered"}).encode())
    with pytest.raises(Exception, match="changed since it was captured"):
        run_files.read_rollback_point(captured)


def test_a_read_back_that_differs_fails_clearly(root: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that answers with other bytes than were written (a fault no real part here produces on demand,
    so the read is replaced for this test only) makes the capture fail before any change to Cognigy."""
    real = state_store.read_bytes
    monkeypatch.setattr(state_store, "read_bytes", lambda p: real(p)[:-1] + b" ")
    with pytest.raises(state_store.StateNotIntact, match="did not read back intact"):
        state_store.create_or_read_verified(root / "rollback_point.json", b'{"fingerprint": "abc"}')


def test_a_store_without_atomic_create_is_refused() -> None:
    from airflow.sdk import ObjectStoragePath

    with pytest.raises(state_store.StateStoreUnsupported, match=r"COGNIGY_RETRAIN_STATE_URI=memory://.*atomic create"):
        state_store.create_exclusive(ObjectStoragePath("memory://cognigy/lease"), b"x")


def test_a_supported_scheme_served_by_another_file_system_is_refused() -> None:
    """gs:// served by a file system whose create-if-absent was not verified (here fsspec's in-memory one under
    a connection of its own): refused, naming the setting and the scheme; nothing is written."""
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("gs", "not_gcsfs", fs=MemoryFileSystem())
    path = ObjectStoragePath("gs://not_gcsfs@bucket/lease")
    with pytest.raises(state_store.StateStoreUnsupported, match=r"COGNIGY_RETRAIN_STATE_URI=gs://.*only gcsfs"):
        state_store.create_exclusive(path, b"x")
    assert not path.fs.exists(path.path)


@pytest.mark.parametrize("store", STORES)
def test_the_store_is_an_object_storage_path_of_its_client(request: pytest.FixtureRequest, store: str) -> None:
    """The URI opens as Airflow's ObjectStoragePath with the connection it names, served by s3fs / gcsfs / adlfs
    (no Google or Azure Airflow provider installed), and a path kept as text (XCom) opens to the same object."""
    from airflow.sdk import ObjectStoragePath

    uri = store_uri(request, store)
    path = state_storage.open_uri(uri) / "runs" / "r" / "x.json"
    assert isinstance(path, ObjectStoragePath) and path.conn_id == CONN[store]
    assert type(path.fs).__module__.split(".")[0] == state_store.ATOMIC_CREATE[store]
    assert str(path).startswith(uri.split("://")[0] + "://")
    assert state_store.create_exclusive(path, b'{"a": 1}')
    assert state_store.read_json(state_store.path_of(str(path))) == {"a": 1}


def test_az_is_the_same_azure_store(azurite_server: dict[str, str]) -> None:
    """az:// (adlfs's other name) reaches the same container as abfs:// and creates atomically too."""
    uri = azurite.abfs_uri(scheme="az")
    as_az = state_storage.open_uri(uri) / "lease"
    assert state_store.create_exclusive(as_az, b"first") and not state_store.create_exclusive(as_az, b"second")
    as_abfs = state_storage.open_uri(uri.replace("az://", "abfs://", 1)) / "lease"
    assert state_store.read_bytes(as_abfs) == b"first"
    assert not state_store.create_exclusive(as_abfs, b"third")


@pytest.mark.parametrize("store", STORES)
def test_no_secret_in_paths_or_errors(request: pytest.FixtureRequest, store: str) -> None:
    uri = store_uri(request, store)
    scheme, rest = uri.split("://", 1)
    conn = rest.split("@", 1)[0]
    path = state_storage.open_uri(f"{scheme}://{conn}@no-such-bucket/x") / "y.json"
    assert not [secret for secret in SECRETS if secret in str(path)]
    with pytest.raises(Exception) as caught:
        state_store.read_bytes(path)
    assert not [secret for secret in SECRETS if secret in str(caught.value) + repr(caught.value)]


# --- the MLflow outbox in the store ----------------------------------------------------------------------
def _payload(root: Any, tmp_path: Path, run_id: str) -> SyncPayload:
    in_store = root / "runs" / run_id / "report" / "gate_report.json"  # a run folder's report, in the store
    state_store.write_json(in_store, {"passed": True})
    local = tmp_path / f"{run_id}-request.json"
    local.write_text('{"request": 1}')
    return SyncPayload(
        run_key=f"cognigy_nlu_retrain/{run_id}/proj/flow/en-US",
        experiment=f"state-store-{uuid.uuid4().hex[:8]}",
        run_name=run_id,
        metrics={"accuracy": 0.9},
        tags={"status": "promoted"},
        artifacts={"gate_report.json": str(in_store), "request.json": str(local)},
    )


def test_outbox_entry_written_leased_and_pushed_by_the_resync_path(
    root: Any, tmp_path: Path, mlflow_server: Server
) -> None:
    """The retrain's task puts an entry (and holds its lease); the resync skips it while the task holds it, and
    pushes it to a real MLflow once the task released it (the task deferred to the resync DAG)."""
    import mlflow

    outbox_dir = root / "mlflow_outbox"
    task = Outbox(outbox_dir)
    payload = _payload(root, tmp_path, f"run-{uuid.uuid4().hex[:6]}")
    entry = task.put(payload)
    assert state_store.exists(entry)
    stored = task.pending()
    assert [p.run_key for p in stored] == [payload.run_key]
    assert all(str(outbox_dir) in loc for loc in stored[0].artifacts.values())  # private copies, in the store

    resync = Outbox(outbox_dir)  # another process's instance (the resync DAG's task)
    assert resync.in_flight() == [payload.run_key]
    assert resync.resync(mlflow_server.url) == [] and len(resync.pending()) == 1  # leased: skipped

    task.release(payload.run_key)
    results = resync.resync(mlflow_server.url)
    assert len(results) == 1
    assert resync.pending() == [] and not state_store.exists(entry)
    assert not [n for n in state_store.list_names(outbox_dir) if n.endswith(".artifacts")]
    client = mlflow.MlflowClient(mlflow_server.url)
    logged = sorted(a.path for a in client.list_artifacts(results[0].run_id))
    assert logged == ["gate_report.json", "request.json"]


def test_outbox_done_clears_the_entry_and_its_lease(root: Any, tmp_path: Path) -> None:
    outbox = Outbox(root / "mlflow_outbox")
    payload = _payload(root, tmp_path, "done")
    outbox.put(payload)
    outbox.done(payload.run_key)
    assert outbox.pending() == [] and Outbox(root / "mlflow_outbox").in_flight() == []


# --- two workers that share no disk ----------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, sys
    import cognigy_airflow  # the plugins open s3://, gs:// and abfs:// state
    from cognigy_airflow import submission
    from cognigy_airflow.run_state import RunState
    from include import settings
    from include.state import state_store, target_memory

    role = sys.argv[1]
    folder = settings.run_dir("cognigy_nlu_retrain", "manual__shared", "proj/flow/en-US", "c0-attempt")
    state = RunState({}, folder / "submit_state.json")
    if role == "first":
        state.set("submit.job_id", "job-from-worker-1")
        lease = submission.take_lease(submission.lease_folder(state, "submit"), wait=0)
        target_memory.record_trained("proj/flow/en-US", "fp-1", "manual__shared")
        state_store.create_or_read_verified(folder / "rollback_point.json", b'{"fingerprint": "fp-1"}')
        print(json.dumps({"folder": str(folder), "generation": lease.generation}))
    else:
        lease = submission.take_lease(submission.lease_folder(state, "submit"), wait=0)
        print(json.dumps({
            "job_id": state.get("submit.job_id"),
            "last_trained": target_memory.last_trained("proj/flow/en-US")["fingerprint"],
            "point": state_store.read_json(folder / "rollback_point.json"),
            "generation": lease.generation,
        }))
    """
)


def _worker(role: str, uri: str, state_dir: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        "COGNIGY_RETRAIN_STATE_URI": uri,
        "COGNIGY_RETRAIN_STATE_DIR": str(state_dir),
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER, role], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [secret for secret in SECRETS if secret in done.stdout + done.stderr]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])  # past any log line


@pytest.mark.parametrize("store", STORES)
def test_state_written_by_one_worker_is_read_by_another(
    request: pytest.FixtureRequest, store: str, tmp_path: Path
) -> None:
    """Two processes with different local state folders share only the object store: the second sees the first's
    task state, target memory and rollback point, and takes the submission lease the first one left behind."""
    uri = store_uri(request, store)
    first = _worker("first", uri, tmp_path / "worker1")
    assert first["folder"].startswith(uri + "/") and first["generation"] == 1
    second = _worker("second", uri, tmp_path / "worker2")
    assert second == {
        "job_id": "job-from-worker-1",
        "last_trained": "fp-1",
        "point": {"fingerprint": "fp-1"},
        "generation": 2,  # the next generation: the first worker's lease is void (released at exit, process gone)
    }
    for local in (tmp_path / "worker1", tmp_path / "worker2"):  # nothing of the run on either worker's disk
        assert not any(local.rglob("*")) if local.exists() else True


# --- the pipeline with its state in S3 -------------------------------------------------------------------
def test_pipeline_keeps_its_run_state_in_s3_and_none_on_local_disk(
    emulator: Any, s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """validate → capture → submit → wait_for_training → evaluate → decide (→ release → confirm | rollback) → audit
    in process (the fault matrix's
    harness) with COGNIGY_RETRAIN_STATE_URI=s3://…: every run file is in the bucket, the rollback point reads
    back with its checksum, and the worker's local state folder holds only the local-only audit log."""
    from cognigy_airflow import run_files
    from tests.test_fault_matrix import (
        Run,
        assert_carried_through,
        audit_events,
        new_data_fingerprint,
        pipeline,
        use_connection,
    )

    emulator.reset()
    use_connection(monkeypatch, emulator)
    local = tmp_path / "worker-state"
    uri = s3_uri()
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(local))
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_URI", uri)
    # One machine: the per-host audit file and rate budget are shared by every process (validate refuses them
    # with remote state unless a deployment says so).
    monkeypatch.setenv("COGNIGY_RETRAIN_SINGLE_HOST", "true")
    out = pipeline(Run("manual__s3_state"))

    point_path = out.captured["rollback_point_path"]
    assert point_path.startswith(f"s3://{CONN_ID}@{BUCKET}/") and out.captured["rollback_point_sha256"]
    point = run_files.read_rollback_point(out.captured)
    assert point["fingerprint"] == out.captured["fingerprint"]
    folder = state_store.path_of(point_path).parent
    written = set(state_store.list_names(folder))
    assert {"rollback_point.json", "champion_predictions.jsonl", "submit_state.json", "submit.lease"} <= written
    assert {"challenger_predictions.jsonl", "report", "outcome.json", "facts.json"} <= written
    assert "gate_report.json" in state_store.list_names(folder / "report")
    assert state_store.read_json(folder / "outcome.json")["outcome"] == out.final["outcome"]

    events = audit_events(local, "manual__s3_state")
    assert_carried_through(events, emulator, new_data_fingerprint(out.plan), point["fingerprint"])
    leftovers = sorted(p.relative_to(local).parts[0] for p in local.rglob("*")) if local.exists() else []
    assert set(leftovers) <= {"audit", "rate_limit"}, leftovers  # no runs/, targets/, mlflow_outbox/ here
