"""The mlflow_sync task as an operator, so its task page gets an "MLflow run" button.

A `@task` is a `_PythonDecoratedOperator` with no extra links of its own, and Airflow 3 stores a link's URL
(XCom `_link_MlflowRunLink`) only for links on the operator class; this operator lists `MlflowRunLink` and keeps
the run's URL on itself. The work itself is `steps.mlflow_sync`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from cognigy_airflow import steps
from cognigy_airflow.links import MlflowRunLink


class MlflowSyncOperator(BaseOperator):
    """Record one retrain (DAG run × target) in MLflow; see `steps.mlflow_sync`."""

    template_fields = ("target", "plan", "captured", "submitted", "waited", "evaluated", "promoted", "rolled_back")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#e2f0d9"
    mlflow_run_url = ""  # read by MlflowRunLink when the task ends

    def __init__(
        self,
        *,
        target: Any,
        plan: Any,
        captured: Any,
        submitted: Any,
        waited: Any,
        evaluated: Any,
        promoted: Any,
        rolled_back: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target, self.plan, self.captured = target, plan, captured
        self.submitted, self.waited, self.evaluated = submitted, waited, evaluated
        self.promoted, self.rolled_back = promoted, rolled_back

    def execute(self, context: Any) -> dict[str, Any]:
        if not self.captured or (self.plan or {}).get("dry_run") or self.captured.get("unchanged"):
            # Runs ALL_DONE (a failed rollback is recorded too); without a rollback point nothing was retrained.
            raise AirflowSkipException("nothing to record: dry run, unchanged, or the run stopped before any change")
        result = steps.mlflow_sync(
            self.target,
            self.plan,
            self.captured,
            self.submitted,
            self.waited,
            self.evaluated,
            self.promoted,
            self.rolled_back,
            **context,
        )
        self.mlflow_run_url = (result or {}).get("run_url") or ""
        return result
