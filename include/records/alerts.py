"""What a person is told about a retrain: which outcomes call for an alert, and the alert's text (no Airflow).

The text names the bot (flow), locale, outcome, the gate that decided, the version serving now and the links to the
Airflow run and the MLflow run; it passes through :func:`redact_text`, and it never quotes a server's error text.
"""

from __future__ import annotations

import html
from typing import Any

from include.records.redaction import redact_text
from include.results import meaning, run_fails

QUIET = ("promoted", "unchanged", "dry_run")  # no alert unless the MLflow sync went to the outbox


def needs_alert(result: dict[str, Any]) -> bool:
    """A failed run, a rejected challenger, a restore that is not verified, or an MLflow sync left in the outbox."""
    outcome = result["outcome"]
    return run_fails(outcome) or outcome not in QUIET or bool(result.get("mlflow_deferred"))


def serving_now(result: dict[str, Any]) -> str:
    """The version customers meet now: the serving snapshot (snapshot path), else the flow's model by outcome."""
    release = result.get("release") or {}
    if release.get("snapshot"):
        return f"snapshot {release['snapshot']}"
    if result["outcome"] == "promoted":
        return f"the challenger (Cognigy job {result.get('job_id') or '?'})"
    return "the champion (the model that served before this run)"


def lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The alert's facts as (label, value) pairs."""
    target = result["target"]
    summary = result.get("summary") or {}
    facts = [
        ("Bot (flow)", target.get("flow_id", "?")),
        ("Locale", target.get("locale", "?")),
        ("Outcome", f"{result['outcome']}: {meaning(result['outcome'])}"),
        ("Gate that decided", result.get("gate_reason") or "no gate ran"),
        ("Serving now", serving_now(result)),
        ("Accuracy", _accuracy(summary)),
        ("Airflow run", result.get("airflow_run_url") or "?"),
        (
            "MLflow run",
            result.get("mlflow_run_url")
            or ("in the outbox (sync deferred)" if result.get("mlflow_deferred") else "none"),
        ),
    ]
    return [(label, redact_text(str(value))) for label, value in facts]


def _accuracy(summary: dict[str, Any]) -> str:
    acc, delta, p = summary.get("accuracy"), summary.get("accuracy_delta"), summary.get("p_value")
    if acc is None:
        return "not measured"
    text = f"{acc:.3f}"
    if delta is not None:
        text += f" ({delta:+.3f} vs the champion"
        text += f", McNemar p={p:.3g})" if p is not None else ")"
    return text


def subject(result: dict[str, Any]) -> str:
    target = result["target"]
    return redact_text(f"Cognigy retrain {target.get('flow_id')}/{target.get('locale')}: {result['outcome']}")


def as_text(result: dict[str, Any]) -> str:
    return "\n".join([subject(result), *(f"{label}: {value}" for label, value in lines(result))])


def as_html(result: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in lines(result))
    return f"<h3>{html.escape(subject(result))}</h3><table>{rows}</table>"
