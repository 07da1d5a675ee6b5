"""Where a run keeps its files, and the plan's typed views every task shares: the run attempt's folder in the
state store, the request, the flow that trains, the stored rollback point and the staged intents."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from airflow.sdk.exceptions import AirflowFailException

from include import settings
from include.cognigy.model import Target
from include.request.retrain_request import RetrainRequest
from include.results import Captured
from include.state import state_store

STAGED_INTENTS = "challenger_intents.json"  # what `submit` staged: the intents the challenger trains on


def run_folder(context: Any, plan: dict[str, Any], target: dict[str, Any] | str) -> Any:
    """This run attempt's folder for one target (or "_request") in the state store: see `settings.run_dir`."""
    key = target if isinstance(target, str) else Target.from_dict(target).key
    return settings.run_dir(context["ti"].dag_id, context["ti"].run_id, key, plan.get("run_attempt", ""))


def request_of(plan: dict[str, Any]) -> RetrainRequest:
    return RetrainRequest.model_validate(plan["request"])


def training_target(plan: dict[str, Any], target: dict[str, Any]) -> Target:
    """The flow that trains and is judged: the staging flow, or production itself (in place)."""
    t = Target.from_dict(target)
    return request_of(plan).staging_target(t) or t


def trained_intents(folder: Any) -> dict[str, list[str]] | None:
    """Intent -> example sentences the challenger was trained on (written by `submit`), if known."""
    staged = state_store.read_json(folder / STAGED_INTENTS)
    if staged is None:
        return None
    return {i["name"]: list(i.get("exampleSentences") or []) for i in staged}


def read_rollback_point(captured: Captured | dict[str, Any]) -> dict[str, Any]:
    """The rollback point `capture` stored, checked against the checksum it recorded (when it did)."""
    if isinstance(captured, dict):  # capture's XCom as Airflow hands it over
        location, expected = captured["rollback_point_path"], captured.get("rollback_point_sha256")
    else:
        location, expected = captured.rollback_point_path, captured.rollback_point_sha256
    data = state_store.read_bytes(state_store.path_of(location))
    if expected and state_store.sha256(data) != expected:
        raise AirflowFailException(f"the rollback point {location} changed since it was captured (checksum differs)")
    return json.loads(data)


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI ([api] base_url)."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"
