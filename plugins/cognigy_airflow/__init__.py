"""Airflow-facing side of the Cognigy retraining product: hook, trigger, operators, extra links."""

from cognigy_airflow import state_storage as _state_storage  # noqa: F401  (opens s3:// state for include/)
