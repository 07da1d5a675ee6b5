"""The DAG file imports cleanly in Airflow and is wired as documented."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from devtools.servers import ROOT


@pytest.fixture(scope="module")
def dag_facts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Load the DagBag in a child process with a throwaway Airflow home (Airflow reads config at import)."""
    home = tmp_path_factory.mktemp("airflow-home")
    code = textwrap.dedent(
        """
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder="dags")
        dag = bag.dags.get("cognigy_nlu_retrain")
        facts = {"errors": {k: str(v)[-400:] for k, v in bag.import_errors.items()}}
        if dag:
            facts.update(
                tasks={t.task_id: {"downstream": sorted(t.downstream_task_ids),
                                   "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                                   "type": type(t).__name__, "retries": t.retries, "doc": bool(t.doc_md),
                                   "weight_rule": str(getattr(t.weight_rule, "value", t.weight_rule)),
                                   "priority": t.priority_weight, "pool": t.pool}
                       for t in dag.tasks},
                schedule=str(dag.schedule), catchup=dag.catchup, params=dict(dag.params.dump()),
                doc=bool(dag.doc_md))
        print("FACTS" + json.dumps(facts, default=str))
        """
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/a.db",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("FACTS")), None)
    assert line, out.stderr[-2000:]
    import json

    return json.loads(line[5:])


def test_dag_imports_without_errors(dag_facts: dict) -> None:
    assert dag_facts["errors"] == {}
    assert "tasks" in dag_facts


def test_pipeline_order_per_target(dag_facts: dict) -> None:
    t = dag_facts["tasks"]
    assert t["validate"]["downstream"] == ["targets", "watcher"] or "targets" in t["validate"]["downstream"]
    assert "retrain.submit" in t["retrain.capture"]["downstream"]
    assert "retrain.wait_for_training" in t["retrain.submit"]["downstream"]
    assert "retrain.evaluate" in t["retrain.wait_for_training"]["downstream"]
    assert "retrain.promote" in t["retrain.evaluate"]["downstream"]
    assert "retrain.rollback" in t["retrain.promote"]["downstream"]  # a failed promotion restores production
    assert "retrain.release" in t["retrain.promote"]["downstream"]  # snapshot path: the judged model is released
    assert "retrain.rollback" in t["retrain.release"]["downstream"]  # a failed release restores the live flow
    assert "retrain.mlflow_sync" in t["retrain.rollback"]["downstream"]
    assert "retrain.finalize" in t["retrain.mlflow_sync"]["downstream"]


def test_in_a_fleet_what_starts_or_ends_a_training_gets_a_tenant_slot_before_scoring(dag_facts: dict) -> None:
    """Trainings are a fleet's long pole: a free slot of the tenant's pool goes to a task that starts or ends one,
    then to the champion's scoring (it lets the next training start), then to the challenger's."""
    t = dag_facts["tasks"]
    assert {v["weight_rule"] for v in t.values()} == {"absolute"}
    weight = {k.removeprefix("retrain."): v["priority"] for k, v in t.items() if v["pool"] == "cognigy_tenant"}
    assert set(weight) == {"capture", "submit", "wait_for_training", "evaluate", "promote", "release", "rollback"}
    ends = ("submit", "wait_for_training", "promote", "release", "rollback")
    assert min(weight[name] for name in ends) > weight["capture"]
    assert weight["capture"] > weight["evaluate"]


def test_the_wait_is_the_deferrable_operator(dag_facts: dict) -> None:
    assert dag_facts["tasks"]["retrain.wait_for_training"]["type"] == "CognigyWaitForTrainingOperator"


def test_failure_is_not_hidden_by_the_all_done_leaf(dag_facts: dict) -> None:
    t = dag_facts["tasks"]
    assert t["retrain.finalize"]["trigger_rule"] == "all_done"
    assert t["watcher"]["trigger_rule"] == "one_failed"
    assert "morning_summary" in t["retrain.finalize"]["downstream"], "the night's summary after every target"
    assert t["morning_summary"]["trigger_rule"] == "all_done"
    upstream_of_watcher = [k for k, v in t.items() if "watcher" in v["downstream"]]
    assert set(upstream_of_watcher) == set(t) - {"watcher"}


def test_schedule_params_and_docs(dag_facts: dict) -> None:
    assert dag_facts["schedule"] == "0 2 * * *"
    assert dag_facts["catchup"] is False
    params = dag_facts["params"]
    for name in ("flow_id", "locales", "mode", "dry_run", "bias_ceiling", "precision_floor", "held_out_uri",
                 "training_data_uri", "promotion", "staging_flow_id", "retrain_unchanged"):  # fmt: skip
        assert name in params
    # The defaults never import the shipped demo data into a flow: the demo is asked for by name.
    assert params["training_data_source"] == "flow"
    assert not params["held_out_uri"]  # no held-out set until the user names one
    assert params["promotion"] == "staging"
    assert dag_facts["doc"] and all(v["doc"] for k, v in dag_facts["tasks"].items())
    assert dag_facts["tasks"]["validate"]["retries"] == 0
