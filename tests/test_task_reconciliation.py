"""Issue 26, item 1: on a tenant whose task list returns every kind of task, paged, the product follows its own
intent trainings, cancels none, and proves the change before it reports it.

The stand-in: the emulator lists every task type (imports carry the same `flowId`/`localeId` as trainings), ignores
the undocumented `type` filter, and here serves at most 3 tasks a page (`task_page_cap`), so a client that reads
one page, or trusts a filter, sees the wrong tasks. Before the fix, a staging run kept an import task as "the
training", cancelled its own staging and production trainings as duplicates, and still ended `promoted`.

Each run is a whole `airflow dags test` (trigger included) on the staging path with a challenger the gates pass.
What a user would check afterwards: the emulator's count of trainings per flow, that no task was cancelled, that
production holds and is trained on exactly the staged intents (export fingerprint, `isTrainingOutOfDate`), and that
no held-out utterance was scored while a training of the judged flow ran (`scores_while_training`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from devtools.servers import Emulator
from emulator import seed
from tests.test_fault_matrix import names
from tests.test_staging import LOCALE, PROD, PROMOTED, STAGING, delta, export_fingerprint, per_flow, run_dag, xcom

pytestmark = pytest.mark.slow

TRAIN_POST = r"/intents/train$"


@pytest.fixture
def strict_tenant(emulator: Emulator) -> Emulator:
    emulator.reset()
    emulator.knobs(training_seconds=2, task_page_cap=3)
    return emulator


def flow_state(emulator: Emulator, flow_id: str) -> dict:
    resp = requests.get(
        f"{emulator.url}/new/v2.0/flows/{flow_id}",
        params={"preferredLocaleId": seed.LOCALE_IDS[LOCALE]},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    return resp.json()


def assert_one_proven_training_per_flow(emulator: Emulator, run, before: dict[str, int], airflow_home) -> None:
    assert run.state == "success", names(run.events)
    assert run.final["outcome"] == "promoted", run.final
    assert delta(per_flow(emulator), before) == {"production": 1, "staging": 1}
    stats = emulator.stats()
    assert "cancelled" not in stats["tasks"] and "cancelling" not in stats["tasks"], stats["tasks"]
    assert "duplicate_training_cancelled" not in names(run.events)
    assert "concurrent_training_seen" not in names(run.events)
    staged = xcom(airflow_home, run.run_id, "submit")["fingerprint"]
    for flow in (STAGING, PROD):
        assert export_fingerprint(emulator, flow) == staged, flow
        assert flow_state(emulator, flow)["isTrainingOutOfDate"] is False, flow
    assert stats["scores_while_training"] == {}, "held-out utterances were scored while a training ran"
    promoted = run.event("promotion_verified")
    assert promoted["fingerprint"] == staged


def test_a_staging_run_follows_its_own_trainings_on_a_task_list_of_every_kind(
    airflow_home, strict_tenant: Emulator, tmp_path: Path
) -> None:
    before = per_flow(strict_tenant)
    run = run_dag(airflow_home, tmp_path, PROMOTED)
    assert_one_proven_training_per_flow(strict_tenant, run, before, airflow_home)


def test_a_training_post_that_loses_its_answer_is_found_not_repeated(
    airflow_home, strict_tenant: Emulator, tmp_path: Path
) -> None:
    """The platform starts the staging training, then the connection drops before the answer: the submit finds
    that training in the task list (an intent training of that flow/locale, not the import before it) and starts
    no second one."""
    strict_tenant.knobs(
        drop_connections=[{"method": "POST", "path_regex": TRAIN_POST, "count": 1, "after_processing": True}]
    )
    before = per_flow(strict_tenant)
    run = run_dag(airflow_home, tmp_path, PROMOTED)
    assert strict_tenant.knobs()["drop_connections"] == [], "the dropped answer happened"
    assert_one_proven_training_per_flow(strict_tenant, run, before, airflow_home)
