"""Two Celery workers on one machine, told apart and routed deterministically (test stacks only).

Two workers on one machine have one host name, so a task instance's `hostname` could not say which of them ran
it. Each worker of a multi-worker stack (devtools/distributed.py `Worker`) gets ``COGNIGY_WORKER_NAME`` and
``AIRFLOW__CORE__HOSTNAME_CALLABLE=devtools.worker_routing.hostname``: the name is what the Task SDK reports as the
task instance's hostname. Each worker also consumes a Celery queue named after it besides the default one.

`task_policy` is the cluster policy the stack installs as ``$AIRFLOW_HOME/config/airflow_local_settings.py``
(:data:`LOCAL_SETTINGS`; the dag-processor applies it while parsing): every retrain run's `capture` goes to the
queue ``worker_a`` and its `rollback` to ``worker_b``, so a rollback always runs on another worker than the capture
that took its rollback point. Everything else stays on the default queue, which both workers consume. Not for a
deployment: a real one routes nothing, its workers are on different hosts anyway.
"""

from __future__ import annotations

import os
import socket
from typing import Any

WORKER_NAME_ENV = "COGNIGY_WORKER_NAME"
HOSTNAME_CALLABLE = "devtools.worker_routing.hostname"
DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue
CAPTURE_WORKER, ROLLBACK_WORKER = "worker_a", "worker_b"
ROUTES = {"capture": CAPTURE_WORKER, "rollback": ROLLBACK_WORKER}  # task id of cognigy_nlu_retrain -> queue
ROUTED_DAG = "cognigy_nlu_retrain"

LOCAL_SETTINGS = '''"""A test stack's cluster policy (devtools/distributed.py wrote it): devtools/worker_routing.py."""

from devtools.worker_routing import task_policy  # noqa: F401
'''


def hostname() -> str:
    """`[core] hostname_callable` of a worker: its name from the environment (else the machine's name)."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def task_policy(task: Any) -> None:
    """Route `capture` to the queue ``worker_a`` and `rollback` to ``worker_b`` (the retrain DAG's tasks only)."""
    try:
        dag_id = task.dag_id
    except Exception:  # a task outside any DAG
        dag_id = None
    queue = ROUTES.get(task.task_id)
    if queue is not None and dag_id in (None, ROUTED_DAG):
        task.queue = queue
