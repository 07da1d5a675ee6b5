"""A fleet night under a real scheduler: the DAG `cognigy_nlu_fleet` triggers one `cognigy_nlu_retrain` run per
flow/locale (bench/fleet_stack.local_stack: scheduler, dag-processor, triggerer and api-server as separate
processes, PostgreSQL and Redis of their own, a real MLflow server, a fresh emulator).

Three targets, one outcome each, decided by the request and not by timing:
- "support EN" (the demo flow's en-US, 40 sentences per intent) passes the gates: promoted from its staging flow;
- "support DE" (the demo flow's de-DE) learns from 3 sentences per intent and must reach a macro recall of 1.0:
  rejected in its staging flow, production untouched;
- "broken EN" (a flow of its own, with a staging flow of its own) has its training failed by the emulator
  (`fail_next_trainings=1` fails the first training that ends). Its champion is judged on 2 held-out utterances
  per intent (the others on 8) and the emulator answers every request 30 ms late, so its capture ends and its
  training starts seconds before the others'; the test checks that it was indeed this target's training.
The night is shared with tests/test_links.py and tests/test_branching.py (`fleet_night`): built once per pytest
run, also across pytest-xdist workers (the first worker builds it and keeps what the tests read as JSON; the
others wait for that file under a lock), so a session starts one slow stack for the three files.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.airflow_env import DEMO_CONF
from emulator import seed
from include.records.audit import read, verify
from include.request.fleet import TENANT_POOL, FleetInvalid, load_fleet, parse_fleet, shared_flow_problems
from include.request.retrain_request import parse_request

pytestmark = pytest.mark.slow

FLEET = [
    {"name": "support EN", "projectId": seed.PROJECT_ID, "flowId": seed.FLOW_ID, "locales": ["en-US"],
     "modelId": seed.MODEL_IDS["en-US"]},
    {"name": "support DE", "projectId": seed.PROJECT_ID, "flowId": seed.FLOW_ID, "locales": ["de-DE"],
     "modelId": seed.MODEL_IDS["de-DE"], "overrides": {"samples_per_intent": 70}},
]  # fmt: skip
# The night's fleet: the demo flow's two locales (de-DE cannot pass) and a flow whose training fails.
BROKEN_FLOW, BROKEN_STAGING_FLOW = "66f0a1b2c3d4e5f6000000b1", "66f0a1b2c3d4e5f6000000b2"
CANNOT_PASS = {"samples_per_intent": 3, "recall_floor": 1.0}
FAST_CAPTURE = {"held_out_per_intent": 2, "allow_unevaluated_gates": ["per_intent_floor", "bias"]}
EXPECTED = {"broken EN": "training_failed", "support EN": "promoted", "support DE": "rejected"}
# The fleet form's values (its form is the retrain form without the target fields): the demo data by name.
CONF = {**{k: v for k, v in DEMO_CONF.items() if k not in ("project_id", "flow_id", "locales", "model_id")},
        "requests_per_second": 100, "held_out_per_intent": 8, "samples_per_intent": 40}  # fmt: skip
EMULATOR_LIMIT = {"requests": 1000, "per_seconds": 300.0}  # the emulator's default limit, given to the connection
_NIGHT: dict[str, Any] = {}  # the night, once per process


def night_fleet(broken_model_id: str) -> list[dict]:
    return [
        {"name": "broken EN", "projectId": seed.PROJECT_ID, "flowId": BROKEN_FLOW, "locales": ["en-US"],
         "modelId": broken_model_id, "overrides": {"staging_flow_id": BROKEN_STAGING_FLOW, **FAST_CAPTURE},
         "note": "test: the emulator fails this target's training"},
        FLEET[0],
        {**FLEET[1], "overrides": CANNOT_PASS, "note": "test: 3 sentences per intent cannot reach a recall of 1.0"},
    ]  # fmt: skip


@pytest.fixture(scope="session")
def fleet_night(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The night (see the module docstring), as plain data: the fleet run and every retrain run it triggered
    (state, note, conf, task instances, extra-link XComs), the audit records of those runs, the pool, the
    emulator's counters and exports, the morning summary, the emulator's and MLflow's URLs."""
    if _NIGHT:
        return _NIGHT
    testrun = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if testrun is None:
        _NIGHT.update(_build_night(tmp_path_factory.mktemp("fleet-night")))
    else:
        from filelock import FileLock

        shared = tmp_path_factory.getbasetemp().parent / f"fleet-night-{testrun}.json"
        with FileLock(f"{shared}.lock"):
            if not shared.exists():
                shared.write_text(json.dumps(_build_night(tmp_path_factory.mktemp("fleet-night"))))
            _NIGHT.update(json.loads(shared.read_text()))
    if _NIGHT.get("error"):
        pytest.fail(f"the fleet night could not be run:\n{_NIGHT['error']}")
    return _NIGHT


def _build_night(work: Path) -> dict[str, Any]:
    from bench.fleet_stack import local_stack
    from devtools.servers import start_emulator, start_mlflow

    emulator = start_emulator(work / "emulator")
    mlflow = start_mlflow(work / "mlflow")
    try:
        emulator.create_flow(seed.PROJECT_ID, BROKEN_STAGING_FLOW, "Broken flow (staging)",
                             {"en-US": seed.seed_examples("en-US")})  # fmt: skip
        created = emulator.create_flow(seed.PROJECT_ID, BROKEN_FLOW, "Broken flow",
                                       {"en-US": seed.seed_examples("en-US")})  # fmt: skip
        fleet = night_fleet(created["locales"]["en-US"]["model_id"])
        with local_stack(
            work / "airflow",
            emulator,
            rate_limit=EMULATOR_LIMIT,
            pool_slots=8,
            include_deferred=False,
            extra_env={"AIRFLOW_VAR_COGNIGY_FLEET": json.dumps(fleet)},
            mlflow_url=mlflow.url,
        ) as stack:
            emulator.knobs(training_seconds=6, fail_next_trainings=1, latency_ms=30,
                           rate_limit_requests=EMULATOR_LIMIT["requests"],
                           rate_limit_window_seconds=EMULATOR_LIMIT["per_seconds"])  # fmt: skip
            before = emulator.stats()
            night = stack.run_fleet_night(CONF, timeout=1500)
            after = emulator.stats()
            emulator.knobs(latency_ms=0)
            for run_id, run in night["runs"].items():
                run["links"] = {}
                for x in stack.xcoms(run_id, key_like="_link_%"):
                    run["links"].setdefault(x["task_id"], {})[x["key"]] = x["value"]
            night["xcoms"] = stack.xcoms(night["run_id"], dag_id="cognigy_nlu_fleet", key_like="return_value")
            pool = stack.api("GET", f"/api/v2/pools/{TENANT_POOL}").json()
            audit_path = stack.state_dir / "audit" / "retrain_audit.jsonl"
            summary = next((x["value"] for x in night["xcoms"] if x["task_id"] == "morning_summary"), None) or {}
            summary_path = Path(summary["summary_path"]) if summary.get("summary_path") else None
            night.update(
                events=read(audit_path, run_id=sorted(night["runs"])) if night["runs"] else [],
                audit_ok=verify(audit_path).ok,
                pool={"slots": pool.get("slots"), "include_deferred": pool.get("include_deferred")},
                responses_429=after["responses_429"] - before["responses_429"],
                summary=summary,
                summary_text=summary_path.read_text() if summary_path and summary_path.exists() else None,
                fleet=fleet,
                emulator_url=emulator.url,
                mlflow_url=mlflow.url,
                tails=stack.tails(30) if night["state"] != "failed" or len(night["runs"]) != 3 else "",
            )
        broken_locale = created["locale_ids"]["en-US"]
        night["exports"] = {
            f"{flow}/{loc}": _export(emulator, flow, locale_id)
            for flow, loc, locale_id in ((seed.FLOW_ID, "en-US", seed.LOCALE_IDS["en-US"]),
                                         (seed.FLOW_ID, "de-DE", seed.LOCALE_IDS["de-DE"]),
                                         (BROKEN_FLOW, "en-US", broken_locale))
        }  # fmt: skip
        return night
    except Exception:
        return {"error": traceback.format_exc()}
    finally:
        mlflow.stop()
        emulator.stop()


def _export(emulator, flow_id: str, locale_id: str) -> list[dict]:
    resp = requests.post(
        f"{emulator.url}/new/v2.0/flows/{flow_id}/intents/export",
        json={"localeId": locale_id, "format": "json"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=30,
    )
    resp.raise_for_status()
    return resp.json()


def by_name(night: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The night's retrain runs by fleet entry name (the run's conf names its night and entry label)."""
    out = {}
    for run_id, run in night["runs"].items():
        label = run["conf"]["fleet"]["label"]  # "fleet[<i>] (<name>)"
        name = label.split("(", 1)[1].rstrip(")") if "(" in label else label
        out[name] = {**run, "run_id": run_id}
    return out


def states(run: dict[str, Any]) -> dict[str, str | None]:
    return {ti["task_id"]: ti["state"] for ti in run["task_instances"]}


def events_of(night: dict[str, Any], run_id: str, event: str) -> list[dict]:
    return [e for e in night["events"] if e["run_id"] == run_id and e["event"] == event]


def by_locale(events: list[dict], event: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        if e["event"] == event and e.get("target") and "locale" in e["target"]:
            out.setdefault(e["target"]["locale"], []).append(e)
    return out


# --- the fleet definition (no DAG run) -----------------------------------------------------------------
def test_the_shipped_fleet_file_is_the_emulators_two_locales() -> None:
    entries, source = load_fleet(None)
    assert source.endswith("include/request/fleet.json")
    assert [(e.flowId, e.locales) for e in entries] == [(seed.FLOW_ID, ["en-US"]), (seed.FLOW_ID, ["de-DE"])]
    assert [str(e.modelId) for e in entries] == [seed.MODEL_IDS["en-US"], seed.MODEL_IDS["de-DE"]]


def test_the_variable_wins_over_the_file() -> None:
    entries, source = load_fleet(json.dumps(FLEET[1:]))
    assert source == "Airflow Variable cognigy_fleet" and [e.locales for e in entries] == [["de-DE"]]


def test_a_bad_fleet_names_every_problem() -> None:
    bad = [
        FLEET[0],
        {**FLEET[1], "flowId": "../admin"},
        {**FLEET[0], "name": "again"},  # en-US of the same flow twice
        {**FLEET[1], "overrides": {"dry_run": True}},  # a run-wide switch, not a per-flow setting
    ]
    with pytest.raises(FleetInvalid) as caught:
        parse_fleet(json.dumps(bad))
    errors = caught.value.errors
    assert any(e.startswith("fleet[1].flowId") for e in errors), errors
    assert any(e.startswith("fleet[2]") and "already retrained by entry 0" in e for e in errors), errors
    assert any(e.startswith("fleet[3].overrides") and "dry_run" in e for e in errors), errors
    assert len(errors) == 3
    for empty in ("[]", "{}", "not json"):
        with pytest.raises(FleetInvalid):
            parse_fleet(empty)


def test_an_entry_keeps_the_run_params_it_does_not_override() -> None:
    entry = parse_fleet([FLEET[1]])[0]
    params = entry.params({"samples_per_intent": 40, "recall_floor": 0.8, "flow_id": "x", "request_json": "{}"})
    assert params["samples_per_intent"] == 70 and params["recall_floor"] == 0.8
    assert params["flow_id"] == seed.FLOW_ID and params["locales"] == ["de-DE"]
    assert "request_json" not in params  # a single-flow request must not replace every fleet entry


# --- issue 26, item 3: entries must not share a staging flow ------------------------------------------------
OTHER_FLOW = "6630a1b2c3d4e5f6012345aa"


def _requests(fleet: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Each entry's retraining request as `validate` builds it: the form's defaults + the entry + its overrides."""
    from cognigy_airflow.form import PARAMS
    from cognigy_airflow.validate import request_from_params

    run_params = {**{name: param.value for name, param in PARAMS.items()}, **DEMO_CONF}
    entries = parse_fleet(fleet)
    return [(e.label(i), parse_request(request_from_params(e.params(run_params)))) for i, e in enumerate(entries)]


def test_two_entries_training_in_one_staging_flow_and_locale_are_refused_by_name() -> None:
    """Both flows default to the run's staging flow: their challengers would overwrite each other's intents."""
    fleet = [FLEET[0], {**FLEET[0], "name": "sales EN", "flowId": OTHER_FLOW}]
    problems = shared_flow_problems(_requests(fleet))
    assert problems == [
        f"fleet[1] (sales EN): promotion.stagingFlowId: staging flow {seed.STAGING_FLOW_ID} locale en-US is "
        "also the staging flow of fleet[0] (support EN); their trainings would overwrite each other's intents: "
        "give each entry a staging flow of its own (overrides.staging_flow_id)"
    ]


def test_an_entrys_production_flow_as_another_entrys_staging_flow_is_refused_by_name() -> None:
    fleet = [FLEET[0], {**FLEET[0], "name": "sales EN", "flowId": OTHER_FLOW,
                        "overrides": {"staging_flow_id": seed.FLOW_ID}}]  # fmt: skip
    problems = shared_flow_problems(_requests(fleet))
    assert problems == [
        f"fleet[1] (sales EN): promotion.stagingFlowId: staging flow {seed.FLOW_ID} locale en-US is the production "
        "flow of fleet[0] (support EN); its intents would be overwritten by every run: give each entry a staging "
        "flow of its own (overrides.staging_flow_id)"
    ]


def test_one_staging_flow_for_different_locales_or_in_place_entries_is_fine() -> None:
    assert shared_flow_problems(_requests(FLEET)) == []  # en-US and de-DE of one staging flow: the shipped fleet
    in_place = {"promotion": "in_place"}
    fleet = [FLEET[0], {**FLEET[0], "flowId": OTHER_FLOW, "overrides": in_place}]
    assert shared_flow_problems(_requests(fleet)) == []


# --- the fleet night (tests/test_branching.py: each run's branch, task by task) --------------------------------
def test_one_failed_training_fails_the_night_after_auditing_every_target(fleet_night: dict) -> None:
    night = fleet_night
    assert len(night["runs"]) == 3, (sorted(night["runs"]), night["tails"])
    assert night["state"] == "failed"  # the broken target's run failed, so its `retrain` task did
    runs = by_name(night)
    completed = {name: events_of(night, run["run_id"], "retrain_completed") for name, run in runs.items()}
    assert all(completed.values()), (completed, night["tails"])
    # Staging promotion (the default): the failed training was the broken target's staging flow's.
    assert {name: evs[-1]["outcome"] for name, evs in completed.items()} == EXPECTED, night["tails"]
    assert {name: run["state"] for name, run in runs.items()} == {
        "broken EN": "failed", "support EN": "success", "support DE": "success"}  # fmt: skip
    assert night["audit_ok"]


def test_the_failed_and_the_rejected_target_leave_production_alone_the_other_is_promoted(fleet_night: dict) -> None:
    runs = by_name(fleet_night)
    broken, promoted, rejected = (runs[n]["run_id"] for n in ("broken EN", "support EN", "support DE"))
    failed = events_of(fleet_night, broken, "retrain_failed")
    assert failed and failed[-1]["outcome"] == "failed", failed  # the emulator failed its training
    assert not [e for e in fleet_night["events"] if e["event"] == "rollback_triggered"]  # staging: nothing to restore
    assert events_of(fleet_night, promoted, "promotion_verified")
    for run_id in (broken, rejected):
        assert not events_of(fleet_night, run_id, "promotion_started")
    for run_id in (broken, promoted, rejected):
        assert events_of(fleet_night, run_id, "mlflow_synced"), run_id  # the failed target is recorded too
    # On Cognigy: the failed and the rejected target serve the seeded sentences, the promoted one the new data.
    exports = fleet_night["exports"]
    for key in (f"{BROKEN_FLOW}/en-US", f"{seed.FLOW_ID}/de-DE"):
        assert all(len(i["exampleSentences"]) == seed.SEED_PER_INTENT for i in exports[key]), key
    assert max(len(i["exampleSentences"]) for i in exports[f"{seed.FLOW_ID}/en-US"]) > seed.SEED_PER_INTENT


def test_each_fleet_entry_is_its_own_request(fleet_night: dict) -> None:
    night = fleet_night
    initiated = [e for e in night["events"] if e["event"] == "retrain_initiated"]
    assert len(initiated) == 3 and len({e["request_hash"] for e in initiated}) == 3
    assert all(e["fleet"] and e["fleet_source"] == "Airflow Variable cognigy_fleet" for e in initiated)
    assert {e["fleet_run_id"] for e in initiated} == {night["run_id"]}
    runs = by_name(night)
    for run in runs.values():  # a run of its own per entry, named after the night and the entry
        assert run["run_id"].startswith(f"{night['run_id']}__"), run["run_id"]
        assert run["conf"]["fleet"]["run_id"] == night["run_id"] and len(run["conf"]["locales"]) == 1
    counts = {name: events_of(night, run["run_id"], "training_submitted")[-1]["training_counts"]
              for name, run in runs.items()}  # fmt: skip
    assert max(counts["support DE"].values()) == CANNOT_PASS["samples_per_intent"]  # the de-DE entry's override
    assert max(counts["support EN"].values()) == CONF["samples_per_intent"]  # the night's form value


def test_the_cognigy_tasks_ran_in_the_tenant_pool(fleet_night: dict) -> None:
    pool = fleet_night["pool"]
    assert pool["slots"] >= 1 and not pool["include_deferred"]  # deferred waits hold no slot: the budget is shared
    for name, run in by_name(fleet_night).items():
        pools = {ti["task_id"]: ti["pool"] for ti in run["task_instances"]}
        for task_id in ("capture", "submit", "evaluate", "promote", "release", "rollback"):
            assert pools[task_id] == TENANT_POOL, (name, pools)
        # It calls Cognigy once, then waits deferred: resuming must not queue for a slot (52feb13).
        assert pools["wait_for_training"] != TENANT_POOL, (name, pools)
        assert pools["mlflow_sync"] != TENANT_POOL  # MLflow is not the tenant


def test_the_shared_budget_held_and_every_held_out_utterance_was_scored(fleet_night: dict) -> None:
    assert fleet_night["responses_429"] == 0
    for name, run in by_name(fleet_night).items():
        if name == "broken EN":
            continue  # no challenger to score
        (event,) = events_of(fleet_night, run["run_id"], "retrain_completed")
        rows = (event.get("held_out") or {}).get("rows")
        assert rows and event["metrics"].get("n_scored") == rows, name


def test_the_morning_summary_lists_every_target(fleet_night: dict) -> None:
    summary = fleet_night["summary"]
    assert summary["targets"] == 3 and sorted(summary["outcomes"]) == sorted(EXPECTED.values()), summary
    text = fleet_night["summary_text"] or ""
    assert all(outcome in text for outcome in EXPECTED.values()), text


# --- the trigger form (no DAG run) ---------------------------------------------------------------------
FORM_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import DagSerialization
# What the API server holds: the serialized DAG, whose params create_dagrun validates against the run's conf.
dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(DagBag(dag_folder="dags").dags[sys.argv[2]]))
base = json.loads(sys.argv[3])  # the target (the retrain form's required fields; the fleet form has none)
dag.params.deep_merge(base).validate()  # the defaults themselves are valid
refused = {}
for name, value in json.loads(sys.argv[1]).items():
    try:
        dag.params.deep_merge(base).deep_merge({name: value}).validate()
        refused[name] = False
    except ParamValidationError:
        refused[name] = True
schemas = {k: dag.params.get_param(k).schema for k in dag.params}
print("FORM" + json.dumps({"refused": refused, "schemas": schemas}))
"""
OUT_OF_RANGE = {
    "fleet": "yes", "locales": [], "model_id": "not-a-uuid", "mode": "turbo", "samples_per_intent": 0,
    # 201 sentences per intent is not a form limit (issue 25: rest-v2's 200 is checked by validate)
    "training_data_slice_matrix": {"HassTurnOn": 0}, "max_dataset_size": 50, "timeout_seconds": 60,
    "max_gpu_memory_mb": 10**7, "rollback_trigger_version_id": "v1", "precision_floor": 1.5,
    "requests_per_second": 0, "poll_min_seconds": 0, "cognigy_conn_id": "a b", "dry_run": "no",
}  # fmt: skip


def _form(tmp_path: Path, dag_id: str, values: dict, base: dict) -> dict:
    import subprocess
    import sys

    from tests.test_provider import _airflow_env

    argv = [sys.executable, "-c", FORM_PROBE, json.dumps(values), dag_id, json.dumps(base)]
    out = subprocess.run(argv, env=_airflow_env(tmp_path),
                         cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=180)  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("FORM")), None)
    assert line, (out.stdout + out.stderr)[-3000:]
    return json.loads(line[4:])


def test_the_trigger_form_refuses_out_of_range_values(tmp_path: Path) -> None:
    from devtools.airflow_env import DEMO_TARGET

    target = {k: v for k, v in DEMO_TARGET.items() if k != "staging_flow_id"}
    form = _form(tmp_path, "cognigy_nlu_retrain", OUT_OF_RANGE, target)
    assert form["refused"] == dict.fromkeys(OUT_OF_RANGE, True)
    for name, schema in form["schemas"].items():  # every field has a label, help text and a section
        assert schema.get("title") and schema.get("section"), name
    assert form["schemas"]["fleet"]["type"] == ["null", "object"]  # set by cognigy_nlu_fleet, not by people


def test_the_fleet_form_has_no_target_and_refuses_out_of_range_values(tmp_path: Path) -> None:
    """The fleet DAG's form: the retrain form's settings, the targets being the fleet's (its defaults validate
    without any target)."""
    values = {k: v for k, v in OUT_OF_RANGE.items() if k not in ("fleet", "locales", "model_id")}
    form = _form(tmp_path, "cognigy_nlu_fleet", values, {})
    assert form["refused"] == dict.fromkeys(values, True)
    assert not {"project_id", "flow_id", "locales", "model_id", "fleet"} & set(form["schemas"])


def test_plan_night_refuses_a_fleet_sharing_a_staging_flow_before_anything_is_triggered(monkeypatch, tmp_path) -> None:
    """The wiring: the fleet DAG's `plan_night` (in process, no Cognigy call: the hook only hands out its
    configuration) rejects the night before any retrain run is triggered, and the request_rejected record names
    both entries."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from cognigy_airflow import fleet as fleet_dag
    from cognigy_airflow import validate
    from cognigy_airflow.form import PARAMS

    fleet = [FLEET[0], {**FLEET[0], "name": "sales EN", "flowId": OTHER_FLOW}]
    audited: list[tuple[str, dict]] = []
    config = SimpleNamespace(dialect="rest-v2", console_url=None, base_url="http://cognigy.invalid")
    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("COGNIGY_RETRAIN_STATE_URI", raising=False)
    hook = lambda *a, **k: SimpleNamespace(get_config=lambda: config)  # noqa: E731
    variables = {"cognigy_fleet": json.dumps(fleet)}  # no other Variable is set
    store = SimpleNamespace(get=lambda key, default=None: variables.get(key, default))
    for module in (validate, fleet_dag):
        monkeypatch.setattr(module, "CognigyHook", hook)
        monkeypatch.setattr(module, "Variable", store)
        monkeypatch.setattr(module, "audit", lambda context, event, *a, **fields: audited.append((event, fields)))
    params = {name: param.value for name, param in PARAMS.items() if name not in ("fleet", "project_id", "flow_id",
              "locales", "model_id")} | CONF  # fmt: skip
    context = {
        "params": params, "dag": None, "ti": SimpleNamespace(dag_id="cognigy_nlu_fleet", run_id="r", log=None),
        "dag_run": SimpleNamespace(run_type="manual", clear_number=0, triggering_user_name="tester"),
    }  # fmt: skip
    with pytest.raises(AirflowFailException, match="is also the staging flow of fleet\\[0\\] \\(support EN\\)"):
        fleet_dag.plan_night(**context)
    assert [event for event, _ in audited] == ["request_rejected"]
    (error,) = audited[0][1]["errors"]
    assert error.startswith("fleet[1] (sales EN): promotion.stagingFlowId: staging flow ")
