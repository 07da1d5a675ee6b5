"""What a retrain leaves behind for reviewers: the audit trail, MLflow runs, and what keeps secrets out of both.

- ``audit``: the hash-chained audit trail (JSON lines file), its event vocabulary and ``verify``
- ``audit_db``: the same trail in a database table (PostgreSQL for deployments, SQLite for ``make run``)
- ``redaction``: every secret this process knows, masked in logs, XCom, audit text and MLflow
- ``mlflow_tracking``: one retrain as one MLflow run (params, metrics, artifacts, registry), written idempotently
- ``outbox``: MLflow syncs that could not be written yet, kept in the state store until the resync DAG does
"""
