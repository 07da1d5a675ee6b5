"""The `promote` task (staging): the live flow brought to the judged intents, trained once, and proven."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException
from cognigy_provider.hooks.cognigy import cancel_and_settle, finished_epoch
from cognigy_provider.links.cognigy import CognigyTaskLink

from cognigy_airflow.auditing import audit
from cognigy_airflow.data_files import HELD_OUT, load_frozen
from cognigy_airflow.operators import (
    _CognigyOperator,
    _reattach,
    _spread,
    _start_once,
)
from cognigy_airflow.record import retrain_record
from cognigy_airflow.run_files import STAGED_INTENTS, run_folder
from cognigy_airflow.run_state import RunState
from include.cognigy import rest_v2
from include.cognigy.model import JobStatus
from include.cognigy.proof import PROOF_WAIT_SECONDS
from include.evaluation.held_out import agreement, load_predictions, save_predictions, score_utterances
from include.results import Promoted
from include.state import state_store


class CognigyPromoteOperator(_CognigyOperator):
    """Staging promotion: bring production to exactly the staged intents, train it once, prove it answers like
    the challenger that passed the gates.

    Runs only when the gates passed on the staging flow. Verified means: production's training is proven
    (`include.cognigy.proof`: an intent training of production's flow and locale, created after the import ended,
    done, nothing else training, the model up to date with exactly the staged intents) AND production's held-out
    answers agree with the challenger's on at least `MIN_AGREEMENT` of a
    spread sample (`VERIFY_SAMPLE` utterances; the same classifier trained on the same sentences answers the
    same, so a lower figure means production did not get what was judged). Anything else ends as
    `{"promoted": False, "needs_rollback": True}` and `rollback` restores the rollback point.
    """

    template_fields = ("target", "plan_ref", "evaluated")
    operator_extra_links = (CognigyTaskLink(),)
    ui_color = "#d9f2d9"
    MIN_AGREEMENT = 0.95
    VERIFY_SAMPLE = 100

    def __init__(self, *, evaluated: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evaluated = evaluated

    @property
    def deadline_seconds(self) -> float:
        return float(self.plan.get("rollback_deadline_seconds") or self.plan["deadline_seconds"])

    def execute(self, context: Any) -> dict[str, Any]:
        if self.plan.get("promotion") != "staging":
            raise AirflowSkipException("in place: the challenger was trained on production itself")
        record = retrain_record(context, self.target, self.plan, evaluated=self.evaluated)
        if not record.retrained:
            raise AirflowSkipException("nothing was retrained")
        if not record.passed:
            raise AirflowSkipException("the gates rejected the challenger: production is not touched")
        return self._or_give_up(context, lambda: self._start(context))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.link_to((event.get("status") or {}).get("job_id") or event.get("job_id"))
        return self._or_give_up(context, lambda: self._after_training(context, event))

    def _or_give_up(self, context: Any, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Errors are retried by Airflow; on the last try the promotion is given up and rollback restores."""
        return self.on_last_try(context, step, self._failed)

    def _start(self, context: Any) -> dict[str, Any]:
        production = self.production
        client = self.hook().get_client()
        folder = run_folder(context, self.plan, self.target)
        state = RunState(context, folder / "promote_state.json")
        staged = state_store.read_json(folder / STAGED_INTENTS)
        staged_fingerprint = rest_v2.fingerprint(staged)
        earlier = _reattach(client, production, state, "promote", wait=self.reconcile_seconds)
        if earlier is not None:
            status = earlier[0]
        else:
            audit(context, "promotion_started", self.plan, self.target, fingerprint=staged_fingerprint)
            if client.serving_fingerprint(production) != staged_fingerprint:
                client.replace_intents(production, staged)
            status = _start_once(
                client,
                production,
                state,
                "promote",
                lambda: client.start_training(
                    production, mode=self.plan["request"]["mode"], spec_body={}, idempotency_key="promote"
                ),
                wait=self.reconcile_seconds,
            )
            audit(context, "promotion_training_started", self.plan, self.target, promotion_job_id=status.job_id)
        self.link_to(status.job_id)
        if status.terminal:
            return self._after_training(context, {"outcome": "finished", "status": status.to_dict()})
        started = float(state.get("promote.submitted_at") or time.time())
        self.defer_on_training(status.job_id, started, self.deadline_seconds)

    def _after_training(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["outcome"] == "deadline":
            cancel_and_settle(self.hook().get_client(), event["job_id"])
            return self._failed(context, f"the promotion training passed {self.deadline_seconds:g}s", event["job_id"])
        if event["outcome"] != "finished":
            return self._failed(context, f"polling the promotion training failed: {event.get('message')}")
        status = JobStatus.from_dict(event["status"])
        if status.state != "succeeded":
            return self._failed(
                context, f"the promotion training ended {status.raw_status}: {status.reason}", status.job_id
            )
        return self._verify(context, status)

    def _verify(self, context: Any, status: JobStatus) -> dict[str, Any]:
        production = self.production
        client = self.hook().get_client()
        folder = run_folder(context, self.plan, self.target)
        staged_fingerprint = rest_v2.fingerprint(state_store.read_json(folder / STAGED_INTENTS))
        proof = client.prove_training(production, status.job_id, staged_fingerprint, wait_seconds=PROOF_WAIT_SECONDS)
        if not proof.proven:
            return self._failed(context, f"production's training is not proven: {proof.why_not()}", status.job_id)
        serving = proof.fingerprint if client.v2 else client.serving_fingerprint(production)
        if serving != staged_fingerprint:
            return self._failed(
                context, f"production holds {serving[:12]}…, not the staged {staged_fingerprint[:12]}…", status.job_id
            )
        challenger = load_predictions(folder / "challenger_predictions.jsonl")
        held = load_frozen(self.plan["data"][production.locale][HELD_OUT])
        sample = _spread(list(held.utterances), self.VERIFY_SAMPLE)
        now, _ = score_utterances(
            sample, lambda s: client.score(production, s), self.plan["request"]["heldOut"]["threshold"]
        )
        save_predictions(folder / "promotion_check_predictions.jsonl", now)
        agree = agreement(challenger, now)
        if agree < self.MIN_AGREEMENT:
            return self._failed(
                context,
                f"production's held-out answers agree with the judged challenger on only {agree:.0%} "
                f"(< {self.MIN_AGREEMENT:.0%}) of {len(sample)} utterances",
                status.job_id,
            )
        audit(context, "promotion_verified", self.plan, self.target, promotion_job_id=status.job_id,
              fingerprint=serving, agreement=round(agree, 4))  # fmt: skip
        return Promoted(
            promoted=True,
            verified=True,
            job_id=status.job_id,
            fingerprint=serving,
            agreement=agree,
            finished_at=finished_epoch(status),
        ).to_xcom()

    def _failed(self, context: Any, why: str, job_id: str | None = None) -> dict[str, Any]:
        audit(context, "promotion_failed", self.plan, self.target, reason=why, promotion_job_id=job_id)
        self.log.error("promotion of %s failed: %s; rollback restores the rollback point", self.target, why)
        return Promoted(promoted=False, verified=False, needs_rollback=True, reason=why, job_id=job_id).to_xcom()
