"""airflow-provider-cognigy: the reusable Airflow parts of the Cognigy.AI retraining product, laid out like
Airflow's dbt Cloud and Databricks providers and registered from `get_provider_info`:

- `hooks/cognigy.py`: `CognigyHook` (the `cognigy` connection, sync and async clients, the tenant's budget)
- `triggers/cognigy.py`: `CognigyJobTrigger` (polls a training from the triggerer)
- `sensors/cognigy.py`: `CognigyTrainingSensor` (the deferrable wait for a training)
- `links/cognigy.py`: `CognigyTaskLink`, `MlflowRunLink` (task-page buttons)
- `get_provider_info.py`: the connection type and its form, and the registrations Airflow reads

The package builds on the project's plain-Python client (`include.cognigy`, `include.records`): Airflow runs with
the project folder on sys.path (as in the Astronomer template), so `include` is importable. The DAG-specific task
bodies (submit, evaluate, promote, release, rollback...) stay in the plugins folder, `plugins/cognigy_airflow`.
"""
