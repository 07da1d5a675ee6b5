"""Approval before a release (opt-in): the trigger form's three settings and the `approve` task.

`approve` runs only when `decide` found that a passed challenger needs a person (`include.evaluation.approval`).
It is the standard provider's Human-in-the-loop branch operator: the task waits in Airflow's own "awaiting input"
state (no worker slot, no trigger), the approvers are told through the alert channels (`notify.send`) with a link
to the task's Required Actions page, and a person chooses **Release** or **Reject** in the Airflow UI (or through
the REST API: PATCH .../taskInstances/approve/-1/hitlDetails). No answer within `approval_timeout_minutes`: the
scheduler applies the default, **Reject**, and the decision is recorded as timed out.

Release -> `record.accept_path()` (promote, or release in place). Reject or timeout -> `record.settle_path()`
(staging: nothing was touched, straight to mlflow_sync; in place: rollback restores production). Who decided and
when goes into the audit (`approval_decided`) and, through the typed result `Approved`, into MLflow's tags.
"""

from __future__ import annotations

import contextlib
import html
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator, HITLOperator
from airflow.sdk import Param

from cognigy_airflow import notify
from cognigy_airflow.auditing import audit
from cognigy_airflow.record import PlanFromReference, retrain_record
from include.evaluation.approval import (
    APPROVAL_MODES,
    DEFAULT_MARGIN,
    DEFAULT_TIMEOUT_MINUTES,
    MAX_TIMEOUT_MINUTES,
    ApprovalSettings,
    needs_approval,
)
from include.results import Approved, RetrainRecord

APPROVAL_SECTION = "Release approval"
APPROVAL_KEYS = ("approval", "approval_margin", "approval_timeout_minutes")

APPROVAL_PARAMS = {
    "approval": Param(
        "never", title="Approval before a release", section=APPROVAL_SECTION, type="string", enum=list(APPROVAL_MODES),
        values_display={"never": "never: the gates alone decide",
                        "borderline": "borderline: a person decides when a gate passed only just, or warned",
                        "always": "always: every release waits for a person"},
        description="A passed challenger waits (no worker slot) for a person to choose Release or Reject in the "
                    "Airflow UI (Browse > Required Actions); the alert channels tell the approvers. A timeout "
                    "counts as a rejection. Rejected in place: production is restored."),
    "approval_margin": Param(
        DEFAULT_MARGIN, title="Borderline margin", section=APPROVAL_SECTION, type="number", minimum=0, maximum=1,
        description="approval=borderline: a passed gate whose measured value is within this distance of its "
                    "threshold (e.g. macro recall 0.81 against the floor 0.80) needs a person."),
    "approval_timeout_minutes": Param(
        DEFAULT_TIMEOUT_MINUTES, title="Approval timeout (minutes)", section=APPROVAL_SECTION, type="integer",
        minimum=1, maximum=MAX_TIMEOUT_MINUTES,
        description="How long a release waits for a decision; no answer by then counts as Reject."),
}  # fmt: skip


def approval_settings(plan: dict[str, Any] | None, params: dict[str, Any] | None) -> ApprovalSettings:
    """The run's settings: the plan's (`validate` keeps the flat params as `plan["approval"]`), else the params."""
    plan = plan or {}
    if isinstance(plan.get("approval"), dict):
        return ApprovalSettings.from_params(plan["approval"])
    source = {k: plan[k] for k in APPROVAL_KEYS if k in plan} or {k: (params or {}).get(k) for k in APPROVAL_KEYS}
    return ApprovalSettings.from_params(source)


def approval_needed(record: RetrainRecord, params: dict[str, Any] | None) -> tuple[bool, str]:
    """For `decide`: whether this passed challenger waits for a person (settings from plan or params), and why."""
    return needs_approval(record, approval_settings(record.plan, params))


class CognigyApprovalOperator(PlanFromReference, HITLBranchOperator):
    """`approve`: a person releases or rejects a challenger that passed the gates (see the module docstring).

    The wait's length comes from the run's `approval_timeout_minutes` at run time (`response_timeout`, enforced by
    the scheduler's awaiting-input sweep); `execution_timeout` is not used (the provider clears it, as it would
    race the wait). The parse-time default is `DEFAULT_TIMEOUT_MINUTES`.
    """

    template_fields = ("subject", "body", "target", "plan_ref", "evaluated")
    ui_color = "#fff2cc"
    RELEASE, REJECT = "Release", "Reject"

    def __init__(self, *, target: Any, plan: Any, evaluated: Any, task_id: str = "approve", **kwargs: Any) -> None:
        kwargs.setdefault("response_timeout", timedelta(minutes=DEFAULT_TIMEOUT_MINUTES))
        kwargs.setdefault("retries", 0)  # a retry would ask again; the question stands until answered or timed out
        super().__init__(
            task_id=task_id,
            subject="Release the retrained NLU model?",
            options=[self.RELEASE, self.REJECT],
            defaults=[self.REJECT],  # what the timeout chooses
            multiple=False,
            **kwargs,
        )
        self.target, self.plan_ref, self.evaluated = target, plan, evaluated

    # --- before the wait -----------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        record = self._record(context)
        if not (record.retrained and record.passed):  # `decide` sends only passed challengers; never release others
            return self._decide(context, record, self._not_asked(record))
        settings = approval_settings(self.plan, context.get("params"))
        why = self._why(record, settings)
        self.response_timeout = timedelta(minutes=settings.timeout_minutes)
        self.subject, self.body = approval_subject(record), approval_body(record, why, settings)
        self.notifiers = [*self.notifiers, self._tell_approvers]  # after the request is written, before the wait
        audit(context, "approval_requested", self.plan, self.target, reason=why, approval=settings.mode,
              approval_timeout_minutes=settings.timeout_minutes, options=self.options,
              defaults=self.defaults)  # fmt: skip
        return super().execute(context)

    def _tell_approvers(self, context: Any) -> None:
        link = ""
        with contextlib.suppress(ValueError):  # no [api] base_url: no link
            link = self.generate_link_to_ui(task_instance=context["ti"])
        text = f"{self.subject}\n\n{self.body}" + (f"\n\nDecide here: {link}" if link else "")
        link_html = f'<p><a href="{html.escape(link)}">Release or reject in Airflow</a></p>' if link else ""
        notify.send(context, self.subject, text, f"<pre>{html.escape(self.body or '')}</pre>{link_html}")

    # --- after the answer (or the timeout) -----------------------------------------------------------------
    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        timed_out = bool(event.get("timedout")) or event.get("error_type") == "timeout"
        if "error" in event and event.get("error_type") == "timeout":  # no defaults written: still a rejection
            event = {"chosen_options": [self.REJECT], "params_input": {}, "responded_at": None,
                     "responded_by_user": None}  # fmt: skip
        else:
            event = dict(HITLOperator.execute_complete(self, context, event))
        chosen = list(event.get("chosen_options") or [])
        approved = chosen == [self.RELEASE] and not timed_out
        decision = "approved" if approved else "timed_out" if timed_out else "rejected"
        record = self._record(context)
        settings = approval_settings(self.plan, context.get("params"))
        result = Approved(
            approved=approved,
            decision=decision,
            responded_by=_user(event.get("responded_by_user")),
            responded_at=_iso(event.get("responded_at")),
            timed_out=timed_out,
            reason=self._why(record, settings),
        )
        return self._decide(context, record, result)

    def _decide(self, context: Any, record: RetrainRecord, result: Approved) -> dict[str, Any]:
        record = record.model_copy(update={"approved": result})
        branch = record.accept_path() if result.approved else record.settle_path()
        result = result.model_copy(update={"branch": branch})
        user = result.responded_by or {}
        audit(context, "approval_decided", self.plan, self.target, decision=result.decision, approved=result.approved,
              responded_by=user or None, responded_by_id=user.get("id"), responded_by_name=user.get("name"),
              responded_at=result.responded_at, timed_out=result.timed_out, branch=branch, reason=result.reason,
              restore=record.restore_needed()[1])  # fmt: skip
        context["ti"].xcom_push(key="return_value", value=result.to_xcom())  # a non-mapped branch raises, not returns
        self.do_branch(context, branch)
        return result.to_xcom()

    @staticmethod
    def _why(record: RetrainRecord, settings: ApprovalSettings) -> str:
        return needs_approval(record, settings)[1] if settings.mode != "never" else "the run sent it for approval"

    def _not_asked(self, record: RetrainRecord) -> Approved:
        return Approved(approved=False, decision="rejected", reason="not asked: the gates did not pass")

    def _record(self, context: Any) -> RetrainRecord:
        return retrain_record(context, self.target, self.plan, evaluated=self.evaluated)


def _user(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    if isinstance(value, dict):
        return {"id": value.get("id"), "name": value.get("name")}
    return {"id": getattr(value, "id", None), "name": getattr(value, "name", None)}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


# --- what the approver reads ---------------------------------------------------------------------------------
def _name(record: RetrainRecord) -> str:
    target = record.target or {}
    return str(target.get("name") or target.get("bot") or target.get("flow_id") or "?")


def approval_subject(record: RetrainRecord) -> str:
    target = record.target or {}
    return f"[cognigy] approve the release of {_name(record)} {target.get('locale', '')}?".replace("  ", " ")


SUMMARY_ROWS = (
    ("accuracy", "accuracy"), ("macro_precision", "macro precision"), ("macro_recall", "macro recall"),
    ("macro_f1", "macro F1"), ("bias_score", "bias score"), ("leaked_share", "leaked share"),
    ("accuracy_delta", "accuracy change vs champion"), ("macro_f1_delta", "macro-F1 change vs champion"),
    ("p_value", "McNemar p"), ("verdict", "verdict vs champion"), ("n_scored", "held-out utterances scored"),
)  # fmt: skip


def approval_body(record: RetrainRecord, why: str, settings: ApprovalSettings) -> str:
    """Markdown for the Required Actions page and the alert: the target, the verdict so far, the gate summary,
    why a person is asked, and what each choice does."""
    target, evaluated = record.target or {}, record.evaluated
    summary = (evaluated.summary if evaluated else {}) or {}
    staging = record.staging
    lines = [
        f"**Bot (flow)**: {_name(record)} — flow `{target.get('flow_id')}` in project `{target.get('project_id')}`",
        f"**Locale**: {target.get('locale')}",
        f"**So far**: the challenger (training {record.job_id or '?'}) passed every blocking gate: "
        f"{evaluated.reason if evaluated else '?'}; promotion {'staging' if staging else 'in place'}.",
        f"**Why you are asked**: {why}",
        "",
        "| gate report | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {summary[key]} |" for key, label in SUMMARY_ROWS if summary.get(key) is not None]
    for key, label in (("warning_gates", "warnings (non-blocking gates failed)"),
                       ("not_evaluated_gates", "not evaluated (allowed)")):  # fmt: skip
        if summary.get(key):
            lines.append(f"| {label} | {', '.join(summary[key])} |")
    report = (evaluated.artifacts if evaluated else {}).get("per_intent.md")
    if report:
        lines += ["", f"Full gate report: `{report}`"]
    if staging:
        reject = "nothing is released; production was never touched"
    elif record.no_rollback_version:
        reject = "nothing is released; no rollbackTriggerVersionId was given, so nothing is rolled back"
    else:
        reject = "production (which already serves the challenger, in place) is restored to its rollback point"
    lines += [
        "",
        f"**Release**: {'production is promoted to the challenger' if staging else 'the challenger is released'}.",
        f"**Reject**: {reject}.",
        f"No answer within {settings.timeout_minutes} minutes counts as **Reject**.",
    ]
    return "\n".join(lines)
