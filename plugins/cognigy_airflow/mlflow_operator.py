"""The mlflow_sync task as an operator, so its task page gets an "MLflow run" button.

A `@task` is a `_PythonDecoratedOperator` with no extra links of its own, and Airflow 3 stores a link's URL
(XCom `_link_MlflowRunLink`) only for links on the operator class; this operator lists `MlflowRunLink` and keeps
the run's URL on itself. The work itself is `steps.record_in_mlflow`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException
from cognigy_provider.links.cognigy import MlflowRunLink

from cognigy_airflow import steps
from cognigy_airflow.record import PlanFromReference, retrain_record


class MlflowSyncOperator(PlanFromReference, BaseOperator):
    """Record one retrain (DAG run × target) in MLflow; see `steps.record_in_mlflow`."""

    template_fields = ("target", "plan_ref", "rolled_back")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#e2f0d9"
    mlflow_run_url = ""  # read by MlflowRunLink when the task ends

    def __init__(self, *, target: Any, plan: Any, rolled_back: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target, self.plan_ref, self.rolled_back = target, plan, rolled_back

    def execute(self, context: Any) -> dict[str, Any]:
        record = retrain_record(context, self.target, self.plan, rolled_back=self.rolled_back)
        if not record.retrained:
            # Runs ALL_DONE (a failed rollback is recorded too); without a rollback point nothing was retrained.
            raise AirflowSkipException("nothing to record: dry run, unchanged, or the run stopped before any change")
        result = steps.record_in_mlflow(record, **context)
        self.mlflow_run_url = result.run_url or ""
        return result.to_xcom()
