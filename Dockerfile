# One image for every service of docker-compose.yaml: the Airflow components, the MLflow server and the
# Cognigy emulator. Direct dependencies from requirements.txt, versions held to requirements.lock.
# The emulator's code is not in the image (docker-compose.yaml bind-mounts ./emulator into its service);
# the libraries it needs (FastAPI, uvicorn, scikit-learn) come with the runtime set.
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt requirements.lock /opt/airflow/
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt -c /opt/airflow/requirements.lock
# The provider package: hook, trigger, sensor, extra links and the `cognigy` connection type with its UI form.
COPY --chown=airflow:root providers/cognigy_provider /opt/airflow/providers/cognigy_provider
RUN pip install --no-cache-dir --no-deps /opt/airflow/providers/cognigy_provider

# The code is also mounted by docker-compose.yaml for development; copied here so the image runs on its own.
COPY --chown=airflow:root include /opt/airflow/include
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root dags /opt/airflow/dags
# Owned by the airflow user so named volumes mounted here start writable.
RUN mkdir -p /opt/airflow/state /opt/airflow/auth /opt/airflow/mlflow /opt/airflow/emulator-state

ENV PYTHONPATH=/opt/airflow
