"""A fleet night under a REAL scheduler (LocalExecutor: scheduler, dag-processor, triggerer and api-server as
separate processes, PostgreSQL and Redis of their own): the fleet DAG triggers six `cognigy_nlu_retrain` runs, one
per flow/locale, that retrain at once against an emulator limited to 120 requests per 20 s, every process drawing
from the tenant's one budget (in Redis).

Asserted: trainings overlap across the runs (waits do not hold a pool slot), the emulator never answered 429 (its
limiter is an exact sliding window over accepted requests, so zero 429s means no window ever held more than the
limit; the sampled request counter says the same), every held-out utterance was scored, and the night and each of
its runs succeeded.

Its own stack, not tests/test_fleet.py's night: that night fails on purpose (one training fails) and its tenant
limit is the emulator's default; this one must succeed on a tight limit with more targets than pool slots allow
to be scored at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.fleet_stack import RequestSampler, fleet_conf, local_stack, make_fleet, max_overlap, night_task_instances
from devtools.servers import start_emulator
from include.records.audit import read

pytestmark = pytest.mark.slow

LIMIT, WINDOW = 120, 20.0  # tight for 6 targets (each scores ~80 utterances), short enough for make test
TARGETS = 6
TRAINING_SECONDS = 30  # long enough that six submits spread over a loaded 2-core machine still overlap


def test_a_fleet_runs_concurrently_within_the_tenant_limit(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path / "emulator")
    try:
        emulator.knobs(rate_limit_requests=LIMIT, rate_limit_window_seconds=WINDOW, training_seconds=TRAINING_SECONDS)
        fleet = make_fleet(emulator, TARGETS)
        emulator.knobs(rate_limit_requests=LIMIT, rate_limit_window_seconds=WINDOW)  # creating flows counted
        with local_stack(
            tmp_path / "airflow",
            emulator,
            rate_limit={"requests": LIMIT, "per_seconds": WINDOW},
            pool_slots=8,
            include_deferred=False,
            extra_env={"AIRFLOW_VAR_COGNIGY_FLEET": json.dumps(fleet)},
        ) as stack:
            before = emulator.stats()
            with RequestSampler(emulator) as sampler:
                night = stack.run_fleet_night(fleet_conf(held_out_per_intent=2, requests_per_second=100), timeout=1800)
            after = emulator.stats()
            events = read(stack.state_dir / "audit" / "retrain_audit.jsonl", run_id=sorted(night["runs"]))
            tis = night_task_instances(night)
            failed = [(ti["dag_run_id"], ti["task_id"]) for ti in tis if ti["state"] == "failed"]
            failed += [(night["run_id"], ti["task_id"]) for ti in night["task_instances"] if ti["state"] == "failed"]
            assert night["state"] == "success", (failed, stack.tails(60))
            assert len(night["runs"]) == TARGETS
            assert {run["state"] for run in night["runs"].values()} == {"success"}, failed
    finally:
        emulator.stop()

    assert after["responses_429"] == before["responses_429"] == 0, after["by_status"]
    assert sampler.max_in_window(WINDOW) <= LIMIT
    assert max_overlap(tis) >= 3, "several trainings were waited for at once, across the runs (waits hold no slot)"
    completed = [e for e in events if e["event"] == "retrain_completed"]
    assert len(completed) == TARGETS
    for event in completed:
        rows = (event.get("held_out") or {}).get("rows")
        assert rows and event["metrics"].get("n_scored") == rows, event["target"]
    assert not [e for e in events if "rate limit" in json.dumps(e).lower()]  # no 429 reached a task
