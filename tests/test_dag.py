"""The DAG files import cleanly in Airflow and are wired as documented: `cognigy_nlu_retrain` (one run per bot and
locale, Airflow's own branches after the gates and after the release) and `cognigy_nlu_fleet` (one named retrain run
per bot and locale, then the night's summary)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import pytest

from devtools.servers import ROOT

BRANCHES = ("decide", "approve", "confirm")  # the tasks that choose a path (the others on it are skipped)


@pytest.fixture(scope="module")
def dag_facts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Load the DagBag in a child process with a throwaway Airflow home (Airflow reads config at import)."""
    home = tmp_path_factory.mktemp("airflow-home")
    code = textwrap.dedent(
        """
        import json
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk.bases.branch import BranchMixIn
        from airflow.sdk import BaseSensorOperator
        bag = DagBag(dag_folder="dags")

        def facts_of(dag):
            def one(t):
                kind = getattr(t, "operator_class", None) or type(t)  # a mapped task: the operator it maps
                kind = kind if isinstance(kind, type) else type(t)
                return {"downstream": sorted(t.downstream_task_ids), "upstream": sorted(t.upstream_task_ids),
                        "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                        "type": kind.__name__, "mapped": type(t).__name__ == "MappedOperator",
                        "bases": [f"{c.__module__}.{c.__qualname__}" for c in kind.__mro__],
                        "branch": issubclass(kind, BranchMixIn), "sensor": issubclass(kind, BaseSensorOperator),
                        "deferrable": bool(getattr(t, "partial_kwargs", {}).get("deferrable")
                                           or getattr(t, "deferrable", None)),
                        "retries": t.retries, "doc": bool(t.doc_md),
                        "weight_rule": str(getattr(t.weight_rule, "value", t.weight_rule)),
                        "priority": t.priority_weight, "pool": t.pool}
            return {"tasks": {t.task_id: one(t) for t in dag.tasks}, "schedule": str(dag.schedule),
                    "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
                    "params": dict(dag.params.dump()), "doc": bool(dag.doc_md),
                    "param_schemas": {k: dag.params.get_param(k).schema for k in dag.params}}

        facts = {"errors": {k: str(v)[-400:] for k, v in bag.import_errors.items()},
                 "dags": {dag_id: facts_of(dag) for dag_id, dag in bag.dags.items()}}
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


@pytest.fixture(scope="module")
def retrain(dag_facts: dict) -> dict:
    assert "cognigy_nlu_retrain" in dag_facts["dags"], dag_facts["errors"]
    return dag_facts["dags"]["cognigy_nlu_retrain"]


@pytest.fixture(scope="module")
def fleet(dag_facts: dict) -> dict:
    assert "cognigy_nlu_fleet" in dag_facts["dags"], dag_facts["errors"]
    return dag_facts["dags"]["cognigy_nlu_fleet"]


def test_dags_import_without_errors(dag_facts: dict) -> None:
    assert dag_facts["errors"] == {}
    assert {"cognigy_nlu_retrain", "cognigy_nlu_fleet"} <= set(dag_facts["dags"])


def test_one_run_retrains_one_target_without_a_mapped_group(retrain: dict) -> None:
    """The graph view shows one line of plain task ids: no `retrain.` group, nothing mapped."""
    t = retrain["tasks"]
    assert set(t) == {"validate", "capture", "submit", "wait_for_training", "evaluate", "decide", "approve",
                      "promote", "release", "confirm", "rollback", "mlflow_sync", "audit", "watcher"}  # fmt: skip
    assert not any(v["mapped"] for v in t.values())


def test_pipeline_order(retrain: dict) -> None:
    t = retrain["tasks"]
    assert "capture" in t["validate"]["downstream"]  # (every task reads validate's target and plan)
    assert "submit" in t["capture"]["downstream"]
    assert "wait_for_training" in t["submit"]["downstream"]
    assert "evaluate" in t["wait_for_training"]["downstream"]
    assert "decide" in t["evaluate"]["downstream"]
    # decide: every path the gates can choose, straight from the branch
    assert set(t["decide"]["downstream"]) == {"approve", "promote", "release", "confirm", "rollback", "mlflow_sync",
                                              "watcher"}  # fmt: skip
    assert set(t["approve"]["downstream"]) >= {"promote", "release", "confirm", "rollback", "mlflow_sync"}
    assert "release" in t["promote"]["downstream"]  # staging: the promoted live flow is then released
    assert "confirm" in t["release"]["downstream"]  # after the release: did the judged model reach customers?
    assert set(t["confirm"]["downstream"]) == {"rollback", "mlflow_sync", "watcher"}
    assert "mlflow_sync" in t["rollback"]["downstream"]
    assert set(t["mlflow_sync"]["downstream"]) == {"audit", "watcher"}
    assert t["audit"]["downstream"] == ["watcher"]


def test_every_result_a_later_task_reads_comes_from_a_task_that_runs_before_it(retrain: dict) -> None:
    """Later tasks read earlier results by stage (cognigy_airflow.record.STAGES: record field -> task id): a renamed or
    reordered task fails here instead of leaving a result silently empty."""
    from cognigy_airflow.record import STAGES

    t = retrain["tasks"]

    def ancestors(task_id: str) -> set[str]:
        found, todo = set(), list(t[task_id]["upstream"])
        while todo:
            up = todo.pop()
            if up not in found:
                found.add(up)
                todo.extend(t[up]["upstream"])
        return found

    producers = [task_id for task_id, _ in STAGES.values()]
    assert set(producers) <= set(t), set(producers) - set(t)
    for earlier, later in itertools.pairwise(producers):
        assert earlier in ancestors(later), f"{earlier} must run before {later}"
    assert set(producers) <= ancestors("audit")  # the audit reads them all


def test_the_decisions_are_airflow_branch_operators(retrain: dict) -> None:
    """decide, approve and confirm are branch operators: Airflow skips the paths they do not take, so the grid shows
    which path a run took; nothing else branches."""
    t = retrain["tasks"]
    assert {k for k, v in t.items() if v["branch"]} == set(BRANCHES)
    assert t["approve"]["type"] == "CognigyApprovalOperator"  # a person decides (HITL), opt-in per run


def test_trigger_rules(retrain: dict) -> None:
    """The branches and the audit run whatever happened before them (a failed training still settles and audits);
    the tasks on a branch's path run when it was taken and nothing before them on it failed; the steps up to the gates
    need their predecessor to succeed (evaluate no longer runs after a failed wait)."""
    rules = {k: v["trigger_rule"] for k, v in retrain["tasks"].items()}
    for name in ("decide", "confirm", "mlflow_sync", "audit"):
        assert rules[name] == "all_done", name
    for name in ("promote", "release", "rollback"):
        assert rules[name] == "none_failed_min_one_success", name
    for name in ("validate", "capture", "submit", "wait_for_training", "evaluate"):
        assert rules[name] == "all_success", name
    assert rules["watcher"] == "one_failed"


def test_failure_is_not_hidden_by_the_all_done_audit(retrain: dict) -> None:
    t = retrain["tasks"]
    upstream_of_watcher = [k for k, v in t.items() if "watcher" in v["downstream"]]
    assert set(upstream_of_watcher) == set(t) - {"watcher"}
    assert t["watcher"]["retries"] == 0 and t["audit"]["retries"] == 0


def test_the_wait_is_a_deferrable_sensor(retrain: dict) -> None:
    """The DAG's step (plugins folder) subclasses the provider's generic sensor."""
    wait = retrain["tasks"]["wait_for_training"]
    assert wait["type"] == "WaitForTraining" and wait["sensor"] and wait["deferrable"]
    assert "cognigy_provider.sensors.cognigy.CognigyTrainingSensor" in wait["bases"]


def test_what_starts_or_ends_a_training_gets_a_tenant_slot_before_scoring(retrain: dict) -> None:
    """Trainings are a fleet night's long pole: a free slot of the tenant's pool goes to a task that starts or ends
    one, then to the champion's scoring (it lets the next training start), then to the challenger's. The wait holds
    no tenant slot (it reads the training once, then waits deferred: resuming must not queue behind scoring)."""
    t = retrain["tasks"]
    assert {v["weight_rule"] for v in t.values()} == {"absolute"}
    weight = {k: v["priority"] for k, v in t.items() if v["pool"] == "cognigy_tenant"}
    assert set(weight) == {"capture", "submit", "evaluate", "promote", "release", "rollback"}
    ends = ("submit", "promote", "release", "rollback")
    assert min(weight[name] for name in ends) > weight["capture"]
    assert weight["capture"] > weight["evaluate"]
    assert t["wait_for_training"]["pool"] != "cognigy_tenant"
    assert t["wait_for_training"]["priority"] >= max(weight.values())  # still ahead when it needs a worker
    for name in ("validate", "decide", "confirm", "audit", "mlflow_sync"):  # no Cognigy call: no tenant slot
        assert t[name]["pool"] != "cognigy_tenant", name


def test_schedule_params_and_docs(retrain: dict) -> None:
    assert retrain["schedule"] == "None"  # nights are cognigy_nlu_fleet's
    assert retrain["catchup"] is False
    assert retrain["max_active_runs"] > 1  # a fleet night's runs overlap
    params = retrain["params"]
    for name in ("flow_id", "locales", "mode", "dry_run", "bias_ceiling", "precision_floor", "held_out_uri",
                 "training_data_uri", "promotion", "staging_flow_id", "retrain_unchanged", "fleet"):  # fmt: skip
        assert name in params
    # The defaults never import the shipped demo data into a flow: the demo is asked for by name.
    assert params["training_data_source"] == "flow"
    assert not params["held_out_uri"]  # no held-out set until the user names one
    assert params["promotion"] == "staging"
    assert params["fleet"] is None  # set by the fleet DAG only
    assert retrain["doc"] and all(v["doc"] for k, v in retrain["tasks"].items())
    assert retrain["tasks"]["validate"]["retries"] == 0


def test_the_form_requires_the_target(retrain: dict) -> None:
    """No demo ids as defaults: the trigger form will not start a run until the bot and its one locale are named."""
    params, schemas = retrain["params"], retrain["param_schemas"]
    for name in ("project_id", "flow_id", "locales", "model_id"):
        assert params[name] is None, (name, params[name])  # no default value
    assert params["staging_flow_id"] is None  # no demo staging flow either
    assert schemas["locales"]["minItems"] == schemas["locales"]["maxItems"] == 1  # one run, one locale
    assert schemas["project_id"]["type"] == schemas["flow_id"]["type"] == "string"  # not nullable: required


def test_the_fleet_dag_triggers_one_named_run_per_target_and_summarizes_the_night(fleet: dict) -> None:
    t = fleet["tasks"]
    assert set(t) == {"plan_night", "retrain", "morning_summary", "watcher"}
    assert fleet["schedule"] == "0 2 * * *" and fleet["catchup"] is False and fleet["max_active_runs"] == 1
    assert "retrain" in t["plan_night"]["downstream"]
    assert t["retrain"]["mapped"] and t["retrain"]["type"] == "TriggerDagRunOperator"
    assert t["retrain"]["deferrable"], "waiting for a night's runs holds no worker slot"
    assert t["retrain"]["retries"] == 0  # the run id is fixed: a second try could only find the first one's run
    assert sorted(t["retrain"]["downstream"]) == ["morning_summary", "watcher"]
    assert t["watcher"]["trigger_rule"] == "one_failed"  # a failed retrain run fails the night (leaf: the summary)
    assert t["morning_summary"]["trigger_rule"] == "all_done"  # the summary comes whatever the runs' outcomes
    assert {"plan_night", "retrain"} <= set(t["morning_summary"]["upstream"])
    params = fleet["params"]
    assert not {"project_id", "flow_id", "locales", "model_id", "fleet"} & set(params)  # the fleet's entries name them
    assert "promotion" in params and "dry_run" in params  # the night's settings, for every entry
    assert fleet["doc"] and all(v["doc"] for v in t.values())
