"""Airflow-facing side of the Cognigy retraining product: hook, trigger, operators, extra links."""
