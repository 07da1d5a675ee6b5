"""airflow-provider-cognigy: the reusable Airflow parts of the Cognigy.AI retraining product, laid out like
Airflow's dbt Cloud and Databricks providers and registered from `get_provider_info`:

- `hooks/cognigy.py`: `CognigyHook` (the `cognigy` connection, sync and async clients, the tenant's budget)
- `triggers/cognigy.py`: `CognigyJobTrigger` (polls a training from the triggerer)
- `sensors/cognigy.py`: `CognigyTrainingSensor` (the deferrable wait for one training: conn id, job id, start,
  deadline; cancels at the deadline; returns what the training did)
- `links/cognigy.py`: `CognigyTaskLink`, `MlflowRunLink` (task-page buttons)
- `get_provider_info.py`: the connection type and its form, and the registrations Airflow reads

The package builds on the project's plain-Python client (`include.cognigy`, `include.records`): Airflow runs with
the project folder on sys.path (as in the Astronomer template), so `include` is importable. It never imports the
plugins folder: the DAG-specific task bodies (submit, evaluate, promote, release, rollback...) stay in
`plugins/cognigy_airflow` and build on this package (the DAG's `wait_for_training` step,
`cognigy_airflow.wait_for_training.WaitForTraining`, subclasses the generic sensor).
"""
