"""The one place a task's typed result becomes XCom and the XComs of a target's earlier tasks become a
:class:`~include.results.RetrainRecord`.

The DAG hands each task only its direct predecessor's result (the graph is the pipeline, one line); the tasks
that must look further back (evaluate, promote, release, rollback, mlflow_sync, finalize — the last four run whatever
happened before) read the earlier results of the same target here, from the same DAG run and map index. A stage
that did not run is ``None`` in the record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from include.results import (
    Approved,
    Captured,
    Evaluated,
    Promoted,
    Released,
    RetrainRecord,
    RolledBack,
    Submitted,
    Synced,
    Waited,
)

# record field -> (the task that returns it, its model), in pipeline order
STAGES: dict[str, tuple[str, type]] = {
    "captured": ("capture", Captured),
    "submitted": ("submit", Submitted),
    "waited": ("wait_for_training", Waited),
    "evaluated": ("evaluate", Evaluated),
    "approved": ("approve", Approved),  # only when the release waited for a person (opt-in)
    "promoted": ("promote", Promoted),
    "released": ("release", Released),
    "rolled_back": ("rollback", RolledBack),
    "synced": ("mlflow_sync", Synced),
}


def plan_reference(plan: dict[str, Any], folder: Any) -> dict[str, Any]:
    """What travels in XCom and every task's rendered fields instead of the plan: where `validate` wrote it and its
    SHA-256 (plus the request's and the gates' hashes, for a reader of the XCom)."""
    from include.state import state_store

    text = json.dumps(plan, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = folder / f"plan-{digest[:16]}.json"
    state_store.write_text(path, text)
    return {"plan_path": str(path), "plan_sha256": digest, "request_hash": plan.get("request_hash"),
            "gates_hash": plan.get("gates_hash")}  # fmt: skip


_plans: dict[str, dict[str, Any]] = {}


def resolve_plan(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's plan from its reference (read once per process, checked against its SHA-256); a plan handed in
    whole (tests, in-process harnesses) is returned as it is."""
    if not plan or "plan_path" not in plan:
        return plan
    digest = plan["plan_sha256"]
    if digest not in _plans:
        from include.state import state_store

        raw = state_store.read_bytes(state_store.path_of(plan["plan_path"]))
        if hashlib.sha256(raw).hexdigest() != digest:
            raise AirflowFailException(f"the run's plan {plan['plan_path']} no longer matches its SHA-256: refusing it")
        _plans[digest] = json.loads(raw)
    return _plans[digest]


class PlanFromReference:
    """Mixin for operators handed the plan's reference (template field `plan_ref`, kept small in the rendered
    fields): `plan` is the plan itself, read once per process."""

    plan_ref: Any

    @property
    def plan(self) -> dict[str, Any]:
        return resolve_plan(self.plan_ref)  # type: ignore[return-value]


def to_xcom(result: Any) -> dict[str, Any] | None:
    """A task's return value: its typed result as JSON."""
    return None if result is None else result.to_xcom()


def stage(name: str, value: Any) -> Any:
    """One stage's XCom (dict, model or None) as its typed result."""
    model = STAGES[name][1]
    return None if value is None or isinstance(value, model) else model.model_validate(value)


def retrain_record(context: Any, target: dict[str, Any], plan: dict[str, Any], **known: Any) -> RetrainRecord:
    """This target's record up to the calling task: the results handed in (`known`, by record field), the
    others pulled from the XComs of this DAG run and map index."""
    plan = resolve_plan(plan)
    ti = context["ti"]
    group, _, own = ti.task_id.rpartition(".")
    values = {}
    for name, (task_id, _) in STAGES.items():
        if task_id == own:  # the stages from the caller on have not run yet
            break
        if name in known:
            values[name] = stage(name, known[name])
            continue
        pulled = ti.xcom_pull(task_ids=f"{group}.{task_id}" if group else task_id, map_indexes=ti.map_index)
        values[name] = stage(name, pulled)
    return RetrainRecord(plan=plan or {}, target=target, **values)
