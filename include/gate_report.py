"""Write a GateReport as files a reviewer can open: JSON, confusion-matrix PNG, per-intent CSV and Markdown."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from include.evaluation import NO_INTENT
from include.gates import GateReport

REPORT_FILES = ("gate_report.json", "confusion_matrix.png", "per_intent.csv", "per_intent.md")
PER_INTENT_COLUMNS = ("intent", "support", "precision", "recall", "f1", "champion_f1", "f1_delta", "top_confusion")


def write_gate_report(report: GateReport, out_dir: Path) -> dict[str, Path]:
    """Write gate_report.json, confusion_matrix.png, per_intent.csv and per_intent.md into ``out_dir``.

    Returns the written paths keyed by file name (e.g. ``paths["gate_report.json"]``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    paths = {name: out_dir / name for name in REPORT_FILES}
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    paths["gate_report.json"].write_text(text, encoding="utf-8")
    plot_confusion_matrix(data["metrics"]["confusion_matrix"], data["metrics"]["labels"], paths["confusion_matrix.png"])
    rows = per_intent_rows(data)
    _write_csv(rows, paths["per_intent.csv"])
    paths["per_intent.md"].write_text(_markdown(data, rows), encoding="utf-8")
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


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_INTENT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def _markdown(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    verdict = "PASSED" if data["passed"] else "BLOCKED"
    lines = [f"# Gate report: {verdict}", ""]
    lines += ["| gate | result | reason |", "|---|---|---|"]
    for gate in data["gates"]:
        if gate["skipped"] and gate["passed"]:
            result = "skipped"
        elif gate["passed"]:
            result = "pass"
        else:
            result = "FAIL" if gate["blocking"] else "warn"
        lines.append(f"| {gate['name']} | {result} | {_cell(gate['reason'])} |")
    lines += ["", "## Per intent", ""]
    lines += ["| " + " | ".join(PER_INTENT_COLUMNS) + " |", "|" + "---|" * len(PER_INTENT_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in PER_INTENT_COLUMNS) + " |")
    return "\n".join(lines) + "\n"
