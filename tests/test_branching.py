"""Airflow's own branches, task by task, on a real-scheduler fleet night (issue 23's "done when").

The night is tests/test_fleet.py's (`fleet_night`): `cognigy_nlu_fleet` triggers one `cognigy_nlu_retrain` run per
target, staging promotion for all three:
- "support EN" passes the gates: decide -> promote -> release -> confirm -> mlflow_sync -> audit;
- "support DE" is rejected by the gates: decide -> mlflow_sync -> audit (production untouched, nothing to restore);
- "broken EN"'s training fails on Cognigy: wait_for_training returns the failed state, decide takes the settle path
  (mlflow_sync), the audit fails the run, and with it the night.
Each run's paths not taken are `skipped` by the branch operators; approval is not needed (no approval settings).
"""

from __future__ import annotations

import pytest

from tests.test_fleet import EXPECTED, by_name, fleet_night, states  # noqa: F401  (the shared night)

pytestmark = pytest.mark.slow

BEFORE_DECIDE = {"validate": "success", "capture": "success", "submit": "success", "wait_for_training": "success",
                 "evaluate": "success", "decide": "success"}  # fmt: skip
PATHS = {
    "support EN": {  # promoted
        **BEFORE_DECIDE, "approve": "skipped", "promote": "success", "release": "success", "confirm": "success",
        "rollback": "skipped", "mlflow_sync": "success", "audit": "success", "watcher": "skipped",
    },
    "support DE": {  # rejected (staging)
        **BEFORE_DECIDE, "approve": "skipped", "promote": "skipped", "release": "skipped", "confirm": "skipped",
        "rollback": "skipped", "mlflow_sync": "success", "audit": "success", "watcher": "skipped",
    },
    "broken EN": {  # training failed (staging)
        **BEFORE_DECIDE, "approve": "skipped", "promote": "skipped", "release": "skipped", "confirm": "skipped",
        "rollback": "skipped", "mlflow_sync": "success", "audit": "failed", "watcher": "failed",
    },
}  # fmt: skip
RUN_STATES = {"support EN": "success", "support DE": "success", "broken EN": "failed"}


@pytest.mark.parametrize("name", list(PATHS))
def test_each_run_took_its_branch_and_skipped_the_others(fleet_night: dict, name: str) -> None:  # noqa: F811
    run = by_name(fleet_night)[name]
    got = states(run)
    assert got == PATHS[name], {k: (got.get(k), v) for k, v in PATHS[name].items() if got.get(k) != v}
    assert run["state"] == RUN_STATES[name]
    assert all(ti["map_index"] == -1 for ti in run["task_instances"])  # one run per target: nothing is mapped


def test_the_failed_training_is_a_result_of_the_wait_not_a_failure(fleet_night: dict) -> None:  # noqa: F811
    run = by_name(fleet_night)["broken EN"]
    waited = [e for e in fleet_night["events"] if e["run_id"] == run["run_id"] and e["event"] == "retrain_failed"]
    assert waited and waited[-1]["task_id"] == "wait_for_training" and waited[-1]["outcome"] == "failed", waited
    completed = [e for e in fleet_night["events"] if e["run_id"] == run["run_id"] and e["event"] == "retrain_completed"]
    assert completed[-1]["outcome"] == EXPECTED["broken EN"] and completed[-1]["task_id"] == "audit"


def test_the_night_names_each_triggered_run_and_fails_with_the_failed_one(fleet_night: dict) -> None:  # noqa: F811
    night = fleet_night
    assert night["state"] == "failed"
    retrain = sorted((ti for ti in night["task_instances"] if ti["task_id"] == "retrain"), key=lambda t: t["map_index"])
    assert [ti["map_index"] for ti in retrain] == [0, 1, 2]
    named = {ti["rendered_map_index"]: ti["state"] for ti in retrain}
    # the map index template names bot and locale (the fleet entry's name and its locale)
    assert named == {"broken EN · en-US": "failed", "support EN · en-US": "success", "support DE · de-DE": "success"}
    for name, run in by_name(night).items():  # the triggered run's note names it and its night too
        assert run["note"].startswith(f"{name} · {run['conf']['locales'][0]} (fleet night {night['run_id']}")
    others = {ti["task_id"]: ti["state"] for ti in night["task_instances"] if ti["task_id"] != "retrain"}
    # The summary runs whatever happened; the watcher fails the night (a DAG run's state is its leaves').
    assert others == {"plan_night": "success", "morning_summary": "success", "watcher": "failed"}
