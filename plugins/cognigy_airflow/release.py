"""The `release` task (snapshot path): the live flow released as a snapshot and every serving endpoint switched."""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from cognigy_provider.links.cognigy import CognigyTaskLink

from cognigy_airflow.auditing import audit
from cognigy_airflow.operators import (
    _CognigyOperator,
)
from cognigy_airflow.record import retrain_record
from cognigy_airflow.run_files import run_folder
from cognigy_airflow.run_state import RunState
from include.cognigy import releases
from include.cognigy.errors import (
    CognigyError,
)
from include.cognigy.model import Target
from include.results import Released, RetrainRecord
from include.state.target_memory import record_release, released_snapshots


class CognigySnapshotReleaseOperator(_CognigyOperator):
    """Snapshot path (`include.cognigy.releases`): release the judged live flow as a new snapshot and switch every
    serving endpoint to it; on any failure switch every endpoint back to the snapshot that served before.

    Runs only when customers meet a snapshot and the challenger passed (staging: and was promoted into the live
    flow). Before creating the snapshot it makes room under the agent's limit, deleting only snapshots this
    product released (never one an endpoint serves, never the last `keep_released_snapshots`). Safe to run again:
    the snapshot is found by its name (unique per run and target) before another is created, and switching an
    endpoint is repeatable.
    """

    template_fields = ("target", "plan_ref", "promoted")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#e6d9ff"

    def __init__(self, *, promoted: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.promoted = promoted

    def execute(self, context: Any) -> dict[str, Any]:
        record = retrain_record(context, self.target, self.plan, promoted=self.promoted)
        if not record.passed:  # `decide` (or `approve`) only comes here with a passed challenger
            raise AirflowFailException("the gates did not pass this challenger: nothing may be released")
        if record.staging and not (record.promoted and record.promoted.promoted):
            raise AirflowFailException("the promotion into the live flow did not succeed: nothing to release")
        self.link_to()
        if not record.snapshot_release:
            return self.on_last_try(context, lambda: self._confirm_live_project(context), self._gave_up)
        return self.on_last_try(context, lambda: self._release(context, record), self._gave_up)

    def _confirm_live_project(self, context: Any) -> dict[str, Any]:
        """Project path: the trained live flow is the release. Read back what every endpoint of the flow serves now,
        so the record says what was read, not what was assumed (training-jobs: the gateway has no endpoints)."""
        api = self.hook().get_client().v2
        if api is None:
            why = "training-jobs: the gateway serves its active model version"
            return Released(released=True, reason=why, released_at=time.time()).to_xcom()
        path = releases.release_path(api, self.production)
        names = [e.name for e in path.endpoints]
        if path.path != "project":
            raise AirflowFailException(
                f"endpoints {', '.join(names)} now serve snapshot {path.serving and path.serving.name!r}, not the "
                "live project this run trained: someone switched them during the run; nothing was released"
            )
        audit(context, "release_confirmed", self.plan, self.target, path="project", endpoints=names)
        why = "the endpoints serve the live project, which now holds the judged model"
        return Released(released=True, endpoints=names, released_at=time.time(), reason=why).to_xcom()

    def _release(self, context: Any, record: RetrainRecord) -> dict[str, Any]:
        target, plan = self.production, self.plan
        api = self.hook().get_client().v2
        assert api is not None and record.captured is not None
        path = releases.ReleasePath.from_dict(record.captured.release or {})
        previous = path.serving.to_dict() if path.serving else None
        state = RunState(context, run_folder(context, plan, self.target) / "release_state.json")
        own = released_snapshots(target.project_id)
        room = releases.room(api, target.project_id, own, keep_last=int(plan["keep_released_snapshots"]))
        deleted = [s.to_dict() for s in releases.make_room(api, room, int(plan["snapshot_limit"]))]
        if deleted:
            audit(
                context,
                "snapshots_pruned",
                plan,
                self.target,
                deleted=deleted,
                kept_last=plan["keep_released_snapshots"],
            )
        name = releases.snapshot_name(self._bot(api, target), target.locale, context["ti"].run_id)
        tried_before = state.get("release.intent_at") is not None
        state.set("release.intent_at", time.time())
        endpoint_names = [e.name for e in path.endpoints]
        try:
            snapshot = releases.release(
                api, target, path, name, self._description(context, record), tried_before=tried_before
            )
        except releases.ReleaseFailed as exc:
            made = exc.snapshot.to_dict() if exc.snapshot else None
            audit(context, "release_failed", plan, self.target, reason=str(exc), snapshot=made, previous=previous,
                  switched_back=exc.switched_back, endpoints=endpoint_names)  # fmt: skip
            if not exc.switched_back:
                self.log.error("RELEASE NOT SWITCHED BACK for %s: point endpoint(s) %s at snapshot %s by hand",
                               target.key, ", ".join(endpoint_names), previous)  # fmt: skip
            return Released(released=False, snapshot=made, previous=previous, endpoints=endpoint_names,
                            switched_back=exc.switched_back, deleted=deleted, reason=str(exc)).to_xcom()  # fmt: skip
        record_release(target.project_id, snapshot.to_dict(), context["ti"].run_id)
        audit(context, "snapshot_released", plan, self.target, snapshot=snapshot.to_dict(), previous=previous,
              endpoints=endpoint_names)  # fmt: skip
        return Released(released=True, snapshot=snapshot.to_dict(), previous=previous, endpoints=endpoint_names,
                        deleted=deleted, released_at=time.time()).to_xcom()  # fmt: skip

    def _gave_up(self, context: Any, why: str) -> dict[str, Any]:
        """Last try: the release raised before or while switching. Switch every endpoint back, then say so."""
        captured = retrain_record(context, self.target, self.plan, promoted=self.promoted).captured
        path = releases.ReleasePath.from_dict((captured and captured.release) or {})
        switched_back = False
        if path.serving is not None:
            try:
                releases.switch_endpoints(self.hook().get_client().v2, [e.id for e in path.endpoints], path.serving.id)
                switched_back = True
            except CognigyError as exc:
                why = f"{why}; switching back failed too: {exc}"
        audit(context, "release_failed", self.plan, self.target, reason=why, switched_back=switched_back)
        return Released(released=False, switched_back=switched_back, reason=why,
                        previous=path.serving.to_dict() if path.serving else None).to_xcom()  # fmt: skip

    @staticmethod
    def _bot(api: Any, target: Target) -> str:
        return str(api.flow(target).get("name") or target.flow_id)

    def _description(self, context: Any, record: RetrainRecord) -> str:
        summary = (record.evaluated and record.evaluated.summary) or {}
        figures = ", ".join(
            f"{label} {summary[key]:.4g}"
            for key, label in (("accuracy", "accuracy"), ("accuracy_delta", "change"), ("p_value", "p"))
            if isinstance(summary.get(key), int | float)
        )
        return (
            f"NLU retrain of flow {self.production.flow_id}, locale {self.production.locale}, Airflow run "
            f"{context['ti'].run_id}; gates passed ({figures or 'no figures'}); gates {self.plan.get('gates_hash')}"
        )[:1000]
