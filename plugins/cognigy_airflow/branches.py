"""The graph's two decisions. Airflow's branch operators run them and skip the paths not taken.

- `decide` (after `evaluate`): a passed challenger goes to `approve` when a person must approve it, else to its
  accept path (`promote` then `release` with a staging flow, `release` in place); anything else settles:
  `rollback` when production must get its rollback point back, else `mlflow_sync`. Nothing retrained (dry run,
  unchanged, or the run stopped before changing anything): no path; `audit` closes the run.
- `confirm` (after `release`): `rollback` when the promotion or the release did not leave the judged model
  serving, else `mlflow_sync`.
The rules themselves are `include.results.RetrainRecord`'s (`after_evaluation`, `settle_path`).
"""

from __future__ import annotations

import logging
from typing import Any

from cognigy_airflow.record import resolve_plan, retrain_record
from include.evaluation.approval import ApprovalSettings, needs_approval

log = logging.getLogger(__name__)


def decide(target: dict[str, Any], plan: dict[str, Any], evaluated: Any, **context: Any) -> list[str] | str:
    plan = resolve_plan(plan)
    if not plan:  # validate refused the request: nothing was sent, only `audit` runs
        return []
    record = retrain_record(context, target, plan, evaluated=evaluated)
    if not record.retrained:
        return []
    if record.passed:
        needed, why = needs_approval(record, ApprovalSettings.from_params(plan.get("approval") or {}))
        if needed:
            log.info("approval needed: %s", why)  # the task log (a RuntimeTaskInstance has no `log`)
            return "approve"
    return record.after_evaluation()


def confirm(target: dict[str, Any], plan: dict[str, Any], released: Any, **context: Any) -> str:
    return retrain_record(context, target, plan, released=released).settle_path()
