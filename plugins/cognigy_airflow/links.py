"""Extra links: from a task's page straight to the Cognigy flow/task or the MLflow run.

Airflow 3 evaluates `get_link` on the worker when the task finishes and stores the URL in XCom; the
operators put the URL on themselves while they run.
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
    url = f"{console_url.rstrip('/')}/agent/{project_id}/flow/{flow_id}/nlu?locale={locale}"
    return f"{url}&task={job_id}" if job_id else url
