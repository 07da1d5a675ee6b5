"""Issue 11, "retrain real bots: the tenant's own data", proven on the emulator with the whole DAG.

Every test builds its own project and flows with the emulator's tenant builder (`Emulator.create_flow`), writes
the tenant's own files (generated from home-assistant-intents by devtools/datasets.py, or built here), runs
`airflow dags test cognigy_nlu_retrain` with the trigger form's params, and checks what a user would look at
afterwards: the run's state, `outcome.json`, the audit log, the production flow's intents export, the
emulator's request counters and the MLflow run.

1. a large own data set (≥ 50 intents, ≥ 5,000 training sentences, ≥ 2,000 held-out utterances) is imported,
   trained in staging, promoted, and the accuracy the pipeline reports is the one a plain in-process
   classifier gets on the same files;
2. fr-FR end to end with the user's own fr-FR held-out file, given as a `{locale}` URI;
3. a rollback point of more than 1 MB is restored exactly after a failed training (in place);
4. an unchanged flow costs a handful of reads; a later run reuses the champion's scores of the serving state;
5. bad files stop the run at `validate` with messages naming file, line and field, and nothing reaches Cognigy;
   files outside the allowed data roots (a symlink out, /dev/zero) and a secrets CSV leave no trace of their
   content in the audit trail or the log (issue 26, item 2).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from devtools.airflow_env import cognigy_conn, dags_test
from devtools.datasets import (
    GeneratedSet,
    large_set,
    locale_set,
    read_csv,
    seed_intents,
    sklearn_accuracy,
    training_examples,
)
from devtools.servers import Emulator, Server
from include.cognigy import rest_v2
from include.records.audit import read

pytestmark = pytest.mark.slow

DAG_ID = "cognigy_nlu_retrain"
MODEL_ID = "3f1e2d4c-5b6a-4789-8abc-def012345678"
BASE = "/new/v2.0"
SCORES_ROUTE = f"POST {BASE}/projects/{{projectId}}/nlu/scores"
IMPORT_ROUTE = f"POST {BASE}/flows/{{flowId}}/intents/import"
TRAIN_ROUTE = f"POST {BASE}/flows/{{flowId}}/intents/train"
TENANT_LIMIT = 200_000  # requests per 5 minutes of the tenants built here (Cognigy's default: 1,000)
THRESHOLD = 0.3  # the form's default 'no intent' score threshold
# Pacing at the form's maximum, quick polls; the emulator's rate limit is lifted per test (see `fresh`).
FAST = {"requests_per_second": 100, "poll_min_seconds": 1.0, "poll_max_seconds": 5.0, "model_id": MODEL_ID}
# Where a test is not about the gates, they must not decide it.
LENIENT_GATES = {
    "precision_floor": 0.0, "recall_floor": 0.0, "pr_balance_tolerance": 1.0, "per_intent_recall_floor": 0.0,
    "bias_ceiling": 1.0, "max_accuracy_drop": 1.0,
}  # fmt: skip


def oid(test: int, n: int) -> str:
    """A 24-hex id unique to one test of this file (and to nothing the seed or other files create)."""
    return f"0d11{test:04x}{n:016x}"


# --- running the DAG and reading what it left behind ---------------------------------------------------------
@dataclass
class DagRun:
    state: str  # success | failed
    run_id: str
    log: str
    events: list[dict[str, Any]]
    seconds: float
    state_dir: Path

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == name]
        assert found, f"no {name} record; events: {self.names()}\n{self.log[-3000:]}"
        return found[-1]

    def outcome(self, flow_id: str, locale: str) -> dict[str, Any]:
        """The run folder's outcome.json (folder: the sanitised run id, a dot and a hash of run and attempt)."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.run_id)[:100]
        found = sorted(
            (self.state_dir / "runs" / DAG_ID).glob(f"{glob.escape(safe)}*/{flow_id}_{locale}/outcome.json"),
            key=lambda p: p.stat().st_mtime,
        )
        assert found, f"no outcome.json for {self.run_id} {flow_id}/{locale}; events: {self.names()}"
        return json.loads(found[-1].read_text())


def connection(emulator: Emulator) -> str:
    """The Cognigy connection, telling the client the tenant's (raised) rate limit, as an operator would."""
    conn = json.loads(cognigy_conn(emulator))
    conn["extra"]["rate_limit"] = {"requests": TENANT_LIMIT, "per_seconds": 300}
    return json.dumps(conn)


def run_dag(
    airflow_home, emulator: Emulator, tmp_path: Path, conf: dict, name: str = "run", data_roots: str | None = None
) -> DagRun:
    """One `airflow dags test`; the tenant's files may be read from the session's temporary folders (the
    deployment setting COGNIGY_RETRAIN_DATA_ROOTS), or from `data_roots` when given.

    A run retrains one locale. Several locales of one flow are a fleet entry: with more than one locale in `conf`
    the run is a night of `cognigy_nlu_fleet` whose fleet is that one entry (the target) and whose settings are
    the rest of `conf`; its `plan_night` checks every locale as its own request before anything is triggered."""
    log_path = tmp_path / f"{name}.log"
    started = time.monotonic()
    conf, dag_id, fleet = {**FAST, **conf}, DAG_ID, {}
    if len(conf.get("locales") or []) > 1:
        entry = {"projectId": conf.pop("project_id"), "flowId": conf.pop("flow_id"), "locales": conf.pop("locales"),
                 "modelId": conf.pop("model_id")}  # fmt: skip
        dag_id, fleet = "cognigy_nlu_fleet", {"AIRFLOW_VAR_COGNIGY_FLEET": json.dumps([entry])}
    env = airflow_home(
        AIRFLOW_CONN_COGNIGY_DEFAULT=connection(emulator),
        COGNIGY_RETRAIN_DATA_ROOTS=data_roots or str(tmp_path.parent),  # tmp_path / mktemp folders share a parent
        # A loaded machine (2 shared cores) can take longer than Airflow's 30 s to import the DAG file.
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="300",
        **fleet,
    )
    proc = dags_test(env, conf, dag_id=dag_id, log_path=log_path, timeout=1500)
    seconds = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    final = [ln for ln in text.splitlines() if "DagRun Finished" in ln]
    assert final, f"exit {proc.returncode}\n{text[-4000:]}"
    state = "success" if "state=success" in final[-1] else "failed"
    run_id = final[-1].split("run_id=")[1].split(",")[0]
    events = read(airflow_home.state_dir / "audit" / "retrain_audit.jsonl", run_id=run_id)
    return DagRun(state, run_id, text, events, seconds, airflow_home.state_dir)


def export(emulator: Emulator, flow_id: str, locale_id: str) -> list[dict[str, Any]]:
    """The flow's intents as the Cognigy API exports them (what a user downloads from the NLU page)."""
    resp = requests.post(
        f"{emulator.url}{BASE}/flows/{flow_id}/intents/export",
        json={"localeId": locale_id, "format": "json"},
        headers={"X-API-Key": emulator.api_key, "Accept": "application/json"},
        timeout=60,
    )
    resp.raise_for_status()
    return resp.json()


def route_count(emulator: Emulator, route: str) -> int:
    return emulator.stats()["by_route"].get(route, 0)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def fresh(emulator: Emulator) -> Emulator:
    """The session's emulator with quick trainings, no pending faults, and a tenant whose rate limit was raised
    (the connection says so too): thousands of scorings would otherwise wait out 1,000 requests / 5 min."""
    emulator.knobs(
        training_seconds=1, fail_next_trainings=0, fail_next_imports=0, rate_limit_requests=TENANT_LIMIT,
        rate_limit_window_seconds=300,
    )  # fmt: skip
    return emulator


# --- generated data, shared by the session ------------------------------------------------------------------
@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("own-data")


# Intents the emulator's classifier cannot learn from these generated sentences (their held-out templates are
# phrased unlike their training templates): on the full large set the default gates rightly reject the challenger
# (per-intent recall / F1 below 0.60: HassGetState.climate 0.00 ...; champion regression on HassGetState.climate).
# A tenant reads that in the gate report and cleans their data; the tests start from the cleaned files.
LARGE_UNLEARNABLE = frozenset({
    "HassGetState.climate", "HassGetState.media_player", "HassShoppingListAddItem", "HassGetState.switch",
    "HassListAddItem", "HassGetState.valve", "HassVacuumCleanArea",
})  # fmt: skip
# The same for the small en-US set, for a champion trained on 10 sentences per intent AND on all of them (test 4:
# either may be the challenger), with margin (F1 ≥ 0.70 left for every kept intent in-process).
ENGLISH_UNLEARNABLE = frozenset({
    "HassGetState", "HassIncreaseTimer", "HassLawnMowerDock", "HassLawnMowerStartMowing", "HassListAddItem",
    "HassListCompleteItem", "HassMediaPlayerMute", "HassMediaPrevious", "HassSetPosition", "HassSetVolumeRelative",
    "HassShoppingListAddItem", "HassTurnOff", "HassTurnOn", "HassVacuumCleanArea", "HassFanSetSpeed",
})  # fmt: skip


def without(gen: GeneratedSet, drop: frozenset[str], out_dir: Path) -> GeneratedSet:
    """The generated files without the `drop` intents (same columns, same order)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for kind, source in (("train", gen.train_path), ("held-out", gen.held_out_path)):
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        rows = read_csv(source)
        kept = [line for line, row in zip(lines[1:], rows, strict=True) if row["intent"] not in drop]
        (out_dir / source.name).write_text(lines[0] + "".join(kept), encoding="utf-8")
        counts[kind] = len(kept)
    intents = {r["intent"] for r in read_csv(out_dir / gen.train_path.name)}
    assert not drop & intents and len(intents) == gen.intents - len(drop & set(training_examples(gen.train_path)))
    return GeneratedSet(
        locale=gen.locale, train_path=out_dir / gen.train_path.name, held_out_path=out_dir / gen.held_out_path.name,
        intents=len(intents), train_rows=counts["train"], held_out_rows=counts["held-out"],
    )  # fmt: skip


@pytest.fixture(scope="session")
def large(data_dir: Path) -> GeneratedSet:
    return without(large_set(data_dir / "generated"), LARGE_UNLEARNABLE, data_dir / "cleaned")


@pytest.fixture(scope="session")
def french(data_dir: Path) -> GeneratedSet:
    return locale_set(data_dir, "fr-FR")


@pytest.fixture(scope="session")
def english(data_dir: Path) -> GeneratedSet:
    return without(locale_set(data_dir / "generated", "en-US"), ENGLISH_UNLEARNABLE, data_dir / "cleaned")


# --- 1. a large own data set, promoted, accuracy honest ------------------------------------------------------
def test_large_own_data_set_is_promoted_and_its_accuracy_is_honest(
    airflow_home, fresh: Emulator, mlflow_server: Server, large: GeneratedSet, tmp_path: Path
) -> None:
    assert large.intents >= 50 and large.train_rows >= 5000 and large.held_out_rows >= 2000, large
    assert large.train_path.stat().st_size > 5 * 60_000  # imported in many 60 kB chunks
    project, prod, staging = oid(1, 0), oid(1, 1), oid(1, 2)
    seeded = seed_intents(large, 10)
    built = fresh.create_flow(project, prod, "Large production", {"en-US": seeded}, endpoint="Large webchat")
    fresh.create_flow(project, staging, "Large staging", {"en-US": seeded})
    conf = {
        "project_id": project, "flow_id": prod, "locales": ["en-US"], "staging_flow_id": staging,
        "promotion": "staging", "training_data_source": "uri", "training_data_uri": str(large.train_path),
        "held_out_uri": str(large.held_out_path), "max_dataset_size": 10_000, "timeout_seconds": 600,
    }  # fmt: skip
    assert conf["max_dataset_size"] >= large.train_rows
    assert conf["timeout_seconds"] >= conf["max_dataset_size"] / 1000 * 10
    imports_before = route_count(fresh, IMPORT_ROUTE)
    run = run_dag(airflow_home, fresh, tmp_path, conf)
    expected = sklearn_accuracy(large.train_path, large.held_out_path, THRESHOLD)

    assert run.state == "success", run.names()
    outcome = run.outcome(prod, "en-US")
    assert outcome["outcome"] == "promoted", outcome
    summary = outcome["summary"]
    assert summary["n_scored"] == large.held_out_rows  # every held-out utterance was scored
    assert summary["accuracy"] == pytest.approx(expected, abs=0.01)
    completed = run.event("retrain_completed")
    assert completed["outcome"] == "promoted"
    assert completed["metrics"]["accuracy"] == summary["accuracy"]
    assert completed["held_out"]["rows"] == large.held_out_rows
    assert completed["held_out"]["sha256"] == sha256_of(large.held_out_path)
    assert route_count(fresh, IMPORT_ROUTE) - imports_before > 5  # staging and production, chunked

    # Production now holds exactly the training file's intents and sentence counts.
    wanted = training_examples(large.train_path)
    exported = {i["name"]: i["exampleSentences"] for i in export(fresh, prod, built["locale_ids"]["en-US"])}
    assert sorted(exported) == sorted(wanted)
    assert {k: len(v) for k, v in exported.items()} == {k: len(v) for k, v in wanted.items()}
    assert rest_v2.fingerprint([{"name": k, "exampleSentences": v} for k, v in exported.items()]) == (
        rest_v2.fingerprint([{"name": k, "exampleSentences": v} for k, v in wanted.items()])
    )

    # The MLflow run names the held-out file that judged it, by content.
    mlflow_run = MlflowClient(mlflow_server.url).get_run(completed["mlflow_run_id"])
    digests = [d.dataset.digest for d in mlflow_run.inputs.dataset_inputs]
    held_sha = sha256_of(large.held_out_path)
    assert any(len(d) >= 16 and held_sha.startswith(d) for d in digests), (held_sha, digests)
    print(
        f"\n[large] {large.intents} intents ({len(LARGE_UNLEARNABLE)} unlearnable ones dropped), "
        f"{large.train_rows} training rows "
        f"({large.train_path.stat().st_size:,} bytes), {large.held_out_rows} held-out rows; "
        f"pipeline accuracy {summary['accuracy']:.4f}, in-process classifier {expected:.4f}, "
        f"Δ vs champion {summary['accuracy_delta']}; DAG run {run.seconds:.0f} s wall"
    )


# --- 2. fr-FR end to end --------------------------------------------------------------------------------------
def test_french_flow_end_to_end_with_own_held_out_file_per_locale(
    airflow_home, fresh: Emulator, french: GeneratedSet, tmp_path: Path
) -> None:
    project, prod = oid(2, 0), oid(2, 1)
    fresh.create_flow(project, prod, "Assistant maison", {"fr-FR": seed_intents(french, 10)}, endpoint="Chat FR")
    held = tmp_path / "held_out_fr-FR.csv"
    held.write_bytes(french.held_out_path.read_bytes())
    conf = {
        "project_id": project, "flow_id": prod, "locales": ["fr-FR"], "promotion": "in_place",
        "training_data_source": "uri", "training_data_uri": french.train_path.as_uri(),
        "held_out_uri": f"{tmp_path.as_uri()}/held_out_{{locale}}.csv",
    }  # fmt: skip
    run = run_dag(airflow_home, fresh, tmp_path, conf)
    expected = sklearn_accuracy(french.train_path, held, THRESHOLD)

    outcome = run.outcome(prod, "fr-FR")
    assert outcome["outcome"] in ("promoted", "rejected_rolled_back"), outcome
    assert run.state == "success", run.names()
    assert outcome["held_out"]["name"] == held.as_uri()  # the {locale} URI, filled in
    assert outcome["held_out"]["rows"] == french.held_out_rows
    assert outcome["summary"]["n_scored"] == french.held_out_rows  # every row scored, none failed
    assert outcome["summary"]["accuracy"] == pytest.approx(expected, abs=0.01)
    captured = run.event("rollback_point_captured")
    assert captured["champion_scored"] == french.held_out_rows
    print(
        f"\n[fr-FR] {french.intents} intents, {french.train_rows} training / {french.held_out_rows} held-out rows; "
        f"outcome {outcome['outcome']}; accuracy {outcome['summary']['accuracy']:.4f} "
        f"(in-process {expected:.4f}); DAG run {run.seconds:.0f} s wall"
    )


# --- 3. a rollback point over 1 MB comes back exactly ---------------------------------------------------------
TOPICS = ["billing", "delivery", "returns", "warranty", "account", "password", "invoice", "refund"]


def _big_intents(n_intents: int = 120, per_intent: int = 200) -> dict[str, list[str]]:
    return {
        f"Intent{i:03d}": [
            f"customer {i} asks about {TOPICS[(i + j) % len(TOPICS)]} case {j:03d} today" for j in range(per_intent)
        ]
        for i in range(n_intents)
    }


def test_rollback_point_over_one_megabyte_is_restored_exactly(airflow_home, fresh: Emulator, tmp_path: Path) -> None:
    project, prod = oid(3, 0), oid(3, 1)
    intents = _big_intents()
    built = fresh.create_flow(project, prod, "Big production", {"en-US": intents}, endpoint="Big webchat")
    locale_id = built["locale_ids"]["en-US"]
    before = export(fresh, prod, locale_id)
    size = len(rest_v2.import_payload(before))
    assert size >= 1_000_000, size
    fingerprint_before = rest_v2.fingerprint(before)
    # The run's own files: 5 new sentences per intent (production is overwritten with them) and 1 test each.
    train = write_csv(
        tmp_path / "train.csv",
        "text,intent",
        [f"new wording {j} for {name.lower()} please,{name}" for name in intents for j in range(5)],
    )
    held = write_csv(
        tmp_path / "held.csv", "text,intent", [f"customer {i} asks about it,{name}" for i, name in enumerate(intents)]
    )
    fresh.knobs(fail_next_trainings=1)
    conf = {
        "project_id": project, "flow_id": prod, "locales": ["en-US"], "promotion": "in_place",
        "training_data_source": "uri", "training_data_uri": str(train), "held_out_uri": str(held),
        "max_dataset_size": 1000, **LENIENT_GATES,
    }  # fmt: skip
    run = run_dag(airflow_home, fresh, tmp_path, conf)

    assert run.state == "failed"  # a failed training fails the run, after restoring production
    staged = run.event("challenger_staged")  # production really was overwritten with the small file
    assert staged["sentences"] == 5 * len(intents)
    verified = run.event("rollback_verified")
    assert verified["fingerprint"] == fingerprint_before
    completed = run.event("retrain_completed")
    assert completed["outcome"] == "training_failed_rolled_back"
    assert completed["rollback_verified"] is True
    after = export(fresh, prod, locale_id)
    assert rest_v2.fingerprint(after) == fingerprint_before
    assert {i["name"]: i["exampleSentences"] for i in after} == intents  # same sentences, same order
    print(
        f"\n[rollback] rollback point {size:,} bytes ({len(intents)} intents × 200 sentences), "
        f"fingerprint {fingerprint_before[:12]}… restored and verified; DAG run {run.seconds:.0f} s wall"
    )


# --- 4. unchanged flows and the champion cache ------------------------------------------------------------------
def test_unchanged_flow_costs_a_few_reads_and_a_scored_champion_is_not_scored_again(
    airflow_home, fresh: Emulator, english: GeneratedSet, tmp_path: Path
) -> None:
    project, prod, staging = oid(4, 0), oid(4, 1), oid(4, 2)
    seeded = seed_intents(english, 10)
    fresh.create_flow(project, prod, "Home production", {"en-US": seeded}, endpoint="Home webchat")
    fresh.create_flow(project, staging, "Home staging", {"en-US": seeded})
    rows = english.held_out_rows
    conf = {
        "project_id": project, "flow_id": prod, "locales": ["en-US"], "staging_flow_id": staging,
        "promotion": "staging", "training_data_source": "flow", "held_out_uri": str(english.held_out_path),
        **LENIENT_GATES,
    }  # fmt: skip

    # Run A: retrain on what the flow holds; champion and challenger scored, promoted (and remembered).
    scores = route_count(fresh, SCORES_ROUTE)
    first = run_dag(airflow_home, fresh, tmp_path, conf, "first")
    assert first.state == "success", first.names()
    assert first.outcome(prod, "en-US")["outcome"] == "promoted"
    assert first.event("rollback_point_captured")["champion_via"] == "scored"
    first_scores = route_count(fresh, SCORES_ROUTE) - scores
    assert first_scores == 2 * rows + min(100, rows)  # champion + challenger + promotion check

    # Run B: the same params on the unchanged flow: a few reads, no training, no scoring.
    stats = fresh.stats()
    second = run_dag(airflow_home, fresh, tmp_path, conf, "second")
    after = fresh.stats()
    assert second.state == "success", second.names()
    assert second.outcome(prod, "en-US")["outcome"] == "unchanged"
    assert "retrain_unchanged" in second.names()
    unchanged_requests = after["requests_total"] - stats["requests_total"]
    assert unchanged_requests < 10, after["by_route"]
    assert after["trainings_total"] == stats["trainings_total"]

    # Run C: new training data (the full training file); production still serves the state scored in run A,
    # so the champion comes from the cache and only the challenger (and the promotion check) is scored.
    scores = route_count(fresh, SCORES_ROUTE)
    third = run_dag(
        airflow_home,
        fresh,
        tmp_path,
        {**conf, "training_data_source": "uri", "training_data_uri": str(english.train_path)},
        "third",
    )
    assert third.state == "success", third.names()
    outcome = third.outcome(prod, "en-US")["outcome"]
    assert third.event("rollback_point_captured")["champion_via"] == "cache"
    third_scores = route_count(fresh, SCORES_ROUTE) - scores
    assert third_scores == rows + (min(100, rows) if outcome == "promoted" else 0)
    print(
        f"\n[unchanged] held-out {rows} rows; run A {first_scores} scorings ({first.seconds:.0f} s wall), "
        f"run B unchanged with {unchanged_requests} requests ({second.seconds:.0f} s), run C {outcome} with "
        f"{third_scores} scorings, champion from cache ({third.seconds:.0f} s)"
    )


# --- 5. bad files: the run stops at validate, nothing is sent ---------------------------------------------------
BAD_LOCALES = {  # locale -> (which file is bad, the line, the field, words of the message)
    "en-US": ("heldOut", 1, "header", "missing column 'intent'"),
    "de-DE": ("heldOut", 3, "text", "empty"),
    "fr-FR": ("heldOut", 4, "encoding", "not valid UTF-8"),
    "es-ES": ("heldOut", 1, "header", "duplicate column name (columns 1 and 3)"),
    "it-IT": ("trainingData", 5, "text", "empty"),
}
OVERSIZED_LOCALE = "nl-NL"  # a valid training file with more sentences than max_dataset_size allows


@dataclass
class BadRun:
    run: DagRun
    requests_before: int
    requests_after: int
    files: dict[str, Path]  # locale -> the bad file
    errors: list[str]


def _held_rows(n: int = 6) -> list[str]:
    return [f"turn on light number {i},LightOn" if i % 2 else f"turn off light number {i},LightOff" for i in range(n)]


def _train_rows(n: int = 20) -> list[str]:
    return [f"please switch on lamp {i},LightOn" if i % 2 else f"please switch off lamp {i},LightOff" for i in range(n)]


@pytest.fixture(scope="module")
def bad_files_run(airflow_home, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> BadRun:
    """One flow whose locales each have one bad file, as a fleet entry (a run retrains one locale): the night's
    `plan_night` reads every file of every locale and lists every problem; nothing is triggered."""
    folder = tmp_path_factory.mktemp("bad-files")
    files: dict[str, Path] = {}
    for locale in [*BAD_LOCALES, OVERSIZED_LOCALE]:
        write_csv(folder / f"held_{locale}.csv", "text,intent,channel", [f"{r},chat" for r in _held_rows()])
        write_csv(folder / f"train_{locale}.csv", "text,intent", _train_rows())
    files["en-US"] = write_csv(folder / "held_en-US.csv", "text,label", _held_rows())
    files["de-DE"] = write_csv(folder / "held_de-DE.csv", "text,intent", ["turn on the light,LightOn", "   ,LightOff"])
    (folder / "held_fr-FR.csv").write_bytes(
        b"text,intent\nallume la lumi\xc3\xa8re,LightOn\n\xc3\xa9teins la lampe,LightOff\n"
        b"\xe9teins tout,LightOff\nallume tout,LightOn\n"
    )
    files["fr-FR"] = folder / "held_fr-FR.csv"
    files["es-ES"] = write_csv(folder / "held_es-ES.csv", "text,intent,text", ["enciende la luz,LightOn,x"])
    files["it-IT"] = write_csv(
        folder / "train_it-IT.csv",
        "text,intent",
        ["accendi la luce,LightOn", "spegni la luce,LightOff", "accendi tutto,LightOn", ",LightOff"],
    )
    files[OVERSIZED_LOCALE] = write_csv(folder / f"train_{OVERSIZED_LOCALE}.csv", "text,intent", _train_rows(150))
    conf = {
        "project_id": oid(5, 0), "flow_id": oid(5, 1), "locales": [*BAD_LOCALES, OVERSIZED_LOCALE],
        "promotion": "in_place", "training_data_source": "uri",
        "training_data_uri": f"{folder}/train_{{locale}}.csv", "held_out_uri": f"{folder}/held_{{locale}}.csv",
        "max_dataset_size": 100, "timeout_seconds": 300,
    }  # fmt: skip
    before = emulator.stats()["requests_total"]
    run = run_dag(airflow_home, emulator, folder, conf, "bad-files")
    after = emulator.stats()["requests_total"]
    rejected = [e for e in run.events if e["event"] == "request_rejected"]
    errors = [e.removeprefix("fleet[0]: ") for e in (rejected[-1]["errors"] if rejected else [])]
    print(f"\n[bad files] one fleet night, {len(errors)} problems listed, DAG run {run.seconds:.0f} s wall:")
    for error in errors:
        print(f"    {error}")
    return BadRun(run, before, after, files, errors)


def test_bad_files_fail_the_run_before_anything_is_sent(bad_files_run: BadRun) -> None:
    assert bad_files_run.run.state == "failed"
    assert "request_rejected" in bad_files_run.run.names()
    assert not {"rollback_point_captured", "training_submitted"} & set(bad_files_run.run.names())
    assert bad_files_run.requests_after == bad_files_run.requests_before  # not one request reached Cognigy


@pytest.mark.parametrize("locale", list(BAD_LOCALES))
def test_each_bad_file_is_named_with_its_line_and_field(bad_files_run: BadRun, locale: str) -> None:
    kind, line, field, words = BAD_LOCALES[locale]
    path = str(bad_files_run.files[locale])
    mine = [e for e in bad_files_run.errors if e.startswith(f"{kind} ({locale}): ")]
    assert mine, bad_files_run.errors
    assert any(f"{path}:{line}: {field}: " in e and words in e for e in mine), mine
    assert f"{path}:{line}: {field}" in bad_files_run.run.log  # the task log says the same


def test_training_file_larger_than_max_dataset_size_is_refused(bad_files_run: BadRun) -> None:
    mine = [e for e in bad_files_run.errors if f"({OVERSIZED_LOCALE})" in e]
    assert any("maxDatasetSize" in e and str(bad_files_run.files[OVERSIZED_LOCALE]) in e for e in mine), (
        bad_files_run.errors
    )


def test_file_over_fifty_megabytes_is_refused_by_name(airflow_home, emulator: Emulator, tmp_path: Path) -> None:
    big = tmp_path / "held_en-US.csv"
    with big.open("wb") as fh:  # sparse: 51 MiB on paper, a few bytes on disk
        fh.write(b"text,intent\nturn on the light,LightOn\n")
        fh.truncate(51 * 1024 * 1024)
    conf = {
        "project_id": oid(5, 2), "flow_id": oid(5, 3), "locales": ["en-US"], "promotion": "in_place",
        "held_out_uri": str(big),
    }  # fmt: skip
    before = emulator.stats()["requests_total"]
    run = run_dag(airflow_home, emulator, tmp_path, conf, "too-large")
    assert run.state == "failed"
    assert emulator.stats()["requests_total"] == before
    errors = run.event("request_rejected")["errors"]
    assert any(str(big) in e and "file:" in e and "larger than" in e for e in errors), errors


def test_files_of_the_worker_and_secrets_never_reach_the_audit(
    airflow_home, emulator: Emulator, tmp_path: Path
) -> None:
    """Issue 26, item 2, end to end: a deployment's secrets CSV inside the data root (not labelled data), a symlink
    in the root to a secrets file outside it, and /dev/zero as training file (two locales: a fleet night). The
    night stops at plan_night, nothing is sent, each file is named with its field, and neither the audit trail nor
    the task log holds a column name or value of the secrets files."""
    root = tmp_path / "data"
    root.mkdir()
    write_csv(root / "held_en-US.csv", "COGNIGY_API_KEY_TESTONLY,MLFLOW_DB_PASSWORD_TESTONLY", ["k3y-v4lue,pw-v4lue"])
    outside = write_csv(
        tmp_path / "deploy-secrets.csv", "AWS_SECRET_TESTONLY,REDIS_PASSWORD_TESTONLY", ["s3cr3t,r3d1s"]
    )
    (root / "held_de-DE.csv").symlink_to(outside)
    conf = {
        "project_id": oid(5, 6), "flow_id": oid(5, 7), "locales": ["en-US", "de-DE"], "promotion": "in_place",
        "held_out_uri": f"{root}/held_{{locale}}.csv", "training_data_source": "uri",
        "training_data_uri": "file:///dev/zero",
    }  # fmt: skip
    before = emulator.stats()["requests_total"]
    started = time.monotonic()
    run = run_dag(airflow_home, emulator, tmp_path, conf, "secrets", data_roots=str(root))  # a fleet night
    assert run.state == "failed" and emulator.stats()["requests_total"] == before
    errors = [e.removeprefix("fleet[0]: ") for e in run.event("request_rejected")["errors"]]
    assert f"heldOut (en-US): {root}/held_en-US.csv:1: header: missing column 'text' (expected: text, intent" in (
        "\n".join(errors)
    ), errors
    refused = f"file: is not under an allowed data root (COGNIGY_RETRAIN_DATA_ROOTS: {root})"
    assert f"heldOut (de-DE): {root}/held_de-DE.csv: {refused}" in errors, errors
    assert f"trainingData (en-US): file:///dev/zero: {refused}" in errors, errors
    audit_text = (airflow_home.state_dir / "audit" / "retrain_audit.jsonl").read_text()
    for secret in ("TESTONLY", "k3y-v4lue", "pw-v4lue", "s3cr3t", "r3d1s"):
        assert secret not in audit_text and secret not in run.log, secret
    print(f"\n[secrets] refused at validate in {time.monotonic() - started:.0f} s: {errors}")


def test_held_out_intent_the_flow_lacks_stops_capture_and_changes_nothing(
    airflow_home, fresh: Emulator, tmp_path: Path
) -> None:
    project, prod = oid(5, 4), oid(5, 5)
    intents = {"LightOn": [f"switch on lamp {i}" for i in range(10)], "LightOff": [f"off lamp {i}" for i in range(10)]}
    built = fresh.create_flow(project, prod, "Lights", {"en-US": intents}, endpoint="Lights webchat")
    fingerprint = rest_v2.fingerprint(export(fresh, prod, built["locale_ids"]["en-US"]))
    held = write_csv(
        tmp_path / "held.csv", "text,intent", ["lamp on please,LightOn", "lamp off,LightOff", "open the door,DoorOpen"]
    )
    conf = {
        "project_id": project, "flow_id": prod, "locales": ["en-US"], "promotion": "in_place",
        "training_data_source": "flow", "held_out_uri": str(held),
    }  # fmt: skip
    before = fresh.stats()["by_route"]
    run = run_dag(airflow_home, fresh, tmp_path, conf, "unknown-intent")
    after = fresh.stats()["by_route"]

    assert run.state == "failed"
    message = f"{held}:4: intent: 'DoorOpen' is not an intent of flow {prod}"
    assert message in run.log, run.log[-4000:]
    assert "rollback_point_captured" not in run.names() and "training_submitted" not in run.names()
    for route in (IMPORT_ROUTE, TRAIN_ROUTE):
        assert after.get(route, 0) == before.get(route, 0), route
    assert rest_v2.fingerprint(export(fresh, prod, built["locale_ids"]["en-US"])) == fingerprint
    print(f"\n[unknown intent] capture refused: {message}; DAG run {run.seconds:.0f} s wall")
