"""The task bodies of `cognigy_nlu_fleet`: plan a night (every fleet entry checked as its own request; one invalid
entry triggers nothing) and summarize it (one message and one file listing every target's outcome).

Each flow/locale of the fleet becomes one run of `cognigy_nlu_retrain`, with a run id and a note that name it, the
entry's request as its conf and the night in its `fleet` param; every retrain run writes its outcome where the
night's summary reads it (`night_outcome`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from typing import Any

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowFailException
from cognigy_provider.hooks.cognigy import CognigyHook

from cognigy_airflow import notify
from cognigy_airflow.auditing import audit, retrain_trigger
from cognigy_airflow.form import PARAMS, TARGET_FIELDS
from cognigy_airflow.mlflow_sync import EXPERIMENT, mlflow_target
from cognigy_airflow.run_files import airflow_run_url
from cognigy_airflow.validate import request_plan, run_attempt
from include import settings
from include.cognigy.model import Target
from include.records import summary
from include.records.redaction import redact_text
from include.request.fleet import FLEET_VARIABLE, FleetEntry, FleetInvalid, load_fleet, shared_flow_problems
from include.state import state_store

RETRAIN_DAG_ID = "cognigy_nlu_retrain"
FLEET_DAG_ID = "cognigy_nlu_fleet"
log = logging.getLogger(__name__)  # a task's RuntimeTaskInstance has no `log`


def plan_night(**context: Any) -> list[dict[str, Any]]:
    """Check the whole fleet before anything is triggered; one TriggerDagRunOperator kwargs per flow/locale."""
    params = dict(context["params"])
    config = CognigyHook(params["cognigy_conn_id"]).get_config()
    errors: list[str] = []
    fleet: list[FleetEntry] = []
    source = "fleet"
    try:
        fleet, source = load_fleet(Variable.get(FLEET_VARIABLE, default=None))
    except FleetInvalid as exc:
        errors.extend(exc.errors)
    errors.extend(override_errors(fleet))
    checked = []
    attempt = run_attempt(context)
    for index, entry in enumerate(fleet):
        label = entry.label(index)
        for locale in entry.locales:
            entry_params = {**entry.params(params), "locales": [locale]}
            _, request, problems = request_plan(entry_params, config, context, attempt)
            errors.extend(f"{label}: {p}" for p in problems)
            checked.append((label, entry, locale, entry_params, request))
    errors.extend(shared_flow_problems([(label, request) for label, *_, request in checked if request]))
    if errors:
        raw = json.dumps([e.model_dump(mode="json") for e in fleet], sort_keys=True, default=str)
        audit(context, "request_rejected", {"request_hash": hashlib.sha256(raw.encode()).hexdigest()}, None,
              errors=errors, fleet=True, fleet_source=source)  # fmt: skip
        listed = "\n".join(f"  - {e}" for e in errors)
        raise AirflowFailException(f"the fleet is invalid; nothing was triggered:\n{listed}")
    ti = context["ti"]
    night = {"dag_id": ti.dag_id, "run_id": ti.run_id, "source": source, "trigger": retrain_trigger(context)}
    runs = []
    for label, entry, locale, entry_params, _ in checked:
        name = f"{entry.name or entry.flowId} · {locale}"
        runs.append({
            "trigger_run_id": f"{ti.run_id}__{_slug(entry.name or entry.flowId)}_{_slug(locale)}"[:250],
            "conf": {k: v for k, v in entry_params.items() if k in PARAMS} | {"fleet": {**night, "label": label}},
            "note": f"{name} (fleet night {ti.run_id})",
        })  # fmt: skip
    return runs


def override_errors(fleet: list[FleetEntry]) -> list[str]:
    """Fleet overrides checked against the same JSON schema as the retrain form's fields."""
    errors = []
    for index, entry in enumerate(fleet):
        for name, value in entry.overrides.items():
            param = PARAMS.get(name)
            if param is None or name in TARGET_FIELDS:
                continue
            try:
                type(param)(value, **param.schema).resolve()
            except Exception as exc:  # ParamValidationError: the message names the rule, not a secret
                errors.append(f"{entry.label(index)}: overrides.{name}: {str(exc).splitlines()[0][:300]}")
    return errors


def night_outcome(night: dict[str, Any], target: dict[str, Any]) -> Any:
    """Where a retrain run of a fleet night leaves its outcome for the night's summary."""
    return settings.run_dir(night["dag_id"], night["run_id"], Target.from_dict(target).key) / "outcome.json"


def morning_summary(runs: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
    """When the night ends: one message listing every target (outcome, accuracy and its change, what serves now,
    links), kept as summary.md in the night's folder."""
    import html as html_lib

    ti = context["ti"]
    results = []
    for run in runs or []:
        conf = run["conf"]
        target = {"project_id": conf["project_id"], "flow_id": conf["flow_id"], "locale": conf["locales"][0],
                  "model_id": conf["model_id"]}  # fmt: skip
        path = night_outcome(conf["fleet"], target)
        try:
            result = json.loads(state_store.read_text(path))
        except OSError:
            result = {"outcome": "no outcome recorded", "target": target}
        results.append({**result, "airflow_run_url": airflow_run_url(RETRAIN_DAG_ID, run["trigger_run_id"])})
    text = summary.markdown(ti.run_id, results)
    path = settings.run_dir(ti.dag_id, ti.run_id, "_night") / "summary.md"
    state_store.write_text(path, text)
    mlflow_run = _summary_in_mlflow(context, ti, text, [r["outcome"] for r in results])
    notify.send(context, summary.subject(ti.run_id, results), text, f"<pre>{html_lib.escape(text)}</pre>")
    return {"targets": len(results), "outcomes": [r["outcome"] for r in results], "summary_path": str(path),
            "mlflow_run_id": mlflow_run}  # fmt: skip


def _summary_in_mlflow(context: Any, ti: Any, text: str, outcomes: list[str]) -> str | None:
    """The summary as an MLflow run of its own (the night's one place next to the retrains' runs); MLflow being
    down costs the record, never the message (the file is kept either way)."""
    from include.records.mlflow_tracking import log_night_summary

    counts = Counter(outcome.replace(" ", "_") for outcome in outcomes)
    try:
        uri, auth, _ = mlflow_target(context["params"]["mlflow_conn_id"])
        return log_night_summary(uri, EXPERIMENT, f"{ti.dag_id}/{ti.run_id}", text, counts, auth=auth)
    except Exception as exc:  # a summary must still go out
        log.warning("night summary not kept in MLflow: %s", redact_text(f"{type(exc).__name__}: {exc}"))
        return None


def _slug(text: str) -> str:
    """A run-id-safe piece of a name (Airflow run ids allow letters, digits and _.~:+-)."""
    return re.sub(r"[^A-Za-z0-9_.~+-]+", "-", text).strip("-")[:60] or "x"
