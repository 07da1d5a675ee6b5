"""Write a GateReport as files a reviewer can open.

- ``gate_report.json``: every metric, every gate with its status and reason, the held-out provenance.
- ``per_intent.md`` / ``per_intent.csv``: the verdict, each gate, the held-out data and one row per intent.
- ``top_confusions.csv`` / ``.md`` / ``.png``: the (true → predicted) pairs that cost the most errors,
  challenger vs champion — readable where a 77 × 77 confusion matrix is not.
- ``per_intent_f1_change.png``: each intent's F1 change vs the champion, worst at the top.
- ``confusion_matrix.png``: the full row-normalised confusion matrix.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from include.evaluation.metrics import NO_INTENT
from include.evaluation.results import GateReport, GateResult

REPORT_FILES = (
    "gate_report.json",
    "confusion_matrix.png",
    "per_intent.csv",
    "per_intent.md",
    "top_confusions.csv",
    "top_confusions.md",
    "top_confusions.png",
    "per_intent_f1_change.png",
)
PER_INTENT_COLUMNS = ("intent", "support", "precision", "recall", "f1", "champion_f1", "f1_delta", "top_confusion")
TOP_CONFUSION_COLUMNS = (
    "rank",
    "true_intent",
    "predicted",
    "challenger_errors",
    "champion_errors",
    "change",
    "challenger_share_of_intent",
)
TOP_CONFUSIONS = 20
# A text cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
MAX_F1_BARS = 60


def write_gate_report(
    report: GateReport, out_dir: Path, *, top_confusions: int = TOP_CONFUSIONS, max_f1_bars: int = MAX_F1_BARS
) -> dict[str, Path]:
    """Write every file of ``REPORT_FILES`` into ``out_dir``.

    Returns the written paths keyed by file name (e.g. ``paths["gate_report.json"]``); the MLflow sync logs
    every path of this dict. ``top_confusions`` rows go into the top-confusions table and chart, at most
    ``max_f1_bars`` intents into the F1-change chart.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    paths = {name: out_dir / name for name in REPORT_FILES}
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    paths["gate_report.json"].write_text(text, encoding="utf-8")
    plot_confusion_matrix(data["metrics"]["confusion_matrix"], data["metrics"]["labels"], paths["confusion_matrix.png"])
    rows = per_intent_rows(data)
    _write_csv(rows, PER_INTENT_COLUMNS, paths["per_intent.csv"])
    paths["per_intent.md"].write_text(_markdown(data, rows), encoding="utf-8")
    confusions = top_confusion_rows(data, top_confusions)
    has_champion = data.get("champion_metrics") is not None
    _write_csv(confusions, TOP_CONFUSION_COLUMNS, paths["top_confusions.csv"])
    paths["top_confusions.md"].write_text(_confusions_markdown(confusions, has_champion), encoding="utf-8")
    plot_top_confusions(confusions, has_champion, paths["top_confusions.png"])
    plot_f1_change(rows, paths["per_intent_f1_change.png"], max_f1_bars, has_champion)
    return paths


def per_intent_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per true intent with the champion's F1 on the same held-out set and the change."""
    champion = (data.get("champion_metrics") or {}).get("per_intent") or {}
    rows = []
    for intent, stats in data["metrics"]["per_intent"].items():
        champion_f1 = champion.get(intent, {}).get("f1")
        confusions = stats.get("top_confusions") or []
        top = f"{_display(confusions[0]['intent'])} ({confusions[0]['count']})" if confusions else ""
        rows.append(
            {
                "intent": intent,
                "support": stats["support"],
                "precision": round(stats["precision"], 4),
                "recall": round(stats["recall"], 4),
                "f1": round(stats["f1"], 4),
                "champion_f1": None if champion_f1 is None else round(champion_f1, 4),
                "f1_delta": None if champion_f1 is None else round(stats["f1"] - champion_f1, 4),
                "top_confusion": top,
            }
        )
    return rows


def _confusion_counts(metrics: dict[str, Any] | None) -> dict[tuple[str, str], int]:
    """Off-diagonal cells of a confusion matrix as {(true, predicted): count}."""
    if not metrics:
        return {}
    confusion = metrics["confusion_matrix"]
    labels = confusion["labels"]
    counts = {}
    for i, row in enumerate(confusion["matrix"] or []):
        for j, value in enumerate(row):
            if value and i != j:
                counts[(labels[i], labels[j])] = int(value)
    return counts


def top_confusion_rows(data: dict[str, Any], n: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The ``n`` (true → predicted) pairs that cost the challenger the most errors, with the champion's count.

    Sorted by challenger count, then champion count; when the challenger has fewer than ``n`` confused pairs
    the champion's remaining ones follow with challenger count 0 (confusions the challenger fixed).
    ``champion_errors`` is None without a champion.
    """
    challenger = _confusion_counts(data["metrics"])
    champion_metrics = data.get("champion_metrics")
    champion = _confusion_counts(champion_metrics)
    support = {k: v["support"] for k, v in data["metrics"]["per_intent"].items()}
    pairs = sorted(
        set(challenger) | set(champion),
        key=lambda pair: (-challenger.get(pair, 0), -champion.get(pair, 0), pair),
    )[:n]
    rows = []
    for rank, (true, predicted) in enumerate(pairs, start=1):
        mine = challenger.get((true, predicted), 0)
        theirs = champion.get((true, predicted), 0) if champion_metrics is not None else None
        rows.append(
            {
                "rank": rank,
                "true_intent": true,
                "predicted": _display(predicted),
                "challenger_errors": mine,
                "champion_errors": theirs,
                "change": None if theirs is None else mine - theirs,
                "challenger_share_of_intent": round(mine / support[true], 4) if support.get(true) else None,
            }
        )
    return rows


def plot_top_confusions(rows: list[dict[str, Any]], has_champion: bool, path: Path) -> None:
    """Horizontal grouped bars: errors per (true → predicted) pair, challenger vs champion, largest at the top."""
    height = max(3.0, 1.2 + 0.38 * len(rows))
    fig, ax = plt.subplots(figsize=(10.0, height))
    if not rows:
        ax.text(0.5, 0.5, "no confusions: every scored utterance was right", ha="center", va="center")
        ax.set_axis_off()
    else:
        names = [f"{r['true_intent']} → {r['predicted']}" for r in rows]
        y = np.arange(len(rows))
        bar = 0.4 if has_champion else 0.7
        ax.barh(y - (bar / 2 if has_champion else 0), [r["challenger_errors"] for r in rows], bar, label="challenger")
        if has_champion:
            ax.barh(y + bar / 2, [r["champion_errors"] or 0 for r in rows], bar, label="champion", color="#bbbbbb")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("misclassified held-out utterances")
        ax.legend(loc="lower right")
    ax.set_title(f"Top {len(rows)} confusions (true → predicted)" + (" vs champion" if has_champion else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def f1_change_selection(
    rows: list[dict[str, Any]], max_bars: int = MAX_F1_BARS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The per-intent rows drawn in the F1-change chart (worst change first), the rows left out, and the title.

    Only intents with a champion F1 count. With more than ``max_bars`` of them the ones with the largest
    absolute change are drawn and the range of the others is summarised in the title.
    """
    changes = [r for r in rows if r.get("f1_delta") is not None]
    shown = sorted(changes, key=lambda r: (-abs(r["f1_delta"]), r["intent"]))[:max_bars]
    chosen = {id(r) for r in shown}
    rest = [r for r in changes if id(r) not in chosen]
    shown.sort(key=lambda r: (r["f1_delta"], r["intent"]))
    title = f"Per-intent F1 change vs champion ({len(shown)} intents"
    if rest:
        low, high = min(r["f1_delta"] for r in rest), max(r["f1_delta"] for r in rest)
        title += f"; {len(rest)} more with smaller changes, {low:+.3f} to {high:+.3f}, not drawn"
    return shown, rest, title + ")"


def plot_f1_change(
    rows: list[dict[str, Any]], path: Path, max_bars: int = MAX_F1_BARS, has_champion: bool = True
) -> None:
    """Horizontal bars of each intent's F1 change vs the champion, worst at the top (``f1_change_selection``)."""
    shown, _, title = f1_change_selection(rows, max_bars)
    fig, ax = plt.subplots(figsize=(9.0, max(3.0, 1.4 + 0.22 * len(shown))))
    if not shown:
        title = "Per-intent F1 change vs champion"
        why = "no champion: no F1 change to show" if not has_champion else "no intent has a champion F1"
        ax.text(0.5, 0.5, why, ha="center", va="center")
        ax.set_axis_off()
    else:
        deltas = [r["f1_delta"] for r in shown]
        colours = ["#c0392b" if d < 0 else "#27ae60" if d > 0 else "#999999" for d in deltas]
        y = np.arange(len(shown))
        ax.barh(y, deltas, color=colours)
        ax.set_yticks(y, [r["intent"] for r in shown], fontsize=7 if len(shown) > 30 else 8)
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("F1 change (challenger − champion)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion_matrix(confusion: dict[str, Any], true_labels: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (true intents as rows, every predicted outcome incl. no-intent as columns)."""
    labels = confusion["labels"]
    matrix = np.array(confusion["matrix"], dtype=float) if confusion["matrix"] else np.zeros((0, len(labels)))
    row_index = [labels.index(label) for label in true_labels if label in labels]
    rows = matrix[row_index] if len(matrix) else np.zeros((0, len(labels)))
    totals = rows.sum(axis=1, keepdims=True)
    normalised = np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)
    n_rows, n_cols = max(len(row_index), 1), max(len(labels), 1)
    cell = 0.45 if n_cols <= 20 else 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + cell * n_cols), max(4.5, 2.0 + cell * n_rows)))
    image = ax.imshow(normalised if len(rows) else np.zeros((1, n_cols)), cmap="Blues", vmin=0.0, vmax=1.0)
    font = 9 if n_cols <= 15 else 8 if n_cols <= 30 else 7
    ax.set_xticks(range(len(labels)), [_display(label) for label in labels], rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(len(row_index)), [labels[i] for i in row_index], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true intent")
    ax.set_title("Confusion matrix (share of each true intent)")
    for r in range(normalised.shape[0]):
        for c in range(normalised.shape[1]):
            value = normalised[r, c]
            if value > 0:
                colour = "white" if value > 0.5 else "black"
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=max(font - 1, 4), color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _display(label: str) -> str:
    return "(no intent)" if label == NO_INTENT else label


def _write_csv(rows: list[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else _csv_safe(row[k]) for k in columns})


def _csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading single quote (OWASP CSV injection);
    numbers are written as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    verdict = "PASSED" if data["passed"] else "BLOCKED"
    lines = [f"# Gate report: {verdict}", ""]
    if data.get("config_fingerprint"):
        lines += [f"Gate configuration fingerprint (SHA-256): `{data['config_fingerprint']}`", ""]
    lines += ["| gate | result | reason |", "|---|---|---|"]
    for gate in data["gates"]:
        result = gate.get("result") or GateResult.from_dict(gate).result_label
        lines.append(f"| {gate['name']} | {result} | {_cell(gate['reason'])} |")
    not_evaluated = data.get("not_evaluated_gates") or {}
    if not_evaluated:
        lines += ["", "## Not evaluated", ""]
        lines += [f"- **{name}**: {reason}" for name, reason in not_evaluated.items()]
    lines += ["", "## Held-out data", ""]
    held_out = data.get("held_out")
    if held_out:
        lines += ["| field | value |", "|---|---|"]
        for key, value in held_out.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"| {_cell(key)} | {_cell(shown)} |")
    else:
        lines.append("No provenance of the held-out set was recorded.")
    leakage = next((g for g in data["gates"] if g["name"] == "leakage"), None)
    leaked = (leakage or {}).get("values", {}).get("leaked_utterances") or []
    if leaked:
        values = leakage["values"]
        lines += [
            "",
            f"## Held-out utterances also in training ({values['leaked']} of {values['held_out_utterances']}, "
            f"{len(leaked)} listed)",
            "",
            "| text | held-out intent | training intents |",
            "|---|---|---|",
        ]
        lines += [
            f"| {_cell(item['text'])} | {_cell(item['intent'])} | {_cell(', '.join(item['training_intents']))} |"
            for item in leaked
        ]
    lines += ["", "## Per intent", ""]
    lines += ["| " + " | ".join(PER_INTENT_COLUMNS) + " |", "|" + "---|" * len(PER_INTENT_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in PER_INTENT_COLUMNS) + " |")
    lines += ["", "Top confusions: `top_confusions.md`; F1 change per intent: `per_intent_f1_change.png`."]
    return "\n".join(lines) + "\n"


def _confusions_markdown(rows: list[dict[str, Any]], has_champion: bool) -> str:
    lines = [f"# Top {len(rows)} confusions (true → predicted)", ""]
    if not has_champion:
        lines += ["No champion predictions: champion columns are empty.", ""]
    if not rows:
        return "\n".join([*lines, "No confusions: every scored utterance was right."]) + "\n"
    lines += ["| " + " | ".join(TOP_CONFUSION_COLUMNS) + " |", "|" + "---|" * len(TOP_CONFUSION_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in TOP_CONFUSION_COLUMNS) + " |")
    return "\n".join(lines) + "\n"
