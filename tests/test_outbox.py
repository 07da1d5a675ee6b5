"""The MLflow outbox's leases: the retrain task's own push and the resync DAG never push one entry at once.

Every test runs the competing parties in separate processes (as Airflow does); the MLflow push is replaced by a
recorder that notes when each push starts and ends, so overlap is visible without an MLflow server.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

import include.records.outbox as outbox_module
from include.records.mlflow_tracking import SyncPayload
from include.records.outbox import Outbox

CTX = multiprocessing.get_context("fork")  # the children only run this module's functions
PUSH_SECONDS = 0.8


def _payload(tmp: Path, run_id: str, value: float = 1.0) -> SyncPayload:
    artifact = tmp / f"{run_id}-report.json"
    artifact.write_text(json.dumps({"value": value}))
    return SyncPayload(
        run_key=f"cognigy_nlu_retrain/{run_id}",
        experiment="outbox-test",
        run_name=run_id,
        metrics={"value": value},
        artifacts={"report.json": str(artifact)},
    )


def _record(log: Path, who: str, payload: SyncPayload, started: Any = None) -> None:
    """The push: note start and end in `log` (one JSON line each, atomic appends), sleep in between."""
    with open(log, "a") as fh:
        fh.write(json.dumps({"who": who, "run_key": payload.run_key, "at": time.monotonic(), "edge": "start"}) + "\n")
    if started is not None:
        started.set()
    time.sleep(PUSH_SECONDS)
    # The artifacts must still be there while the push reads them.
    assert all(Path(p).exists() for p in payload.artifacts.values())
    with open(log, "a") as fh:
        fh.write(json.dumps({"who": who, "run_key": payload.run_key, "at": time.monotonic(), "edge": "end"}) + "\n")


def _pushes(log: Path) -> list[dict[str, Any]]:
    """[{who, run_key, start, end}] from the recorder's log."""
    open_: dict[tuple[str, str], float] = {}
    done = []
    for line in log.read_text().splitlines() if log.exists() else []:
        item = json.loads(line)
        key = (item["who"], item["run_key"])
        if item["edge"] == "start":
            open_[key] = item["at"]
        else:
            done.append({"who": item["who"], "run_key": item["run_key"], "start": open_.pop(key), "end": item["at"]})
    assert not open_, f"pushes that never ended: {open_}"
    return done


def _assert_no_overlap(pushes: list[dict[str, Any]]) -> None:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for push in pushes:
        by_key.setdefault(push["run_key"], []).append(push)
    for key, items in by_key.items():
        items.sort(key=lambda p: p["start"])
        for before, after in itertools.pairwise(items):
            assert after["start"] >= before["end"], f"{key} pushed concurrently: {before} and {after}"


def _resync_process(directory: str, log: str, who: str, go: Any, results: Any, lease: float | None = None) -> None:
    outbox_module.sync = lambda payload, uri, auth=None: _record(Path(log), who, payload)  # type: ignore[assignment]
    if go is not None:
        go.wait(30)
    outbox = Outbox(directory) if lease is None else Outbox(directory, lease_seconds=lease)
    pushed = outbox.resync("http://mlflow.invalid")
    results.put((who, len(pushed)))


def _task_process(directory: str, log: str, payload: SyncPayload, put_done: Any, wait_for: Any, defer: bool) -> None:
    """What `mlflow_sync` does: put, push itself, done (or, deferring, leave the entry to the resync)."""
    if wait_for is not None:
        wait_for.wait(30)
    outbox = Outbox(directory)
    outbox.put(payload)
    put_done.set()
    if defer:
        return  # MLflow was down on every try: the entry waits; the process ends
    _record(Path(log), "task", payload)
    outbox.done(payload.run_key)


def _seed_process(directory: str, payloads: list[SyncPayload]) -> None:
    outbox = Outbox(directory)
    for payload in payloads:
        outbox.put(payload)


def _run(*procs: Any) -> None:
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0, proc


def _results(queue: Any, n: int) -> dict[str, int]:
    return dict(queue.get(timeout=10) for _ in range(n))


def test_resync_does_not_push_an_entry_the_task_is_pushing(tmp_path: Path) -> None:
    directory, log = tmp_path / "outbox", tmp_path / "pushes.jsonl"
    payload = _payload(tmp_path, "r1")
    put_done, results = CTX.Event(), CTX.Queue()
    task = CTX.Process(target=_task_process, args=(str(directory), str(log), payload, put_done, None, False))
    resync = CTX.Process(target=_resync_process, args=(str(directory), str(log), "resync", put_done, results))
    _run(task, resync)

    pushes = _pushes(log)
    _assert_no_overlap(pushes)
    assert [p["who"] for p in pushes] == ["task"]  # the resync saw it in flight and left it alone
    assert _results(results, 1) == {"resync": 0}
    assert Outbox(directory).pending() == []
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == []


def _slow_resync_then_signal(directory: str, log: str, started: Any, results: Any) -> None:
    outbox_module.sync = lambda payload, uri, auth=None: _record(Path(log), "resync", payload, started)  # type: ignore[assignment]
    results.put(("resync", len(Outbox(directory).resync("http://mlflow.invalid"))))


def test_a_task_put_waits_for_a_resync_push_of_the_same_entry(tmp_path: Path) -> None:
    directory, log = tmp_path / "outbox", tmp_path / "pushes.jsonl"
    waiting = Outbox(directory)
    waiting.put(_payload(tmp_path, "r1"))  # left by an earlier, deferred run of the task
    waiting.release(_payload(tmp_path, "r1").run_key)

    started, put_done, results = CTX.Event(), CTX.Event(), CTX.Queue()
    newer = _payload(tmp_path, "r1", value=2.0)  # e.g. a cleared and re-run task: same run key
    resync = CTX.Process(target=_slow_resync_then_signal, args=(str(directory), str(log), started, results))
    task = CTX.Process(target=_task_process, args=(str(directory), str(log), newer, put_done, started, False))
    _run(resync, task)

    pushes = _pushes(log)
    _assert_no_overlap(pushes)
    assert [p["who"] for p in sorted(pushes, key=lambda p: p["start"])] == ["resync", "task"]
    assert _results(results, 1) == {"resync": 1}
    # The task's put waited until the resync had pushed and removed the old entry; the task then pushed its own.
    assert Outbox(directory).pending() == []


def test_two_resyncs_push_each_entry_once(tmp_path: Path) -> None:
    directory, log = tmp_path / "outbox", tmp_path / "pushes.jsonl"
    # Left by three deferred task runs whose processes have ended.
    _run(CTX.Process(target=_seed_process, args=(str(directory), [_payload(tmp_path, r) for r in ("r1", "r2", "r3")])))
    go, results = CTX.Event(), CTX.Queue()
    procs = [
        CTX.Process(target=_resync_process, args=(str(directory), str(log), who, go, results))
        for who in ("resync-a", "resync-b")
    ]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0

    pushes = _pushes(log)
    _assert_no_overlap(pushes)
    assert sorted(p["run_key"] for p in pushes) == [f"cognigy_nlu_retrain/r{i}" for i in (1, 2, 3)]
    assert sum(_results(results, 2).values()) == 3
    assert Outbox(directory).pending() == []


def test_a_deferred_entry_is_pushed_once_the_task_process_ended(tmp_path: Path) -> None:
    directory, log = tmp_path / "outbox", tmp_path / "pushes.jsonl"
    put_done, results = CTX.Event(), CTX.Queue()
    payload = _payload(tmp_path, "r1")
    _run(CTX.Process(target=_task_process, args=(str(directory), str(log), payload, put_done, None, True)))
    assert (directory / f"{Outbox._stem(payload.run_key)}.lease").exists()  # the task's lease, its process gone
    assert Outbox(directory).in_flight() == []

    _run(CTX.Process(target=_resync_process, args=(str(directory), str(log), "resync", None, results)))
    assert [p["who"] for p in _pushes(log)] == ["resync"] and _results(results, 1) == {"resync": 1}
    assert Outbox(directory).pending() == []


def test_a_live_holders_lease_blocks_the_resync_until_released_or_expired(tmp_path: Path) -> None:
    directory, log = tmp_path / "outbox", tmp_path / "pushes.jsonl"
    results = CTX.Queue()
    holder = Outbox(directory, lease_seconds=1.5)  # this process stays alive: only expiry or release frees it
    first, second = _payload(tmp_path, "r1"), _payload(tmp_path, "r2")
    holder.put(first)
    holder.put(second)
    assert sorted(Outbox(directory).in_flight()) == sorted([first.run_key, second.run_key])

    _run(CTX.Process(target=_resync_process, args=(str(directory), str(log), "early", None, results)))
    assert _pushes(log) == [] and _results(results, 1) == {"early": 0}

    holder.release(first.run_key)  # e.g. the task deferred to the resync
    _run(CTX.Process(target=_resync_process, args=(str(directory), str(log), "released", None, results)))
    assert [p["run_key"] for p in _pushes(log)] == [first.run_key]

    time.sleep(1.6)  # the other lease expired
    _run(CTX.Process(target=_resync_process, args=(str(directory), str(log), "expired", None, results)))
    assert [p["run_key"] for p in _pushes(log)] == [first.run_key, second.run_key]
    assert Outbox(directory).pending() == []


def test_a_torn_or_foreign_lease_file_does_not_block_forever(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    payload = _payload(tmp_path, "r1")
    outbox.put(payload)
    lease = outbox.dir / f"{Outbox._stem(payload.run_key)}.lease"
    lease.write_text('{"owner": "x", "kind": "resync", "exp')  # torn by a crash
    assert Outbox(outbox.dir).in_flight() == []
    # A resync lease of a process that ended on this host is void too.
    lease.write_text(json.dumps({"owner": "x", "kind": "resync", "host": outbox_module._host_id(),
                                 "pid": 2**22 + 7, "pid_start": "1", "expires": time.time() + 600}))  # fmt: skip
    assert Outbox(outbox.dir).in_flight() == []
    started = time.monotonic()
    Outbox(outbox.dir).put(payload)  # does not wait
    assert time.monotonic() - started < 5
    # A live one from another host is trusted until it expires.
    lease.write_text(json.dumps({"owner": "x", "kind": "resync", "host": "elsewhere", "pid": os.getpid(),
                                 "expires": time.time() + 600}))  # fmt: skip
    assert Outbox(outbox.dir).in_flight() == [payload.run_key]


def test_lease_seconds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Outbox(tmp_path / "outbox", lease_seconds=0)
