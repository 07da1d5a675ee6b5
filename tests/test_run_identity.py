"""Run identity: per-run state is keyed by the run attempt, so runs never share or escape their folder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from include import settings


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_run_ids_that_sanitise_alike_get_different_folders() -> None:
    a = settings.run_dir("dag", "manual__2026-01-01T00:00:00+00:00", "flow/en-US", "c0-a")
    b = settings.run_dir("dag", "manual__2026-01-01T00_00_00_00_00", "flow/en-US", "c0-a")
    assert a != b
    assert a.name == b.name == "flow_en-US"


def test_a_dot_dot_run_id_stays_inside_the_state_root(_state) -> None:
    folder = settings.run_dir("dag", "..", "flow/en-US", "c0-a").resolve()
    assert folder.is_relative_to((_state / "runs" / "dag").resolve())


def test_a_cleared_run_starts_in_a_clean_folder() -> None:
    """`validate` mints a new attempt id whenever the run is (re)started: same run_id, new folder."""
    from cognigy_airflow.validate import run_attempt

    first = run_attempt({"dag_run": SimpleNamespace(clear_number=0)})
    after_clear = run_attempt({"dag_run": SimpleNamespace(clear_number=1)})
    old = settings.run_dir("dag", "manual__1", "flow/en-US", first)
    (old / "rollback_point.json").write_text("{}")
    new = settings.run_dir("dag", "manual__1", "flow/en-US", after_clear)
    assert new != old and not (new / "rollback_point.json").exists()
    assert after_clear.startswith("c1-")
