"""Extra links: from a task's page straight to the Cognigy flow/task or the MLflow run.

Airflow 3 evaluates `get_link` on the worker when the task ends (success or failure) and stores the URL in the
XCom `_link_<LinkClass>`; the UI shows a button per link. It does so only for links listed in the operator's
own `operator_extra_links` (the provider registers both classes: `extra-links` in `get_provider_info`), so each
operator lists its link and puts the URL on itself while it runs: `cognigy_url` (submit, wait_for_training,
rollback) and `mlflow_run_url` (mlflow_sync). A deferred task resumes as a new operator object and sets it again.
"""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink


class CognigyTaskLink(BaseOperatorLink):
    name = "Cognigy flow"

    def get_link(self, operator, *, ti_key) -> str:
        return getattr(operator, "cognigy_url", "") or ""


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        return getattr(operator, "mlflow_run_url", "") or ""


def cognigy_flow_url(console_url: str, project_id: str, flow_id: str, locale: str, job_id: str | None = None) -> str:
    """The flow's NLU page in the Cognigy console for one locale; `task=` names the Cognigy task when known."""
    url = f"{console_url.rstrip('/')}/agent/{project_id}/flow/{flow_id}/nlu?locale={locale}"
    return f"{url}&task={job_id}" if job_id else url
