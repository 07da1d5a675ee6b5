"""The `submit` task: the candidate training data into the training flow, and one training started, exactly once."""

from __future__ import annotations

import json
import time
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException
from cognigy_provider.links.cognigy import CognigyTaskLink

from cognigy_airflow.auditing import audit
from cognigy_airflow.data_files import TRAINING, load_frozen, training_intents
from cognigy_airflow.operators import (
    _CognigyOperator,
    _reattach,
    _start_once,
)
from cognigy_airflow.record import stage
from cognigy_airflow.run_files import STAGED_INTENTS, read_rollback_point, request_of, run_folder
from cognigy_airflow.run_state import RunState
from include.cognigy import rest_v2
from include.cognigy.model import JobStatus, Target
from include.results import Submitted
from include.state import state_store


class CognigySubmitTrainingOperator(_CognigyOperator):
    """Put the candidate training data into the training flow and start the training exactly once.

    The training flow is the staging flow (staging promotion: production is not touched) or production itself
    (in place). Candidate data: the training file (source uri/demo, imported in chunks with overwrite semantics
    and verified by fingerprint), else the production flow's current intents (source flow; in place nothing is
    imported). What the challenger trains on is kept in the run folder (`challenger_intents.json`).

    Exactly once: the job id is kept in the task-instance state store. Before the POST we record the intent
    (a timestamp); a retry that finds an intent but no job id asks the tenant for trainings of this
    flow/locale started since then and reattaches to one, instead of starting another.
    """

    template_fields = ("target", "plan_ref", "captured")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#d6e9ff"
    trains_staging = True

    def __init__(self, *, captured: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.captured = captured

    def execute(self, context: Any) -> dict[str, Any]:
        plan, production = self.plan, self.production
        if plan.get("dry_run"):
            raise AirflowSkipException("dry run: nothing is sent to Cognigy")
        self.captured = stage("captured", self.captured)  # the XCom, typed
        if self.captured and self.captured.unchanged:
            raise AirflowSkipException("unchanged since the last successful training: nothing to retrain")
        request = request_of(plan)
        target = request.staging_target(production) or production
        client = self.hook().get_client()
        folder = run_folder(context, self.plan, self.target)
        state = RunState(context, folder / "submit_state.json")

        if earlier := _reattach(client, target, state, "submit", wait=self.reconcile_seconds):
            status, via = earlier
            audit(context, "training_reattached", plan, self.target, cognigy_job_id=status.job_id, via=via)
            return self._result(status, state, target, reattached=True)

        intents = self._candidate(plan, request, folder)
        fingerprint = rest_v2.fingerprint(intents)
        if client.v2 and (target != production or plan["data"][production.locale][TRAINING]):
            fingerprint = client.replace_intents(target, intents)
            audit(context, "challenger_staged", plan, self.target, flow_id=target.flow_id, fingerprint=fingerprint,
                  intents=len(intents), sentences=sum(len(i["exampleSentences"]) for i in intents))  # fmt: skip
        state.set("submit.training_counts", {i["name"]: len(i["exampleSentences"]) for i in intents})
        state.set("submit.fingerprint", fingerprint)

        idempotency_key = f"{context['ti'].dag_id}/{context['ti'].run_id}/{production.key}/{plan['request_hash']}"
        status = _start_once(
            client,
            target,
            state,
            "submit",
            lambda: client.start_training(
                target, mode=plan["request"]["mode"], spec_body=plan["spec_body"], idempotency_key=idempotency_key
            ),
            wait=self.reconcile_seconds,
        )
        audit(
            context,
            "training_submitted",
            plan,
            self.target,
            cognigy_job_id=status.job_id,
            cognigy_status=status.raw_status,
            trained_flow=target.flow_id,
            training_counts=state.get("submit.training_counts"),
        )
        return self._result(status, state, target, reattached=False)

    def _candidate(self, plan: dict[str, Any], request: Any, folder: Any) -> list[dict[str, Any]]:
        """The intents the challenger trains on, written once to the run folder (a retry reads the same)."""
        path = folder / STAGED_INTENTS
        if (earlier := state_store.read_json(path)) is not None:
            return earlier
        training = load_frozen(plan["data"][self.production.locale][TRAINING])
        if training is not None:
            intents = rest_v2.intents_file(training_intents(request, training))
        else:  # source flow: what production holds now (the rollback point)
            point = read_rollback_point(self.captured)
            intents = [
                {**i, "exampleSentences": list(i.get("exampleSentences") or [])} for i in point.get("intents") or []
            ]
        state_store.write_text(path, json.dumps(intents, ensure_ascii=False))
        return intents

    def _result(self, status: JobStatus, state: RunState, target: Target, *, reattached: bool) -> dict[str, Any]:
        self.link_to(status.job_id)
        submitted_at = state.get("submit.submitted_at") or state.get("submit.intent_at") or time.time()
        return Submitted(
            job_id=status.job_id,
            status=status.raw_status,
            submitted_at=submitted_at,
            reattached=reattached,
            training_counts=state.get("submit.training_counts"),
            fingerprint=state.get("submit.fingerprint"),
            trained_flow=target.flow_id,
            version_id=status.version_id,
        ).to_xcom()


def _counts(training: dict[str, list[str]] | None) -> dict[str, int] | None:
    return {k: len(v) for k, v in training.items()} if training is not None else None
