"""Staging promotion (issue 12, "customers never meet an ungated model"), on the emulator.

The demo project has a production flow (`DEMO_FLOW_ID`, served by the endpoint "Customer Service Webchat") and a
staging flow (`DEMO_STAGING_FLOW_ID`, served by nothing). With `promotion=staging` the challenger is imported into
and trained in the staging flow, judged there, and production is changed only after the gates passed (`promote`:
the staged intents, one training, verified); a rejected challenger never touches production.

What a user would check afterwards, per row: how many trainings the emulator started per flow/locale
(`trainings_by_flow_locale`), the production flow's intents export fingerprint, the serving timeline of
production, the run's outcome and `ungated_exposure_seconds` (audit, outcome.json, MLflow).

Rows 1-4 run the whole DAG with `airflow dags test` (deferral included). The fault rows (5) drive the real
operators and step functions in-process with the fault matrix's harness (tests/test_fault_matrix.py: a new try
number on retry, the same task state store across tries, a deferral's trigger run to its event), extended here by
`promote` and the DAG's trigger rules for the staging path; the emulator, HTTP, the trigger and the audit are real.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from devtools.airflow_env import DEMO_CONF, dags_test
from devtools.servers import Emulator, Server
from emulator import seed
from include import defaults
from include.cognigy import rest_v2
from tests.test_fault_matrix import (
    LENIENT_GATES,
    Run,
    WorkerKilled,
    after_evaluation,
    audit_events,
    final_of,
    first_target,
    names,
    observed,
    use_connection,
)

# Airflow is imported after the fault matrix module set AIRFLOW_HOME (as that module does itself).
# isort: off
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from include import settings
from cognigy_airflow import branches, capture, evaluate, finalize, promote, validate
from cognigy_airflow.promote import CognigyPromoteOperator
from cognigy_airflow.release import CognigySnapshotReleaseOperator
from cognigy_airflow.submit import CognigySubmitTrainingOperator
from cognigy_airflow.wait_for_training import WaitForTraining
from include.cognigy.client import CognigyClient
# isort: on

pytestmark = pytest.mark.slow

LOCALE = "en-US"
PROD = defaults.DEMO_FLOW_ID
STAGING = defaults.DEMO_STAGING_FLOW_ID
PROD_KEY, STAGING_KEY = f"{PROD}/{LOCALE}", f"{STAGING}/{LOCALE}"
# The form's minimums for polling; 8 held-out utterances per intent (the default) so the gates' verdict is stable.
FAST = {**DEMO_CONF, "requests_per_second": 100, "held_out_per_intent": 8, "poll_min_seconds": 1.0,
        "poll_max_seconds": 5.0, "reconcile_seconds": 3}  # fmt: skip
REJECTED = {**FAST, "samples_per_intent": 3}  # worse than the seeded champion (10 per intent): the gates reject
PROMOTED = {**FAST, "samples_per_intent": 40}  # better than the champion: the gates pass
READ_ROUTES = ("/intents/export", "/nlu/scores")  # POSTs that only read


# --- the emulator as a user would inspect it ---------------------------------------------------------------
def export_fingerprint(emulator: Emulator, flow_id: str) -> str:
    resp = requests.post(
        f"{emulator.url}/new/v2.0/flows/{flow_id}/intents/export",
        json={"localeId": seed.LOCALE_IDS[LOCALE], "format": "json"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    return rest_v2.fingerprint(resp.json())


def per_flow(emulator: Emulator) -> dict[str, int]:
    """Trainings started on production and on staging (en-US), from the emulator's own count."""
    by = emulator.stats()["trainings_by_flow_locale"]
    return {"production": by.get(PROD_KEY, 0), "staging": by.get(STAGING_KEY, 0)}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def writes(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Routes hit between two `by_route` snapshots that could change something (anything but a read)."""
    hit = [r for r, n in after.items() if n > before.get(r, 0)]
    return [r for r in hit if not (r.startswith("GET ") or r.endswith(READ_ROUTES))]


# --- whole DAG runs ----------------------------------------------------------------------------------------
@dataclass
class DagRun:
    state: str
    run_id: str
    log: str
    events: list[dict[str, Any]]

    @property
    def final(self) -> dict[str, Any]:
        return final_of(self.events)

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == name]
        assert found, names(self.events)
        return found[-1]


def run_dag(airflow_home, tmp_path: Path, conf: dict[str, Any], name: str = "dags_test") -> DagRun:
    log_file = tmp_path / f"{name}.log"
    proc = dags_test(airflow_home(), conf, log_path=log_file, timeout=900)
    text = log_file.read_text(errors="replace")
    finished = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert finished, f"exit {proc.returncode}: {text[-3000:]}"
    state = "success" if "state=success" in finished[-1] else "failed"
    run_id = finished[-1].split("run_id=")[1].split(",")[0]
    return DagRun(state, run_id, text, audit_events(airflow_home.state_dir, run_id))


def outcome_file(run: DagRun) -> dict[str, Any]:
    """The run folder's outcome.json (the folder of the rollback point the run captured)."""
    return json.loads(
        (Path(run.event("rollback_point_captured")["rollback_point"]).parent / "outcome.json").read_text()
    )


def xcom(airflow_home, run_id: str, task_id: str) -> Any:
    """A task's return value as Airflow stored it (the Airflow DB's xcom table)."""
    db = Path(airflow_home()["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT value FROM xcom WHERE run_id = ? AND task_id = ? AND key = 'return_value'", (run_id, task_id)
        ).fetchall()
    assert len(rows) == 1, rows
    value = rows[0][0]
    value = json.loads(value) if isinstance(value, str | bytes) else value
    return json.loads(value) if isinstance(value, str) else value


def mlflow_exposure(mlflow_server: Server, run: DagRun) -> float:
    mlflow_run = MlflowClient(mlflow_server.url).get_run(run.final["mlflow_run_id"])
    return mlflow_run.data.metrics["ungated_exposure_seconds"]


def epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def tenant(emulator: Emulator) -> Emulator:
    """The session emulator back at its seed tenant (production + staging flow), 2 s trainings."""
    emulator.reset()
    emulator.knobs(training_seconds=2)
    return emulator


# --- 1. staging, rejected challenger -------------------------------------------------------------------------
def test_staging_rejected_challenger_never_touches_production(
    airflow_home, tenant: Emulator, mlflow_server: Server, tmp_path: Path
) -> None:
    """Production: 0 trainings, intents fingerprint unchanged, no new serving period; staging: exactly 1 training;
    outcome `rejected` (a completed run), ungated exposure 0 in the audit, outcome.json and MLflow."""
    before, fingerprint = per_flow(tenant), export_fingerprint(tenant, PROD)
    timeline = tenant.timeline(PROD, LOCALE)
    assert timeline["endpoint_served"] and not tenant.timeline(STAGING, LOCALE)["endpoint_served"]

    run = run_dag(airflow_home, tmp_path, REJECTED)

    assert run.state == "success", names(run.events)
    assert run.final["outcome"] == "rejected" and run.final["promotion"] == "staging"
    assert delta(per_flow(tenant), before) == {"production": 0, "staging": 1}
    assert export_fingerprint(tenant, PROD) == fingerprint
    assert tenant.timeline(PROD, LOCALE)["entries"] == timeline["entries"], "production served nothing new"
    assert run.event("validation_failed")["judged_flow"] == STAGING
    assert run.event("training_submitted")["trained_flow"] == STAGING
    for absent in ("promotion_started", "rollback_triggered", "rollback_retrain_started"):
        assert absent not in names(run.events)
    assert run.final["ungated_exposure_seconds"] == 0
    assert outcome_file(run)["ungated_exposure_seconds"] == 0
    assert mlflow_exposure(mlflow_server, run) == 0
    observed("staging rejected", tenant, run.events, per_flow=delta(per_flow(tenant), before))


# --- 2. staging, promoted challenger -------------------------------------------------------------------------
def test_staging_promoted_challenger_reaches_production_once_after_the_gates(
    airflow_home, tenant: Emulator, mlflow_server: Server, tmp_path: Path
) -> None:
    """Production trained exactly once, on exactly the staged intents (production export == staging export ==
    the `submit` task's returned fingerprint); outcome `promoted`, exposure 0; production's new serving period
    starts after the `validation_passed` audit record."""
    before = per_flow(tenant)
    entries_before = tenant.timeline(PROD, LOCALE)["entries"]

    run = run_dag(airflow_home, tmp_path, PROMOTED)

    assert run.state == "success", names(run.events)
    assert run.final["outcome"] == "promoted"
    assert delta(per_flow(tenant), before) == {"production": 1, "staging": 1}
    submitted = xcom(airflow_home, run.run_id, "submit")
    assert submitted["trained_flow"] == STAGING
    production, staging = export_fingerprint(tenant, PROD), export_fingerprint(tenant, STAGING)
    assert production == staging == submitted["fingerprint"]
    assert run.event("promotion_verified")["fingerprint"] == production
    assert run.event("promotion_verified")["agreement"] >= CognigyPromoteOperator.MIN_AGREEMENT
    # The endpoints serve the live project: `release` reads them back instead of assuming (no new snapshot).
    confirmed = run.event("release_confirmed")
    assert confirmed["path"] == "project" and confirmed["endpoints"] == ["Customer Service Webchat"], confirmed
    assert xcom(airflow_home, run.run_id, "release")["released"] is True
    assert run.final["release"]["path"] == "project" and run.final["release"]["released"] is False  # no snapshot
    assert run.final["ungated_exposure_seconds"] == 0
    assert outcome_file(run)["ungated_exposure_seconds"] == 0
    assert mlflow_exposure(mlflow_server, run) == 0

    entries = tenant.timeline(PROD, LOCALE)["entries"]
    assert len(entries) == len(entries_before) + 1, entries
    new = entries[-1]
    assert new["until"] is None and new["task_id"] == run.event("promotion_verified")["promotion_job_id"]
    passed_at = epoch(run.event("validation_passed")["ts"])
    assert new["since"] > passed_at, (new, run.event("validation_passed")["ts"])
    observed("staging promoted", tenant, run.events, per_flow=delta(per_flow(tenant), before),
             serving_after_gate_s=round(new["since"] - passed_at, 2))  # fmt: skip


# --- 3. the same rejected challenger in place ----------------------------------------------------------------
def test_in_place_rejected_challenger_exposes_customers_then_restores(
    airflow_home, tenant: Emulator, mlflow_server: Server, tmp_path: Path
) -> None:
    """The comparison: in place the rejected challenger served production until the restore (exposure > 0), two
    production trainings (challenger + restore), production's fingerprint back to the original."""
    before, fingerprint = per_flow(tenant), export_fingerprint(tenant, PROD)

    run = run_dag(airflow_home, tmp_path, {**REJECTED, "promotion": "in_place"})

    assert run.state == "success", names(run.events)
    assert run.final["outcome"] == "rejected_rolled_back"
    assert delta(per_flow(tenant), before) == {"production": 2, "staging": 0}
    assert export_fingerprint(tenant, PROD) == fingerprint
    assert "rollback_verified" in names(run.events)
    exposure = run.final["ungated_exposure_seconds"]
    assert exposure > 0
    assert outcome_file(run)["ungated_exposure_seconds"] == exposure
    assert mlflow_exposure(mlflow_server, run) > 0
    observed("in place rejected", tenant, run.events, per_flow=delta(per_flow(tenant), before), exposure=exposure)


# --- 4. safety checks: refused before anything changes -------------------------------------------------------
UNSERVED_ID = "6630a1b2c3d4e5f6012345b1"
NO_LOCALE_ID = "6630a1b2c3d4e5f6012345b2"
MISSING_ID = "6630a1b2c3d4e5f6012345b3"
TINY = {"greeting": ["hello there", "hi", "good morning"], "goodbye": ["bye", "see you later", "good night"]}


def _served_flow(emulator: Emulator) -> str:
    emulator.create_flow(seed.PROJECT_ID, UNSERVED_ID, "Staging served by mistake", {LOCALE: TINY},
                         trained=False, endpoint="Webchat")  # fmt: skip
    return UNSERVED_ID


def _flow_without_locale(emulator: Emulator) -> str:
    emulator.create_flow(seed.PROJECT_ID, NO_LOCALE_ID, "Staging de-DE only", {"de-DE": TINY}, trained=False)
    return NO_LOCALE_ID


def assert_only_reads(emulator: Emulator, stats: dict[str, Any], fingerprint: str) -> list[str]:
    """Nothing changed: only read routes were hit, no training started, production's intents as before."""
    after = emulator.stats()
    assert writes(stats["by_route"], after["by_route"]) == [], after["by_route"]
    assert after["trainings_total"] == stats["trainings_total"]
    assert export_fingerprint(emulator, PROD) == fingerprint
    return writes(stats["by_route"], after["by_route"])


@pytest.mark.parametrize(
    ("case", "make_flow", "expected"),
    [
        ("staging is production", lambda emulator: PROD, "promotion.stagingFlowId: is the production flow"),
        ("served by an endpoint", _served_flow, "is served by endpoint(s) Webchat"),
    ],
    ids=["same-as-production", "endpoint-served"],
)
def test_unsafe_staging_flow_is_refused_and_nothing_changes(
    airflow_home, tenant: Emulator, tmp_path: Path, case: str, make_flow: Callable[[Emulator], str], expected: str
) -> None:
    """Whole DAG runs: refused (the run fails) with the reason named (the endpoint by name); only reads reached
    the tenant (no import, train or cancel route), no training started, production's intents unchanged."""
    staging_flow = make_flow(tenant)
    fingerprint = export_fingerprint(tenant, PROD)
    stats = tenant.stats()

    run = run_dag(airflow_home, tmp_path, {**PROMOTED, "staging_flow_id": staging_flow})

    assert run.state == "failed"
    requests_sent = tenant.stats()["requests_total"] - stats["requests_total"]
    assert_only_reads(tenant, stats, fingerprint)
    assert "training_submitted" not in names(run.events) and "challenger_staged" not in names(run.events)
    if case == "staging is production":  # refused at validate: not even a read
        assert requests_sent == 0
        rejected = run.event("request_rejected")
        assert any(expected in err for err in rejected["errors"]), rejected["errors"]
    else:  # refused at capture, by reading the staging flow
        assert "staging flow refused (nothing was changed)" in run.log and expected in run.log, run.log[-3000:]
        assert "rollback_point_captured" not in names(run.events)
        assert final_of(run.events)["outcome"] == "training_not_run"
    observed(f"safety {case}", tenant, run.events)


@pytest.mark.parametrize(
    ("make_flow", "expected"),
    [
        pytest.param(_flow_without_locale, f"staging flow {NO_LOCALE_ID} / locale {LOCALE}", id="missing-locale"),
        pytest.param(lambda emulator: MISSING_ID, f"staging flow {MISSING_ID} / locale {LOCALE}", id="missing-flow"),
    ],
)  # fmt: skip
def test_staging_flow_missing_or_without_the_locale_is_refused(
    fresh: Emulator, state_dir: Path, make_flow: Callable[[Emulator], str], expected: str
) -> None:
    """In-process (the refusal happens in `capture`, as the endpoint-served case's DAG run shows; a whole DAG run
    each would add ~4 minutes): `capture` refuses, naming the flow and locale; the run fails; only reads reached
    the tenant, no training started, production's intents unchanged."""
    staging_flow = make_flow(fresh)
    fingerprint = export_fingerprint(fresh, PROD)
    stats = fresh.stats()
    run = StagingRun(f"staging-refused-{staging_flow}", staging_flow_id=staging_flow)
    out = staging_pipeline(run)
    observed(f"safety {expected}", fresh, audit_events(state_dir, run.run_id), per_flow=per_flow(fresh),
             writes=writes(stats["by_route"], fresh.stats()["by_route"]), failed=sorted(out.failed))  # fmt: skip

    assert "staging flow refused (nothing was changed)" in out.failed.get("capture", ""), out.failed
    assert expected in out.failed["capture"], out.failed
    assert_only_reads(fresh, stats, fingerprint)
    assert "audit" in out.failed, "the run fails"


# --- 5. fault rows for the new steps, in-process -------------------------------------------------------------
class StagingRun(Run):
    """The fault matrix's in-process run, staging by default; a skip ends a task (Airflow does not retry it)."""

    def __init__(self, run_id: str, **params: Any) -> None:
        super().__init__(run_id, **{**FAST, "promotion": "staging", "staging_flow_id": STAGING, **params})

    NOT_RETRIED = (AirflowFailException, AirflowSkipException)


@dataclass
class Staged:
    plan: dict[str, Any]
    target: dict[str, Any]
    captured: dict[str, Any]
    submitted: dict[str, Any] | None = None
    waited: dict[str, Any] | None = None
    evaluated: dict[str, Any] | None = None
    promoted: dict[str, Any] | None = None
    released: dict[str, Any] | None = None
    rolled_back: dict[str, Any] | None = None
    path: list[str] | None = None  # the task ids the branches chose
    final: dict[str, Any] | None = None
    failed: dict[str, str] | None = None  # task -> error of the tasks that failed (the DAG run fails)


def staging_pipeline(run: StagingRun, before: dict[str, Callable[[], None]] | None = None) -> Staged:
    """validate → capture → submit → wait_for_training → evaluate → decide → promote → release → confirm → rollback
    → audit, with the DAG's trigger rules: submit, wait_for_training and evaluate after a successful predecessor;
    decide, confirm and audit whatever happened before (ALL_DONE); the branches choose promote/release/rollback
    (tests/test_fault_matrix.py `after_evaluation`)."""
    before = before or {}
    failed: dict[str, str] = {}

    def phase(name: str) -> None:
        if name in before:
            before[name]()

    def task(name: str, body: Callable[[], Any]) -> Any:
        phase(name)
        try:
            return body()
        except AirflowSkipException:
            return None
        except Exception as exc:  # a failed task, as Airflow records it
            failed[name] = f"{type(exc).__name__}: {exc}"
            return None

    plan, target = first_target(run.call("validate", validate.validate))
    common = {"target": target, "plan": plan}
    out = Staged(plan, target, task("capture", lambda: run.call("capture", capture.capture, **common)))
    if out.captured:  # all_success: a failed capture leaves submit, wait_for_training and evaluate upstream_failed
        submit = CognigySubmitTrainingOperator(task_id="submit", captured=out.captured, **common)
        out.submitted = task("submit", lambda: run.operate(submit))
    if out.submitted:
        wait = WaitForTraining(task_id="wait_for_training", submitted=out.submitted, **common)
        out.waited = task("wait", lambda: run.operate(wait))
    if out.waited:
        out.evaluated = task("evaluate", lambda: run.call("evaluate", evaluate.evaluate, target, plan, out.waited))
    done = after_evaluation(run, target, plan, task)
    out.promoted, out.released, out.rolled_back = done.get("promote"), done.get("release"), done.get("rollback")
    out.path = done["path"]
    out.final = task("audit", lambda: run.call("audit", finalize.finalize, target, plan, None))
    out.failed = failed
    return out


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipeline-state"
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(folder))
    return folder


@pytest.fixture
def fresh(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Emulator:
    """The seed tenant, default knobs but 2 s trainings, reached in-process through the fault matrix's connection."""
    emulator.reset()
    use_connection(monkeypatch, emulator)
    emulator.knobs(training_seconds=2)
    return emulator


def assert_production_untouched_and_run_failed(
    fresh: Emulator, run: StagingRun, out: Staged, before: dict[str, int], fingerprint: str, staging_trainings: int
) -> list[dict[str, Any]]:
    assert delta(per_flow(fresh), before) == {"production": 0, "staging": staging_trainings}
    assert export_fingerprint(fresh, PROD) == fingerprint
    assert "audit" in (out.failed or {}), out.failed  # the run fails, after auditing
    events = audit_events(settings.state_dir(), run.run_id)
    assert not {"promotion_started", "rollback_triggered"} & set(names(events)), names(events)
    return events


def test_staging_import_fails_production_untouched(fresh: Emulator, state_dir: Path) -> None:
    """Every try of `submit` meets a failing import into the staging flow: no training anywhere, production
    untouched, outcome training_not_run, the run fails."""
    before, fingerprint = per_flow(fresh), export_fingerprint(fresh, PROD)
    run = StagingRun("staging-import-fails")
    out = staging_pipeline(run, before={"submit": lambda: fresh.knobs(fail_next_imports=10)})
    fresh.knobs(fail_next_imports=0)

    assert "submit" in out.failed and "import" in out.failed["submit"].lower(), out.failed
    assert run.tries["submit"] == run.retries + 1
    events = assert_production_untouched_and_run_failed(fresh, run, out, before, fingerprint, staging_trainings=0)
    assert final_of(events)["outcome"] == "training_not_run"
    assert final_of(events)["ungated_exposure_seconds"] == 0
    observed("5a staging import fails", fresh, events, per_flow=delta(per_flow(fresh), before),
             submit_tries=run.tries["submit"])  # fmt: skip


def test_staging_training_error_production_untouched(fresh: Emulator, state_dir: Path) -> None:
    """The staging training ends in error: production untouched (0 trainings, same intents), outcome
    training_failed, the run fails."""
    before, fingerprint = per_flow(fresh), export_fingerprint(fresh, PROD)
    run = StagingRun("staging-training-error")
    out = staging_pipeline(run, before={"submit": lambda: fresh.knobs(fail_next_trainings=1)})

    assert out.waited and out.waited["state"] == "failed", out.waited
    events = assert_production_untouched_and_run_failed(fresh, run, out, before, fingerprint, staging_trainings=1)
    assert final_of(events)["outcome"] == "training_failed"
    observed("5b staging training error", fresh, events, per_flow=delta(per_flow(fresh), before))


def test_staging_deadline_production_untouched(fresh: Emulator, state_dir: Path) -> None:
    """The staging training outlives its deadline (12 s training, 3 s deadline): cancelled, production untouched,
    outcome training_deadline, the run fails."""
    fresh.knobs(training_seconds=12)
    before, fingerprint = per_flow(fresh), export_fingerprint(fresh, PROD)
    run = StagingRun("staging-deadline", deadline_seconds_override=3)
    out = staging_pipeline(run)

    assert out.waited and out.waited["state"] == "deadline", out.waited
    events = assert_production_untouched_and_run_failed(fresh, run, out, before, fingerprint, staging_trainings=1)
    assert final_of(events)["outcome"] == "training_deadline"
    assert fresh.stats()["tasks"].get("cancelled") == 1, fresh.stats()["tasks"]
    observed("5c staging deadline", fresh, events, per_flow=delta(per_flow(fresh), before))


def assert_restored(
    fresh: Emulator, run: StagingRun, out: Staged, before: dict[str, int], fingerprint: str
) -> list[dict[str, Any]]:
    """Promotion failed → production restored from the rollback point and verified, the run fails."""
    assert out.promoted and out.promoted["needs_rollback"] and not out.promoted["promoted"], out.promoted
    assert out.rolled_back and out.rolled_back["verified"], out.rolled_back
    assert delta(per_flow(fresh), before) == {"production": 2, "staging": 1}  # promotion + restore; the challenger
    assert export_fingerprint(fresh, PROD) == fingerprint == out.captured["fingerprint"]
    assert "audit" in out.failed, out.failed
    events = audit_events(settings.state_dir(), run.run_id)
    order = names(events)
    for event in ("validation_passed", "promotion_started", "promotion_failed", "rollback_triggered",
                  "rollback_verified", "retrain_completed"):  # fmt: skip
        assert event in order, order
    assert order.index("promotion_failed") < order.index("rollback_verified")
    assert final_of(events)["outcome"] == "promotion_failed_rolled_back"
    assert final_of(events)["ungated_exposure_seconds"] == 0
    return events


# The gap the DAG's scheduling leaves between `promote` ending and `rollback` POSTing its restoring training: more than
# the exactly-once check's look-back (SERVER_CLOCK_MARGIN_SECONDS = 2 s before the intent's server time, which has
# 1 s resolution); the next test covers no gap at all (this run's other trainings are excluded from that check).
SCHEDULER_GAP_SECONDS = 5.0


def _promotion_fails(fresh: Emulator, training_seconds: float) -> Callable[[], None]:
    return lambda: fresh.knobs(fail_next_trainings=1, training_seconds=training_seconds)


def test_promotion_training_error_restores_production(fresh: Emulator, state_dir: Path) -> None:
    """The staging training succeeds and the gates pass; the emulator's `fail_next_trainings=1` is set after it
    (before `promote`), so the next training to finish, the promotion's, ends in error. `rollback` starts
    SCHEDULER_GAP_SECONDS after `promote` ended (as Airflow's scheduling would). Production is restored from the
    rollback point and verified, the run fails."""
    import time

    before, fingerprint = per_flow(fresh), export_fingerprint(fresh, PROD)
    run = StagingRun("promotion-training-error", **LENIENT_GATES)
    out = staging_pipeline(run, before={"promote": _promotion_fails(fresh, 2.0),
                                        "rollback": lambda: time.sleep(SCHEDULER_GAP_SECONDS)})  # fmt: skip

    assert out.evaluated and out.evaluated["passed"], out.evaluated
    assert "ended error" in out.promoted["reason"], out.promoted
    events = assert_restored(fresh, run, out, before, fingerprint)
    observed("5d promotion training error", fresh, events, per_flow=delta(per_flow(fresh), before))


def test_promotion_training_failing_at_once_restores_production(fresh: Emulator, state_dir: Path) -> None:
    """As above, but the promotion training fails at once (training_seconds 0, as a training Cognigy refuses
    right away) and `rollback` follows `promote` without a pause: the restoring training is POSTed within the
    exactly-once check's look-back of the failed promotion training."""
    before, fingerprint = per_flow(fresh), export_fingerprint(fresh, PROD)
    run = StagingRun("promotion-training-error-at-once", **LENIENT_GATES)
    out = staging_pipeline(run, before={"promote": _promotion_fails(fresh, 0.0)})

    assert out.evaluated and out.evaluated["passed"], out.evaluated
    events = assert_restored(fresh, run, out, before, fingerprint)
    assert "duplicate_training_cancelled" not in names(events)


def test_promotion_agreement_failing_restores_production(
    fresh: Emulator, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATCHED: the same classifier trained on the same sentences always agrees, so disagreement cannot be produced
    for real on the emulator. Only `cognigy_airflow.promote.agreement` is replaced, in this process (it returns 0.5);
    the rollback's own agreement check (`cognigy_airflow.rollback`) runs unpatched. Production is
    restored from the rollback point and verified, the run fails."""
    before, fingerprint = per_flow(fresh), export_fingerprint(fresh, PROD)
    run = StagingRun("promotion-agreement-fails", **LENIENT_GATES)
    out = staging_pipeline(
        run, before={"promote": lambda: monkeypatch.setattr(promote, "agreement", lambda *_a, **_k: 0.5)}
    )

    assert "agree with the judged challenger on only 50%" in out.promoted["reason"], out.promoted
    events = assert_restored(fresh, run, out, before, fingerprint)
    assert next(e for e in events if e["event"] == "rollback_verified")["agreement"] >= 0.95
    observed("5e promotion agreement fails (patched)", fresh, events, per_flow=delta(per_flow(fresh), before))


def test_worker_killed_after_the_promotion_post_reattaches(
    fresh: Emulator, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault matrix's "killed after POST" mechanism, on `promote`: the real client POSTs the promotion training,
    then the worker "dies" (WorkerKilled) before the job id is stored. The retry (same task state store, no local
    state file) finds the training in the tenant's task list and reattaches: exactly one promotion training."""
    before = per_flow(fresh)
    run = StagingRun("promotion-worker-killed", **LENIENT_GATES)
    plan, target = first_target(run.call("validate", validate.validate))
    common = {"target": target, "plan": plan}
    captured = run.call("capture", capture.capture, **common)
    submitted = run.operate(CognigySubmitTrainingOperator(task_id="submit", captured=captured, **common))
    waited = run.operate(WaitForTraining(task_id="wait_for_training", submitted=submitted, **common))
    evaluated = run.call("evaluate", evaluate.evaluate, target, plan, waited)
    assert evaluated["passed"], evaluated

    real_start = CognigyClient.start_training
    posted: list[str] = []

    def post_then_die(self: CognigyClient, *args: Any, **kwargs: Any) -> Any:
        status = real_start(self, *args, **kwargs)  # the promotion training really starts on production
        posted.append(status.job_id)
        raise WorkerKilled("worker lost after the promotion POST returned, before the job id was stored")

    monkeypatch.setattr(CognigyClient, "start_training", post_then_die)
    with pytest.raises(WorkerKilled):
        CognigyPromoteOperator(task_id="promote", evaluated=evaluated, **common).execute(run.context("promote"))
    monkeypatch.setattr(CognigyClient, "start_training", real_start)
    store = run.stores["promote"].data
    assert "promote.intent_at" in store and "promote.job_id" not in store
    for leftover in Path(captured["rollback_point_path"]).parent.glob("promote_state.*"):
        leftover.unlink()  # the retry runs on another worker

    promoted = run.operate(CognigyPromoteOperator(task_id="promote", evaluated=evaluated, **common))

    assert promoted["promoted"] and promoted["verified"] and promoted["job_id"] == posted[0], promoted
    assert delta(per_flow(fresh), before) == {"production": 1, "staging": 1}
    assert export_fingerprint(fresh, PROD) == export_fingerprint(fresh, STAGING) == submitted["fingerprint"]
    events = audit_events(state_dir, run.run_id)
    assert names(events).count("promotion_training_started") == 0, "the killed try never audited its start"
    assert names(events).count("promotion_verified") == 1
    released = run.operate(CognigySnapshotReleaseOperator(task_id="release", promoted=promoted, **common))
    assert released["released"], released  # the project path: the endpoints read back serving the live flow
    assert run.call("confirm", branches.confirm, target, plan, released) == "mlflow_sync"
    final = run.call("audit", finalize.finalize, target, plan, None)
    assert final["outcome"] == "promoted" and final["ungated_exposure_seconds"] == 0
    observed("5f worker killed after promotion POST", fresh, audit_events(state_dir, run.run_id),
             per_flow=delta(per_flow(fresh), before), promote_tries=run.tries["promote"])  # fmt: skip
