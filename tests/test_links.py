"""Extra links after a real DAG run: the URLs Airflow stored for the task pages' buttons.

Airflow 3 stores a link's URL in the XCom `_link_<LinkClass>` of the task instance when the task ends; the UI
reads it from there. The run is the fleet run of tests/test_fleet.py (one promoted, one rolled-back target).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from devtools.servers import ROOT
from emulator import seed
from include.defaults import DEMO_STAGING_FLOW_ID
from tests.test_fleet import by_locale, fleet_run  # noqa: F401  (the shared DAG run)

pytestmark = pytest.mark.slow


def link_xcoms(run: dict) -> dict[tuple[str, int, str], str]:
    """(task_id, map_index, key) -> URL for every `_link_*` XCom of the run."""
    with sqlite3.connect(run["db"]) as db:
        rows = db.execute(
            "SELECT task_id, map_index, key, value FROM xcom WHERE run_id = ? AND key LIKE '\\_link\\_%' ESCAPE '\\'",
            (run["run_id"],),
        ).fetchall()
    return {(task_id, map_index, key): json.loads(value) for task_id, map_index, key, value in rows}


def flow_url(emulator, locale: str, job_id: str, flow_id: str = seed.FLOW_ID) -> str:
    return f"{emulator.url}/agent/{seed.PROJECT_ID}/flow/{flow_id}/nlu?locale={locale}&task={job_id}"


def test_submit_and_wait_link_to_the_cognigy_training(fleet_run: dict, emulator) -> None:  # noqa: F811
    """The challenger trains in the staging flow: the buttons open that flow and its training."""
    links = link_xcoms(fleet_run)
    for locale, events in by_locale(fleet_run["events"], "training_submitted").items():
        job_id, index = events[-1]["cognigy_job_id"], events[-1]["map_index"]
        assert events[-1]["trained_flow"] == DEMO_STAGING_FLOW_ID
        expected = flow_url(emulator, locale, job_id, DEMO_STAGING_FLOW_ID)
        assert links[("retrain.submit", index, "_link_CognigyTaskLink")] == expected, links
        assert links[("retrain.wait_for_training", index, "_link_CognigyTaskLink")] == expected


def test_promote_links_to_the_production_training(fleet_run: dict, emulator) -> None:  # noqa: F811
    links = link_xcoms(fleet_run)
    started = by_locale(fleet_run["events"], "promotion_training_started")
    assert len(started) == 1, started  # only the target whose challenger passed is promoted
    ((locale, events),) = started.items()
    promotion = events[-1]
    url = links[("retrain.promote", promotion["map_index"], "_link_CognigyTaskLink")]
    assert url == flow_url(emulator, locale, promotion["promotion_job_id"])  # the production flow


def test_mlflow_sync_links_to_the_mlflow_run(fleet_run: dict, mlflow_server) -> None:  # noqa: F811
    links = link_xcoms(fleet_run)
    synced = by_locale(fleet_run["events"], "mlflow_synced")
    assert set(synced) == {"en-US", "de-DE"}  # the failed target is recorded too (as FAILED)
    for events in synced.values():
        record = events[-1]
        url = links[("retrain.mlflow_sync", record["map_index"], "_link_MlflowRunLink")]
        assert url == record["mlflow_run_url"]
        assert url.startswith(mlflow_server.url) and record["mlflow_run_id"] in url


def test_the_plugin_registers_both_links_for_the_ui(tmp_path) -> None:
    """The API server must know the link classes to show the buttons of a serialized DAG."""
    code = textwrap.dedent(
        """
        from airflow import plugins_manager
        names = sorted(type(link).__name__ for link in plugins_manager.get_operator_extra_links()
                       if type(link).__module__.startswith("cognigy_airflow"))
        print("LINKS", ",".join(names))
        """
    )
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LINKS")), "")
    assert line == "LINKS CognigyTaskLink,MlflowRunLink", (out.stdout + out.stderr)[-2000:]
