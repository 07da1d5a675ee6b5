"""The report files a reviewer opens, on hand-built predictions of a 77-intent model (BANKING77-sized).

A 77 × 77 confusion matrix is unreadable, so the report also lists the (true → predicted) pairs that cost the
most errors, challenger vs champion, and charts each intent's F1 change vs the champion.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import pytest
from PIL import Image

from include.evaluation.config import GateConfig
from include.evaluation.gates import evaluate_gates
from include.evaluation.metrics import NO_INTENT, Prediction
from include.evaluation.report import (
    REPORT_FILES,
    TOP_CONFUSION_COLUMNS,
    f1_change_selection,
    per_intent_rows,
    top_confusion_rows,
    write_gate_report,
)
from include.evaluation.results import GateReport

INTENTS = [f"intent_{i:02d}" for i in range(77)]
PER_INTENT = 10
CONFIG = GateConfig(bootstrap_resamples=200)


def _predictions(seed: int, planted: dict[tuple[str, str], int], noise: float) -> list[Prediction]:
    """PER_INTENT utterances per intent; ``planted`` (true, predicted) errors first, then random ``noise``."""
    rng = random.Random(seed)
    predictions = []
    for intent in INTENTS:
        wrong = [p for (t, p), n in planted.items() if t == intent for _ in range(n)]
        for k in range(PER_INTENT):
            if k < len(wrong):
                predicted = wrong[k]
            elif rng.random() < noise:
                predicted = rng.choice([x for x in INTENTS if x != intent])
            else:
                predicted = intent
            channel = "chat" if k % 2 else "voice"
            predictions.append(Prediction(f"{intent} text {k}", intent, predicted, 0.9, {"channel": channel}))
    return predictions


CHALLENGER_PLANTED = {("intent_05", "intent_06"): 9, ("intent_10", NO_INTENT): 8, ("intent_30", "intent_31"): 3}
CHAMPION_PLANTED = {("intent_05", "intent_06"): 1, ("intent_20", "intent_21"): 9, ("intent_30", "intent_31"): 3}


@pytest.fixture(scope="module")
def predictions():
    return _predictions(1, CHALLENGER_PLANTED, 0.06), _predictions(2, CHAMPION_PLANTED, 0.06)


@pytest.fixture(scope="module")
def report(predictions) -> GateReport:
    challenger, champion = predictions
    counts = dict.fromkeys(INTENTS, 20)
    training = {intent: [f"training {intent} {k}" for k in range(3)] for intent in INTENTS}
    training["intent_07"].append("INTENT_07  text 4")  # one leaked held-out utterance
    held_out = {"name": "held_out_en.jsonl", "sha256": "c0ffee" * 10 + "abcd", "rows": 770, "intents": 77}
    return evaluate_gates(
        challenger, champion, INTENTS, counts, None, CONFIG, training_texts=training, held_out=held_out
    )


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    """The report files, written once (the full 77-intent confusion matrix takes a few seconds to draw)."""
    return write_gate_report(report, tmp_path_factory.mktemp("gate") / "report")


def _errors(predictions: list[Prediction]) -> Counter[tuple[str, str]]:
    return Counter((p.true_intent, p.label) for p in predictions if p.label != p.true_intent)


def _read_csv(path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_report_file_is_written_and_returned_for_the_mlflow_sync(report, written):
    paths = written
    assert tuple(paths) == REPORT_FILES
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    for name in ("confusion_matrix.png", "top_confusions.png", "per_intent_f1_change.png"):
        with Image.open(paths[name]) as image:
            assert image.format == "PNG" and image.size[0] >= 800
    loaded = json.loads(paths["gate_report.json"].read_text())
    assert [g["status"] for g in loaded["gates"]] == [g.status for g in report.gates]
    assert GateReport.from_dict(loaded).to_dict() == loaded


def test_top_confusions_are_the_costliest_pairs_challenger_vs_champion(predictions, written):
    challenger, champion = predictions
    paths = written
    rows = _read_csv(paths["top_confusions.csv"])
    assert list(rows[0]) == list(TOP_CONFUSION_COLUMNS) and len(rows) == 20

    mine, theirs = _errors(challenger), _errors(champion)
    expected = sorted(set(mine) | set(theirs), key=lambda pair: (-mine[pair], -theirs[pair], pair))[:20]
    shown = [(r["true_intent"], NO_INTENT if r["predicted"] == "(no intent)" else r["predicted"]) for r in rows]
    assert shown == expected
    assert [int(r["challenger_errors"]) for r in rows] == sorted(
        (int(r["challenger_errors"]) for r in rows), reverse=True
    )
    assert [int(r["champion_errors"]) for r in rows] == [theirs[pair] for pair in expected]

    first, second = rows[0], rows[1]
    assert (first["true_intent"], first["predicted"], first["challenger_errors"], first["champion_errors"]) == (
        "intent_05",
        "intent_06",
        "9",
        "1",
    )
    assert first["change"] == "8" and first["challenger_share_of_intent"] == "0.9"
    assert (second["true_intent"], second["predicted"], second["challenger_errors"]) == (
        "intent_10",
        "(no intent)",
        "8",
    )

    markdown = paths["top_confusions.md"].read_text()
    assert markdown.startswith("# Top 20 confusions (true → predicted)")
    assert "| 1 | intent_05 | intent_06 | 9 | 1 | 8 | 0.900 |" in markdown
    assert "| 2 | intent_10 | (no intent) | 8 | 0 | 8 | 0.800 |" in markdown
    assert markdown.count("\n| ") == 1 + 20  # header and 20 rows


def test_confusions_the_challenger_fixed_follow_when_it_has_fewer_than_twenty():
    few = INTENTS[:4]
    challenger = [Prediction(f"{i} {k}", i, i, 0.9, {}) for i in few for k in range(5)]
    champion = [Prediction(p.text, p.true_intent, p.predicted_intent, 0.9, {}) for p in challenger]
    challenger[0].predicted_intent = challenger[1].predicted_intent = few[1]  # intent_00 → intent_01 twice
    challenger[5].predicted_intent = None  # intent_01 → no intent
    champion[10].predicted_intent = few[3]  # only the champion confuses intent_02 → intent_03
    report = evaluate_gates(challenger, champion, few, dict.fromkeys(few, 10), None, CONFIG)
    rows = top_confusion_rows(report.to_dict())
    assert [(r["true_intent"], r["predicted"], r["challenger_errors"], r["champion_errors"]) for r in rows] == [
        ("intent_00", "intent_01", 2, 0),
        ("intent_01", "(no intent)", 1, 0),
        ("intent_02", "intent_03", 0, 1),
    ]
    assert rows[2]["change"] == -1


def test_f1_change_chart_draws_at_most_sixty_intents_worst_first(report):
    rows = per_intent_rows(report.to_dict())
    assert len(rows) == 77 and all(r["f1_delta"] is not None for r in rows)
    shown, rest, title = f1_change_selection(rows)
    assert len(shown) == 60 and len(rest) == 17
    deltas = [r["f1_delta"] for r in shown]
    assert deltas == sorted(deltas) and deltas[0] == min(r["f1_delta"] for r in rows)
    assert shown[0]["intent"] in {"intent_05", "intent_10"}  # the planted regressions are the worst
    assert min(abs(d) for d in deltas) >= max(abs(r["f1_delta"]) for r in rest)
    low, high = min(r["f1_delta"] for r in rest), max(r["f1_delta"] for r in rest)
    assert title == (
        f"Per-intent F1 change vs champion (60 intents; 17 more with smaller changes, {low:+.3f} to {high:+.3f}, "
        "not drawn)"
    )
    small_shown, small_rest, small_title = f1_change_selection(rows[:10])
    assert (
        len(small_shown) == 10 and small_rest == [] and small_title == "Per-intent F1 change vs champion (10 intents)"
    )


def test_without_a_champion_the_champion_columns_are_empty_and_the_charts_say_so(predictions, tmp_path):
    challenger, _ = predictions
    report = evaluate_gates(challenger, None, INTENTS, dict.fromkeys(INTENTS, 20), None, CONFIG)
    paths = write_gate_report(report, tmp_path)
    rows = _read_csv(paths["top_confusions.csv"])
    assert len(rows) == 20 and all(r["champion_errors"] == "" and r["change"] == "" for r in rows)
    assert "No champion predictions" in paths["top_confusions.md"].read_text()
    assert f1_change_selection(per_intent_rows(report.to_dict()))[0] == []
    with Image.open(paths["per_intent_f1_change.png"]) as image:
        assert image.format == "PNG"


def test_markdown_shows_statuses_provenance_and_leaked_utterances(written):
    markdown = written["per_intent.md"].read_text()
    assert markdown.startswith("# Gate report: BLOCKED")
    assert "| leakage | pass |" in markdown  # 1 of 770 is within 1 %
    assert "| platform_feedback | not evaluated (not blocking) |" in markdown
    assert "| name | held_out_en.jsonl |" in markdown and "| rows | 770 |" in markdown
    assert "## Held-out utterances also in training (1 of 770, 1 listed)" in markdown
    assert "| intent_07 text 4 | intent_07 | intent_07 |" in markdown
    assert markdown.count("| intent_") >= 77


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_neutralised(tmp_path):
    """Issue 26, item 8 (OWASP CSV injection): intent names starting with =, +, -, @, tab or carriage return are
    written with a leading single quote in per_intent.csv and top_confusions.csv; numbers stay numbers."""
    hostile = ['=HYPERLINK("http://x")', "+1+cmd", "-2-cmd", "@SUM(A1)", "\tTAB", "\rCR", "plain"]
    challenger = [Prediction(f"{i} {k}", i, i, 0.9, {}) for i in hostile for k in range(4)]
    champion = [Prediction(p.text, p.true_intent, p.predicted_intent, 0.9, {}) for p in challenger]
    for k in range(len(hostile) - 1):  # each hostile intent confused with the next one, the champion not
        challenger[k * 4].predicted_intent = hostile[k + 1]
        challenger[k * 4 + 1].predicted_intent = hostile[k + 1]
    report = evaluate_gates(challenger, champion, hostile, dict.fromkeys(hostile, 10), None, CONFIG)
    paths = write_gate_report(report, tmp_path / "report")
    per_intent = _read_csv(paths["per_intent.csv"])
    confusions = _read_csv(paths["top_confusions.csv"])
    cells = [row[k] for row in per_intent for k in ("intent", "top_confusion")]
    cells += [row[k] for row in confusions for k in ("true_intent", "predicted")]
    assert cells and all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells), cells
    assert {row["intent"] for row in per_intent} == {"'" + i if i != "plain" else i for i in hostile}
    assert any(row["f1_delta"].startswith("-") for row in per_intent)  # a negative number is not neutralised
    assert {row["change"] for row in confusions} == {"2"}
