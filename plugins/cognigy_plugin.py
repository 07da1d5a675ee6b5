"""Registers the Cognigy operator extra links with Airflow (the plugins folder is on sys.path)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from cognigy_airflow.links import CognigyTaskLink, MlflowRunLink


class CognigyRetrainPlugin(AirflowPlugin):
    name = "cognigy_retrain"
    operator_extra_links = [CognigyTaskLink(), MlflowRunLink()]  # noqa: RUF012
