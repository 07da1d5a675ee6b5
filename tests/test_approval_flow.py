"""Approval before a release (issue 24 item 3) through the REAL Airflow API: a LocalExecutor stack (scheduler,
dag-processor, triggerer, api-server; PostgreSQL) runs `cognigy_nlu_retrain` against the emulator with
`approval: always` and staging promotion, three times on the demo bot (en-US), one run after the other (they share
the staging flow):

1. a person rejects through the REST API (PATCH .../taskInstances/approve/-1/hitlDetails, the call the UI's
   Required Actions page makes),
2. nobody answers within `approval_timeout_minutes` (1): the scheduler's awaiting-input sweep applies the default,
3. a person releases.

Asserted: the approval request shows the gate summary; only the released run touched production (the emulator's
production export, its trainings and serving timeline; `promotion_verified` in the audit); the audit's
`approval_decided` names the API user for release and reject and says `timed_out` for the third; each run ends
green with its outcome; the MLflow payload (in the outbox: no MLflow server in this stack) carries the decision.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from bench.fleet_stack import local_stack
from devtools.airflow_env import DEMO_CONF
from devtools.deployment import ADMIN_USER
from devtools.distributed import AirflowStack
from devtools.servers import Emulator, start_emulator
from emulator import seed
from include import defaults
from include.cognigy import rest_v2
from include.records.audit import read

pytestmark = pytest.mark.slow

DAG_ID = "cognigy_nlu_retrain"
LOCALE = "en-US"
PROD = defaults.DEMO_FLOW_ID
# better than the seeded champion (40 sentences per intent vs 10): the gates pass, so every run reaches `approve`
CONF = {**DEMO_CONF, "locales": [LOCALE], "promotion": "staging", "samples_per_intent": 40, "held_out_per_intent": 8,
        "requests_per_second": 100, "poll_min_seconds": 1.0, "poll_max_seconds": 5.0, "reconcile_seconds": 3,
        "retrain_unchanged": True, "approval": "always"}  # fmt: skip
RUN_TIMEOUT = 900


def production(emulator: Emulator) -> dict:
    """What customers meet: the production flow's intents (export fingerprint), its trainings, its serving timeline."""
    resp = requests.post(
        f"{emulator.url}/new/v2.0/flows/{PROD}/intents/export",
        json={"localeId": seed.LOCALE_IDS[LOCALE], "format": "json"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    trainings = emulator.stats()["trainings_by_flow_locale"].get(f"{PROD}/{LOCALE}", 0)
    return {"fingerprint": rest_v2.fingerprint(resp.json()), "trainings": trainings,
            "serving": emulator.timeline(PROD, LOCALE)["entries"]}  # fmt: skip


def hitl_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"


def wait_for_request(stack: AirflowStack, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    """Until `approve` waits for a person (state awaiting_input); its Human-in-the-loop request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(run_id)}
        if states.get("approve") == "awaiting_input":
            resp = stack.api("GET", hitl_path(run_id))
            resp.raise_for_status()
            return resp.json()
        if stack.run(run_id)["state"] in ("success", "failed") or states.get("approve") in ("skipped", "failed"):
            raise AssertionError(f"{run_id} never asked for approval: {states}\n{stack.tails(30)}")
        time.sleep(1)
    raise TimeoutError(f"{run_id}: approve did not wait for a person within {timeout}s")


def paused_try_reported(stack: AirflowStack, run_id: str, timeout: float = 60) -> None:
    """Until the scheduler has processed the exit of the worker process that paused `approve`.

    A person answers minutes later; this test answers within a second, which meets an Airflow 3.3.2 race: the
    answer sends the task back to the queue, and a stale "success" from the paused process, drained after the task
    is QUEUED again, makes the scheduler mark it failed ("state attribute is queued"; it tolerates only SCHEDULED
    for a resume after a deferral — apache/airflow#72716 is the RUNNING variant of the same family). Waiting for the
    scheduler's log line of that event is what a human's delay gives for free.
    """
    needle = f"task_id='approve', run_id='{run_id}'"
    log = stack.log_dir / "scheduler.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "Received executor event with state success" in line and needle in line:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the scheduler never reported the paused approve of {run_id}\n{stack.tails(30)}")


def respond(stack: AirflowStack, run_id: str, option: str) -> dict:
    paused_try_reported(stack, run_id)
    resp = stack.api("PATCH", hitl_path(run_id), json={"chosen_options": [option], "params_input": {}})
    assert resp.status_code == 200, resp.text
    return resp.json()


def finished(stack: AirflowStack, run_id: str) -> tuple[dict, dict[str, str], list[dict]]:
    run = stack.wait_for_run(run_id, timeout=RUN_TIMEOUT)
    states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(run_id)}
    return run, states, read(stack.state_dir / "audit" / "retrain_audit.jsonl", run_id=run_id)


def ended_green(stack: AirflowStack, run: dict, run_id: str) -> None:
    """The run succeeded; if not, its task states and the failed tasks' logs go to the captured output (shown
    whole on failure: pytest shortens long assertion messages)."""
    if run["state"] != "success":
        print(stack.explain(run_id), "\n", stack.tails(40))
    assert run["state"] == "success", run_id


def the(events: list[dict], name: str) -> dict:
    found = [e for e in events if e["event"] == name]
    assert len(found) == 1, (name, [e["event"] for e in events])
    return found[0]


def mlflow_tags(state_dir: Path, run_id: str) -> dict:
    """The MLflow run's tags as the outbox keeps them (the stack's MLflow URL is unreachable on purpose)."""
    for path in state_dir.rglob("*.json"):
        text = path.read_text(errors="replace")
        if '"run_key"' in text and run_id in text:
            return json.loads(text)["tags"]
    raise AssertionError(f"no MLflow payload for {run_id} under {state_dir}")


def test_a_release_waits_for_a_person_approve_reject_and_timeout(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path / "emulator")
    try:
        emulator.knobs(training_seconds=2)
        with local_stack(
            tmp_path / "airflow",
            emulator,
            rate_limit=None,
            pool_slots=8,
            include_deferred=False,
            # the awaiting-input timeout sweep runs at this interval (default 15 s)
            extra_env={"AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5"},
        ) as stack:
            stack.unpause()
            before = production(emulator)

            # 1. rejected by a person
            rejected = stack.trigger(CONF)
            request = wait_for_request(stack, rejected)
            assert request["options"] == ["Release", "Reject"] and request["defaults"] == ["Reject"]
            assert request["subject"] == f"[cognigy] approve the release of {PROD} {LOCALE}?"
            for text in ("**Locale**: en-US", "| macro recall |", "approval=always", "counts as **Reject**"):
                assert text in request["body"], (text, request["body"])
            answer = respond(stack, rejected, "Reject")
            assert answer["responded_by"]["name"] == ADMIN_USER, answer
            run, states, events = finished(stack, rejected)
            ended_green(stack, run, rejected)
            after_reject = production(emulator)

            # 2. nobody answers: the timeout rejects
            timed_out = stack.trigger({**CONF, "approval_timeout_minutes": 1})
            waited_from = time.monotonic()
            wait_for_request(stack, timed_out)
            run2, states2, events2 = finished(stack, timed_out)
            waited = time.monotonic() - waited_from
            ended_green(stack, run2, timed_out)
            after_timeout = production(emulator)

            # 3. released by a person
            released = stack.trigger(CONF)
            wait_for_request(stack, released)
            respond(stack, released, "Release")
            run3, states3, events3 = finished(stack, released)
            ended_green(stack, run3, released)
            after_release = production(emulator)

            tags = {run_id: mlflow_tags(stack.state_dir, run_id) for run_id in (rejected, timed_out, released)}
    finally:
        emulator.stop()

    # Rejected and timed out: production untouched, nothing promoted, the run settled straight to MLflow.
    assert after_reject == before and after_timeout == before
    for states_, events_ in ((states, events), (states2, events2)):
        assert states_["approve"] == "success" and states_["mlflow_sync"] == "success", states_
        assert {states_[t] for t in ("promote", "release", "confirm", "rollback")} == {"skipped"}, states_
        assert not {"promotion_started", "promotion_verified", "rollback_triggered"} & {e["event"] for e in events_}
        assert the(events_, "retrain_completed")["outcome"] == "not_approved"
    decided = the(events, "approval_decided")
    assert (decided["decision"], decided["timed_out"], decided["branch"]) == ("rejected", False, "mlflow_sync")
    assert decided["responded_by_name"] == ADMIN_USER and decided["responded_at"]
    decided2 = the(events2, "approval_decided")
    assert (decided2["decision"], decided2["timed_out"], decided2["responded_by"]) == ("timed_out", True, None)
    assert waited >= 60, "the default applied only after the timeout"
    assert the(events2, "approval_requested")["approval_timeout_minutes"] == 1

    # Released: production was promoted (one training, new intents, verified) only now.
    assert states3["approve"] == "success" and states3["promote"] == "success", states3
    decided3 = the(events3, "approval_decided")
    assert (decided3["decision"], decided3["timed_out"], decided3["branch"]) == ("approved", False, "promote")
    assert decided3["responded_by_name"] == ADMIN_USER
    names3 = [e["event"] for e in events3]
    assert "promotion_verified" in names3 and names3.index("approval_decided") < names3.index("promotion_started")
    assert the(events3, "retrain_completed")["outcome"] == "promoted"
    assert after_release["trainings"] == before["trainings"] + 1
    assert after_release["fingerprint"] != before["fingerprint"]

    # MLflow: who decided and when
    assert (tags[rejected]["approval_decision"], tags[rejected]["approval_by"]) == ("rejected", ADMIN_USER)
    assert (tags[timed_out]["approval_decision"], tags[timed_out]["approval_by"]) == ("timed_out", "")
    assert (tags[released]["approval_decision"], tags[released]["approval_by"]) == ("approved", ADMIN_USER)
    assert tags[released]["approval_at"] == decided3["responded_at"]
