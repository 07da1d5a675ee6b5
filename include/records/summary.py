"""The morning summary of one night: every target's outcome, accuracy and its change against the champion with the
test's p-value, the version serving now and the links, as Markdown (kept as a file) and as plain text."""

from __future__ import annotations

from typing import Any

from include.records import alerts


def markdown(run_id: str, results: list[dict[str, Any]]) -> str:
    """One table row per target; a target that left no outcome is listed as such."""
    head = ["Bot (flow)", "Locale", "Outcome", "Accuracy", "Serving now", "Airflow run", "MLflow run"]
    rows = [f"# Cognigy retrain, night of {run_id}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        facts = dict(alerts.lines(result))
        cells = [facts[k] if k != "Outcome" else result["outcome"] for k in head]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def subject(run_id: str, results: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    return f"Cognigy retrain summary {run_id}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
