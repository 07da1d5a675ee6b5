"""Extra links after a real fleet night: the URLs Airflow stored for the task pages' buttons.

Airflow 3 stores a link's URL in the XCom `_link_<LinkClass>` of the task instance when the task ends; the UI
reads it from there. The night is tests/test_fleet.py's (`fleet_night`: one retrain run per target, under a real
scheduler; one promoted, one rejected, one whose training failed), its XComs read from the stack's database.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from devtools.servers import ROOT
from emulator import seed
from include.defaults import DEMO_STAGING_FLOW_ID
from tests.test_fleet import BROKEN_STAGING_FLOW, by_name, events_of, fleet_night  # noqa: F401  (the shared night)

pytestmark = pytest.mark.slow
STAGING = {"broken EN": BROKEN_STAGING_FLOW, "support EN": DEMO_STAGING_FLOW_ID, "support DE": DEMO_STAGING_FLOW_ID}


def flow_url(night: dict, locale: str, job_id: str, flow_id: str = seed.FLOW_ID) -> str:
    return f"{night['emulator_url']}/agent/{seed.PROJECT_ID}/flow/{flow_id}/nlu?locale={locale}&task={job_id}"


def test_submit_and_wait_link_to_the_cognigy_training(fleet_night: dict) -> None:  # noqa: F811
    """The challenger trains in the target's staging flow: the buttons open that flow and its training."""
    runs = by_name(fleet_night)
    assert set(runs) == set(STAGING)
    for name, run in runs.items():
        (submitted,) = events_of(fleet_night, run["run_id"], "training_submitted")
        locale, job_id = submitted["target"]["locale"], submitted["cognigy_job_id"]
        assert submitted["trained_flow"] == STAGING[name]
        expected = flow_url(fleet_night, locale, job_id, STAGING[name])
        assert run["links"]["submit"]["_link_CognigyTaskLink"] == expected, run["links"]
        assert run["links"]["wait_for_training"]["_link_CognigyTaskLink"] == expected


def test_promote_links_to_the_production_training(fleet_night: dict) -> None:  # noqa: F811
    started = {name: events_of(fleet_night, run["run_id"], "promotion_training_started")
               for name, run in by_name(fleet_night).items()}  # fmt: skip
    assert [name for name, events in started.items() if events] == ["support EN"], started  # only what passed
    promotion = started["support EN"][-1]
    run = by_name(fleet_night)["support EN"]
    url = run["links"]["promote"]["_link_CognigyTaskLink"]
    assert url == flow_url(fleet_night, "en-US", promotion["promotion_job_id"])  # the production flow


def test_mlflow_sync_links_to_the_mlflow_run(fleet_night: dict) -> None:  # noqa: F811
    for name, run in by_name(fleet_night).items():  # the failed target is recorded too (as FAILED)
        (record,) = events_of(fleet_night, run["run_id"], "mlflow_synced")
        url = run["links"]["mlflow_sync"]["_link_MlflowRunLink"]
        assert url == record["mlflow_run_url"], name
        assert url.startswith(fleet_night["mlflow_url"]) and record["mlflow_run_id"] in url


def test_the_provider_registers_both_links_for_the_ui(tmp_path) -> None:
    """The provider package registers both link classes (`extra-links`), and Airflow can import them."""
    code = textwrap.dedent(
        """
        from airflow.providers_manager import ProvidersManager
        names = sorted(name.rsplit(".", 1)[1] for name in ProvidersManager().extra_links_class_names
                       if name.startswith("cognigy_provider.links.cognigy."))
        print("LINKS", ",".join(names))
        """
    )
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LINKS")), "")
    assert line == "LINKS CognigyTaskLink,MlflowRunLink", (out.stdout + out.stderr)[-2000:]
