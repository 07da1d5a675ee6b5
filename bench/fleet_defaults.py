"""Benchmark 7b (issue 27 items 1-3) - the fleet night at the settings users get by default.

One night of the fleet DAG `cognigy_nlu_fleet` under a REAL scheduler (bench/fleet_stack.py), one fresh emulator,
trainings of random length, with the trigger form's defaults (gate_profile "default", promotion "staging" with a
staging flow of its own per entry, requests_per_second 2.6 per task, held_out_per_intent 8, score_threshold 0.3) and
the connection's default budget (share 0.9, poll reserve 0.05). Every setting that differs from a default is in
DEVIATIONS with its reason and printed next to the figures.

Data (issue 27: held-out sets of >= 100 utterances, on which the default gates pass for most targets): every target
is judged on the shipped demo held-out set at the form's 8 per intent (19 intents: 152 utterances, slices channel and
length) and trains on a file of its own (training_data_source "uri"), written at run time into the run's work folder
from the shipped data set's training split (include/data/intents.jsonl; the first n sentences of each intent in file
order, so no seed is involved and a re-run writes the same bytes). Most targets get the locale's whole training split
("full": at most 150 per intent; en-US 2,750 sentences, de-DE 2,850); the targets in FEW_SENTENCES get a thin file of
12-40 sentences per intent (40 is the form's samples_per_intent default) and are meant to be rejected. Why: with the
demo data at 90 per intent (the most a uniform count allows in en-US) the challenger's macro recall is 0.941 (en-US)
/ 0.947 (de-DE) on the 152 utterances, 0.947 / 0.964 on the whole test split, under the default profile's floor 0.95
(|P - R| is 0.02-0.03, within 0.05), and de-DE's length slice (short n=22: accuracy 0.77 vs medium 0.97) breaks the
bias ceiling 0.15. The full files give recall 0.961 / 0.974 and bias 0.100 / 0.128 on the same 152 utterances.
`--expect-only` computes every target's verdict in-process without Airflow or an emulator (the emulator's
classifier, the product's scoring and gate code: `expected_verdicts`); a full run prints it next to the outcomes.

Bound (necessary work only): max(longest target's critical path, necessary requests / allowed rate), where the
allowed rate is share x limit / window and necessary = per target: its training starts (challenger in staging +
production), its held-out utterances scored once per model scored (champion, challenger), and every other
non-poll, non-score request (imports and reads; NOT dissected further, so the bound's request part is an UPPER
estimate of the necessary work - it flatters the ratio slightly). Overhead per target by kind: status polls, and
scores beyond 2 x held-out rows (the promotion's verification). The critical path of one target = its two
trainings (the emulator's created -> finished of each) + its own necessary requests at the per-task pace.
Detection lag: every wait_for_training task instance of every retrain run: end_date - the emulator's finished
time of the training it waited for (the last training the run submitted before that wait ended).
Run: PYTHONPATH=. .venv/bin/python -m bench.fleet_defaults --targets 20
Expected verdicts only: PYTHONPATH=. .venv/bin/python -m bench.fleet_defaults --targets 20 --expect-only
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests

from bench.common import STATE, banner, show, summary, write_result
from bench.fleet_budget import _epoch, _vary_trainings
from bench.fleet_stack import RequestSampler, fleet_conf, local_stack, make_fleet, max_overlap, night_task_instances
from devtools.servers import start_emulator
from emulator import seed
from include.data import dataset
from include.records.audit import read

STATUS_ROUTE = "GET /new/v2.0/tasks/{taskId}"
PREVIOUS = {"wall_seconds": 733, "bound_seconds": 626, "wall_over_bound": 1.17, "detection_lag_mean_s": 14.9,
            "detection_lag_p99_s": 31, "source": "bench/results/fleet_budget.json (shared budget, after)"}  # fmt: skip
DEFAULT_RPS, DEFAULT_SHARE = 2.6, 0.9
FULL_PER_INTENT = 150  # the training split's cap per intent: "full" = the locale's whole training split
# Fleet index -> sentences per intent of a deliberately thin training file (meant to be rejected); both locales.
FEW_SENTENCES = {3: 12, 6: 20, 10: 30, 13: 40, 17: 25}
SCORE_THRESHOLD = 0.3  # the form's default 'no intent' threshold


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):  # noqa: SIM115
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def defaults_conf() -> dict:
    """fleet_conf without its non-default gate, promotion, pacing and sampling settings: the form's defaults; the
    demo held-out set at 8 per intent; training files per target (`training_data_uri` is each entry's override)."""
    conf = fleet_conf(8, DEFAULT_RPS)
    for key in ("promotion", "allow_unevaluated_gates", "recall_floor", "pr_balance_tolerance", "gate_profile",
                "samples_per_intent"):  # fmt: skip
        conf.pop(key, None)
    conf.update({"training_data_source": "uri", "held_out_per_intent": 8, "retrain_unchanged": True})
    return conf


def target_data(fleet: list[dict], data_dir: Path) -> list[dict]:
    """Write each target's training file into `data_dir` and return, per fleet entry, {name, locale, kind,
    per_intent, path}: "full" (the locale's whole training split, at most FULL_PER_INTENT per intent) or "few"
    (FEW_SENTENCES[index] per intent). The first n sentences of each intent in file order: deterministic."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, entry in enumerate(fleet):
        loc = entry["locales"][0]
        few = FEW_SENTENCES.get(i)
        pool = dataset.train_pool(loc)
        matrix = {name: min(few or FULL_PER_INTENT, len(texts)) for name, texts in pool.items()}
        kind = f"few{few}" if few else "full"
        path = data_dir / f"train-{kind}-{loc}.jsonl"
        path.write_bytes(dataset.demo_training_file(loc, matrix))
        out.append({"name": entry["name"], "locale": loc, "kind": kind, "per_intent": few or FULL_PER_INTENT,
                    "sentences": sum(matrix.values()), "path": str(path.resolve())})  # fmt: skip
    return out


def expected_verdicts(data: list[dict], held_out_per_intent: int = 8) -> list[dict]:
    """Every target's gate verdict computed in-process, no Airflow and no emulator: the emulator's classifier
    trained on the target's training file (challenger) and on the seed examples (champion, the serving model of
    every fleet flow), both scoring the demo held-out set the pipeline freezes, through the product's
    `score_utterances` and `evaluate_gates` at the default profile (no feedback report: platform_feedback is not
    blocking by default). Trainings are cached per file (identical files give identical models)."""
    from emulator import classifier
    from include.data.labelled_data import parse_labelled
    from include.evaluation.config import GateConfig
    from include.evaluation.gates import evaluate_gates
    from include.evaluation.held_out import score_utterances

    def predictions(pipeline, held):
        def scorer(sentence: str) -> list[dict]:
            return [{"name": n, "score": p} for n, p in classifier.score(pipeline, sentence)]

        with classifier.single_threaded():
            return score_utterances(list(held.utterances), scorer, SCORE_THRESHOLD)[0]

    config = GateConfig.profile("default")
    cache: dict[str, dict] = {}
    champions: dict[str, list] = {}
    helds: dict[str, object] = {}
    rows = []
    for d in data:
        loc = d["locale"]
        if loc not in helds:
            raw = dataset.demo_held_out_file(loc, held_out_per_intent)
            helds[loc] = parse_labelled(raw, f"{dataset.DEMO_NAME}#test/{loc}", fmt="jsonl")
            champions[loc] = predictions(classifier.train(seed.seed_examples(loc)), helds[loc])
        if d["path"] not in cache:
            held = helds[loc]
            raw = Path(d["path"]).read_bytes()
            trained = {
                k: list(dict.fromkeys(v)) for k, v in parse_labelled(raw, d["path"], fmt="jsonl").by_intent().items()
            }
            challenger = predictions(classifier.train(trained), held)
            counts = {k: len(v) for k, v in trained.items()}
            report = evaluate_gates(challenger, champions[loc], sorted(set(held.intents) | set(counts)), counts, None,
                                    config, training_texts=trained)  # fmt: skip
            m, floors = report.metrics, report.metrics["per_intent"]
            cache[d["path"]] = {
                "rows": len(challenger),
                "macro_precision": round(m["macro"]["precision"], 3),
                "macro_recall": round(m["macro"]["recall"], 3),
                "p_minus_r": round(m["macro"]["precision"] - m["macro"]["recall"], 3),
                "bias_score": None if report.bias["bias_score"] is None else round(report.bias["bias_score"], 3),
                "lowest_intent_recall": round(min(s["recall"] for s in floors.values() if s["support"]), 3),
                "verdict": "promote" if report.passed else "reject",
                "failed": report.failed_gates,
            }
        rows.append({"name": d["name"], "locale": loc, "data": d["kind"], **cache[d["path"]]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--min", type=float, default=30.0)
    parser.add_argument("--max", type=float, default=90.0)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--expect-only", action="store_true", help="print the in-process verdicts; run nothing")
    args = parser.parse_args(argv)
    work = STATE / "fleet_defaults"
    if args.expect_only:
        data = target_data(_fleet_names(args.targets), work / "expect" / "data")
        return _show_expected(expected_verdicts(data))
    few = sorted(i for i in FEW_SENTENCES if i < args.targets)
    deviations = {
        "training_data_source/training_data_uri": (
            "uri: a training file per target",
            "flow/none",
            "the emulator's flows hold only the 10-per-intent seed; each target trains on a file written from the "
            f"shipped training split: its whole split (<= {FULL_PER_INTENT}/intent) for {args.targets - len(few)} "
            f"targets, {len(few)} thin files ({', '.join(f'#{i}: {FEW_SENTENCES[i]}/intent' for i in few) or 'none'}) "
            "meant to be rejected; the demo at 90/intent has macro recall 0.941-0.947, under the default floor 0.95",
        ),
        "held_out_uri": (
            "demo (8/intent = 152 utterances, the form's held_out_per_intent)",
            "none",
            "the emulator has no team data; the shipped test split, slices channel and length",
        ),
        "retrain_unchanged": (True, False, "the flows did not change: without it every target ends 'unchanged'"),
        "emulator rate limit": (
            f"{args.limit}/{args.window:g}s",
            "1000/300s",
            "scaled to finish in the time available; wall/bound is scale-free",
        ),
        "training length": (f"{args.min:g}-{args.max:g}s random", "Cognigy's", "emulator knob"),
        "targets": (args.targets, 20, "issue asks 20" if args.targets == 20 else "shrunk to end by the deadline"),
    }
    banner(f"7b. Fleet at defaults: {vars(args)}")
    for k, (v, d, why) in deviations.items():
        show("deviation", f"{k} = {v} (default {d}): {why}")
    shutil.rmtree(work, ignore_errors=True)
    emulator = start_emulator(work / "emulator")
    try:
        emulator.knobs(rate_limit_requests=None, training_seconds=args.min)
        fleet = make_fleet(emulator, args.targets)
        data = target_data(fleet, work / "data")
        examples = {loc: seed.seed_examples(loc) for loc in ("en-US", "de-DE")}
        for i, entry in enumerate(fleet):  # a staging flow of its own per entry (no endpoint), its training file
            staging_id = f"{0x66F0B1B2C3D4E5F600000000 + i + 1:024x}"
            loc = entry["locales"][0]
            emulator.create_flow(seed.PROJECT_ID, staging_id, f"Staging {i + 1}", {loc: examples[loc]})
            entry["overrides"] = {"staging_flow_id": staging_id, "training_data_uri": data[i]["path"]}
        emulator.knobs(rate_limit_requests=args.limit, rate_limit_window_seconds=args.window)
        conf = defaults_conf()
        env = {
            "AIRFLOW_VAR_COGNIGY_FLEET": json.dumps(fleet),
            "COGNIGY_RETRAIN_DATA_ROOTS": str((work / "data").resolve()),
        }
        with local_stack(
            work / "airflow", emulator, rate_limit={"requests": args.limit, "per_seconds": args.window},
            pool_slots=8, include_deferred=False, extra_env=env,
        ) as stack:  # fmt: skip
            before = emulator.stats()
            stop = threading.Event()
            threading.Thread(target=_vary_trainings, args=(emulator, args.min, args.max, stop, 7), daemon=True).start()
            started = time.time()
            try:
                with RequestSampler(emulator, interval=0.5) as sampler:
                    night = stack.run_fleet_night(conf, timeout=args.timeout)
            finally:
                stop.set()
            wall = time.time() - started
            after = emulator.stats()
            tis = night_task_instances(night)
            events = read(stack.state_dir / "audit" / "retrain_audit.jsonl", run_id=sorted(night["runs"]))
        emulator.knobs(rate_limit_requests=None)
        figures = _figures(emulator, args, night, wall, before, after, tis, events, sampler)
    finally:
        emulator.stop()
    expected = expected_verdicts(data)  # after the night: the in-process verdicts, beside the measured outcomes
    figures["expected_in_process"] = {
        "promote": sum(r["verdict"] == "promote" for r in expected),
        "reject": sum(r["verdict"] == "reject" for r in expected),
        "by_target": {r["name"]: f"{r['data']}: {r['verdict']}" for r in expected},
    }
    figures["settings_vs_defaults"] = {k: {"used": v, "default": d, "reason": w} for k, (v, d, w) in deviations.items()}
    figures["previous"] = PREVIOUS
    figures["machine"] = {"nproc": __import__("os").cpu_count(), "cpu": _cpu_model()}
    for key, value in figures.items():
        show(key, json.dumps(value, default=str))
    show("written", write_result("fleet_defaults", figures))
    return figures


def _fleet_names(targets: int) -> list[dict]:
    """The fleet's names and locales as `make_fleet` orders them (demo en-US, demo de-DE, flow k en-US/de-DE)."""
    names = [("demo en-US", "en-US"), ("demo de-DE", "de-DE")]
    names += [(f"flow {k} {loc}", loc) for k in range(1, targets) for loc in ("en-US", "de-DE")]
    return [{"name": n, "locales": [loc]} for n, loc in names[:targets]]


def _show_expected(rows: list[dict]) -> dict:
    for r in rows:
        show(r["name"], json.dumps({k: v for k, v in r.items() if k != "name"}))
    verdicts = Counter(r["verdict"] for r in rows)
    show("expected", f"{verdicts['promote']} promote, {verdicts['reject']} reject of {len(rows)}")
    return {"by_target": rows, "promote": verdicts["promote"], "reject": verdicts["reject"]}


def _figures(emulator, args, night, wall, before, after, tis, events, sampler) -> dict:
    n = args.targets
    routes = {r: after["by_route"].get(r, 0) - before["by_route"].get(r, 0) for r in after["by_route"]}
    routes = {r: c for r, c in routes.items() if c}
    total = after["requests_total"] - before["requests_total"]
    polls = routes.get(STATUS_ROUTE, 0)
    scores = sum(c for r, c in routes.items() if "score" in r)
    completed = [e for e in events if e["event"] == "retrain_completed"]
    rows = sum(((e.get("held_out") or {}).get("rows") or 0) for e in completed)
    necessary_scores = min(scores, 2 * rows)  # champion + challenger, each utterance once
    other = total - polls - scores  # training starts, imports, reads (upper estimate of the necessary rest)
    necessary = necessary_scores + other
    allowed = DEFAULT_SHARE * args.limit / args.window
    session = requests.Session()
    session.trust_env = False
    session.headers["X-API-Key"] = emulator.api_key
    jobs = defaultdict(list)  # run_id -> [(created, finished)]
    for e in events:
        if e["event"] == "training_submitted" and e.get("cognigy_job_id"):
            job = session.get(f"{emulator.url}/new/v2.0/tasks/{e['cognigy_job_id']}", timeout=30).json()
            c, f = _epoch(job.get("createdAt")), _epoch(job.get("lastFinishedAt") or job.get("finishedAt"))
            if c and f:
                jobs[e.get("run_id")].append((c, f))
    lags = []
    waits = [ti for ti in tis if ti["task_id"] == "wait_for_training" and ti.get("end_date")]
    for ti in waits:  # every wait instance: lag to the latest training of its run that finished before it ended
        end = _epoch(ti["end_date"])
        done = [f for c, f in jobs.get(ti["dag_run_id"], []) if f <= end + 1]
        if done:
            lags.append(max(0.0, end - max(done)))
    per_target_necessary = necessary / max(1, n)
    paths = [sum(f - c for c, f in js) + per_target_necessary / DEFAULT_RPS for js in jobs.values()]
    critical = max(paths, default=0.0)
    bound = max(critical, necessary / allowed)
    outcomes = Counter(e.get("outcome") for e in completed)
    scored = sum(((e.get("metrics") or {}).get("n_scored") or 0) for e in completed)
    return {
        "run_state": night["state"],
        "targets_completed": len(completed),
        "wall_seconds": round(wall, 1),
        "necessary_requests": necessary,
        "necessary_requests_per_target": round(per_target_necessary, 1),
        "longest_critical_path_s": round(critical, 1),
        "necessary_over_allowed_rate_s": round(necessary / allowed, 1),
        "bound_seconds": round(bound, 1),
        "wall_over_bound": round(wall / bound, 2) if bound else "not evaluated",
        "goal_wall_le_1_15x": bool(bound) and wall / bound <= 1.15 and night["state"] == "success",
        "requests_total": total,
        "overhead_per_target": {
            "status_polls": round(polls / n, 1),
            "scores_beyond_2x_held_out": round((scores - necessary_scores) / n, 1),
        },
        "requests_by_route": routes,
        "responses_429": after["responses_429"] - before["responses_429"],
        "scored_over_total": f"{scored}/{rows}",
        "outcomes": dict(outcomes),
        "why_not_promoted": dict(Counter(e.get("gate_reason") for e in completed if e.get("outcome") != "promoted")),
        "peak_window_use_of_limit": round(sampler.max_in_window(args.window) / args.limit, 3),
        "max_trainings_waited_at_once": max_overlap(tis),
        "detection_lag_s": {**summary(lags), "wait_instances": len(waits)},
        "lag_goal_mean_le_2_p99_le_5": bool(lags) and summary(lags)["mean"] <= 2 and summary(lags)["p99"] <= 5,
    }


if __name__ == "__main__":
    main()
