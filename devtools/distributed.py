"""Airflow as separate real processes on one machine: the docker-compose stack without Docker.

`airflow api-server` (on a free loopback port), `scheduler`, `dag-processor`, `celery worker` and `triggerer`,
each in its own process group, against a fresh PostgreSQL database (dropped afterwards) and a Redis DB index of
its own, with the settings of devtools/deployment.py. Used by tests/fixtures_airflow_stack.py and by hand:

    PYTHONPATH=. .venv/bin/python -m devtools.distributed            # serve until Ctrl-C
    PYTHONPATH=. .venv/bin/python -m devtools.distributed --run      # one fast DAG run, a verdict, stop

PostgreSQL and Redis: by hand, the servers at COGNIGY_STACK_PG_URL / COGNIGY_STACK_REDIS_URL when set, else
servers of its own from pip-installed binaries (devtools/services.py: free loopback ports, temporary data,
stopped at the end); the tests always start their own.

`start_stack(workers=[Worker("worker_a"), Worker("worker_b")], local_settings=...)` starts several Celery workers
instead of one, each as if on a host of its own (`Worker`: own working directory, TMPDIR and
COGNIGY_RETRAIN_STATE_DIR, its own name as the task instances' hostname, a queue of its own); the tests use it with
the run state in S3, the audit trail in PostgreSQL and the rate-limit budget in Redis (tests/fixtures_airflow_stack.py).

The admin password exists only in the stack's passwords file (mode 0600, deleted at stop) and in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis
import requests
from psycopg2 import sql

from devtools.airflow_env import DEMO_CONF, ensure_tenant_pool
from devtools.deployment import ADMIN_USER, AIRFLOW_SETTINGS, DAG_ID
from devtools.servers import ROOT, Server, free_port
from devtools.worker_routing import DEFAULT_QUEUE, HOSTNAME_CALLABLE, WORKER_NAME_ENV

# Servers to use instead of starting our own (by hand only): an admin URL (a database to connect to for
# CREATE/DROP DATABASE) and a Redis URL without a DB index.
PG_URL_ENV = "COGNIGY_STACK_PG_URL"
REDIS_URL_ENV = "COGNIGY_STACK_REDIS_URL"
REDIS_CLAIM_KEY = "cognigy-nlu-retrain:stack-claim"
COMPONENTS: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    # One machine, one AIRFLOW_HOME: the api-server reads task and trigger logs from the files, so the worker
    # and the triggerer start no log server (it would listen on every interface).
    "celery-worker": ["celery", "worker", "--skip-serve-logs"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
WORKER_PREFIX = "celery-"  # process names of Celery workers: "celery-worker", or "celery-<Worker.name>"
FAST_CONF = {**DEMO_CONF, "requests_per_second": 100, "held_out_per_intent": 6}  # the demo data, by name
TERMINAL_RUN_STATES = {"success", "failed"}
FLEET_DAG_ID = "cognigy_nlu_fleet"  # one night: one triggered `DAG_ID` run per flow/locale (dags/cognigy_nlu_fleet.py)
TARGET_FIELDS = ("project_id", "flow_id", "locales", "model_id", "fleet")  # the retrain form's, not the fleet's


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


# --- PostgreSQL and Redis ------------------------------------------------------------------------------------
def create_database(pg_admin_url: str, prefix: str = "airflow_stack") -> str:
    """A new, empty database on the PostgreSQL server at pg_admin_url; returns its name."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with _pg_admin(pg_admin_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(pg_admin_url: str, name: str) -> None:
    with _pg_admin(pg_admin_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def _pg_admin(pg_admin_url: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(pg_admin_url)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        yield conn
    finally:
        conn.close()


def database_url(pg_admin_url: str, name: str, driver: str = "postgresql+psycopg2") -> str:
    base = pg_admin_url.rsplit("/", 1)[0].split("://", 1)[1]
    return f"{driver}://{base}/{name}"


def claim_redis_db(redis_url: str) -> int:
    """An empty Redis DB index nobody else has claimed (atomic SET NX); its keys are flushed at release."""
    probe = redis.Redis.from_url(f"{redis_url}/0")
    count = int(probe.config_get("databases").get("databases", 16))
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    for index in range(count - 1, 0, -1):  # from the top: apps usually sit at 0, 1, ...
        db = redis.Redis.from_url(f"{redis_url}/{index}")
        if db.dbsize() == 0 and db.set(REDIS_CLAIM_KEY, token, nx=True, ex=6 * 3600):
            return index
    raise RuntimeError("no free Redis DB index")


def release_redis_db(redis_url: str, index: int) -> None:
    redis.Redis.from_url(f"{redis_url}/{index}").flushdb()


# --- the stack -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Worker:
    """One `airflow celery worker` of a multi-worker stack, as if on a host of its own.

    `name` is its task instances' hostname (``[core] hostname_callable`` = devtools.worker_routing.hostname), its
    Celery node name and a Celery queue it consumes besides the default one. Its working directory, TMPDIR and
    COGNIGY_RETRAIN_STATE_DIR are folders of its own under ``<stack>/workers/<name>/``: nothing local is shared with
    another worker (the stack's AIRFLOW_HOME is: Airflow's configuration and task logs, which the api-server reads)."""

    name: str

    @property
    def process_name(self) -> str:
        return f"{WORKER_PREFIX}{self.name}"

    def dirs(self, base_dir: Path) -> dict[str, Path]:
        root = base_dir / "workers" / self.name
        return {"cwd": root / "cwd", "tmp": root / "tmp", "state": root / "state"}

    def argv(self) -> list[str]:
        queues = f"{DEFAULT_QUEUE},{self.name}"
        return [*COMPONENTS["celery-worker"], "--queues", queues, "--celery-hostname", f"{self.name}@%h"]

    def env(self, stack_env: dict[str, str], base_dir: Path) -> dict[str, str]:
        dirs = self.dirs(base_dir)
        return {
            **stack_env,
            "COGNIGY_RETRAIN_STATE_DIR": str(dirs["state"]),
            "TMPDIR": str(dirs["tmp"]),
            WORKER_NAME_ENV: self.name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        }


@dataclass
class AirflowStack:
    base_dir: Path
    env: dict[str, str] = field(repr=False)
    api_url: str
    db_name: str
    redis_db: int
    pg_admin_url: str
    redis_url: str
    password: str = field(repr=False)
    processes: dict[str, Server] = field(default_factory=dict)
    workers: dict[str, dict[str, Path]] = field(default_factory=dict)  # Worker.name -> its own local folders
    _session: requests.Session | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def state_dir(self) -> Path:
        return Path(self.env["COGNIGY_RETRAIN_STATE_DIR"])

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "process-logs"

    @property
    def worker_processes(self) -> list[str]:
        return [name for name in self.processes if name.startswith(WORKER_PREFIX)]

    @property
    def passwords_file(self) -> Path:
        return Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])

    # -- REST API --
    def token(self) -> str:
        """A JWT from the simple auth manager: POST /auth/token with the admin's credentials."""
        resp = requests.post(
            f"{self.api_url}/auth/token", json={"username": ADMIN_USER, "password": self.password}, timeout=30
        )
        resp.raise_for_status()
        return resp.json()["access_token"]

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        if self._session is None:
            self._session = requests.Session()
            self._session.trust_env = False
            self._session.headers["Authorization"] = f"Bearer {self.token()}"
        kwargs.setdefault("timeout", 30)
        return self._session.request(method, f"{self.api_url}{path}", **kwargs)

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 180) -> dict:
        """Until the dag-processor has parsed and stored the DAG."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            resp = self.api("GET", f"/api/v2/dags/{dag_id}")
            if resp.status_code == 200:
                return resp.json()
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} not parsed within {timeout}s; import errors: {self.import_errors()}")

    def import_errors(self) -> list[dict]:
        return self.api("GET", "/api/v2/importErrors").json().get("import_errors", [])

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, conf: dict, dag_id: str = DAG_ID) -> str:
        resp = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        resp.raise_for_status()
        return resp.json()["dag_run_id"]

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        resp = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        resp.raise_for_status()
        return resp.json()

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        """Every task instance of the run: the API pages them (100 at most per page; a fleet has more)."""
        found: list[dict] = []
        while True:
            resp = self.api(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found)},
            )
            resp.raise_for_status()
            page = resp.json()
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def task_log(self, run_id: str, task_id: str, try_number: int, map_index: int = -1, dag_id: str = DAG_ID) -> str:
        resp = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        resp.raise_for_status()
        return json.dumps(resp.json().get("content"))

    def explain(self, run_id: str, dag_id: str = DAG_ID, chars: int = 6000) -> str:
        """For a failed assertion: every task's state, then the end of each failed task's log (its last try)."""
        tis = self.task_instances(run_id, dag_id)
        lines = [f"{run_id}: " + ", ".join(f"{ti['task_id']}={ti['state']}" for ti in tis)]
        for ti in tis:
            if ti["state"] in ("failed", "upstream_failed") and ti.get("try_number"):
                try:
                    log = self.task_log(run_id, ti["task_id"], ti["try_number"], ti.get("map_index", -1), dag_id)
                except requests.RequestException as exc:
                    log = f"(log not readable: {exc})"
                lines.append(f"--- {ti['task_id']} try {ti['try_number']} ---\n{log[-chars:]}")
        return "\n".join(lines)

    def wait_for_run(
        self,
        run_id: str,
        timeout: float = 600,
        on_poll: Callable[[list[dict]], None] | None = None,
        dag_id: str = DAG_ID,
    ) -> dict:
        """Poll the run (and its task instances, given to on_poll) until it ends.

        A poll the api-server does not answer in time is repeated (its one worker shares two cores with everything
        else); a dead process still ends the wait at once (check_alive)."""
        deadline = time.monotonic() + timeout
        unanswered: list[str] = []
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if on_poll is not None:
                    on_poll(self.task_instances(run_id, dag_id))
                run = self.run(run_id, dag_id)
            except requests.Timeout as exc:
                unanswered.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}")
                continue
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} did not end within {timeout}s (polls unanswered: {unanswered})")

    def dag_runs(self, dag_id: str = DAG_ID) -> list[dict]:
        """Every run of the DAG (paged, 100 at a time)."""
        found: list[dict] = []
        while True:
            resp = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100, "offset": len(found)})
            resp.raise_for_status()
            page = resp.json()
            found += page["dag_runs"]
            if not page["dag_runs"] or len(found) >= page["total_entries"]:
                return found

    def xcoms(self, run_id: str, dag_id: str = DAG_ID, key_like: str = "%") -> list[dict]:
        """The run's XComs straight from the metadata database ({task_id, map_index, key, value}): what the UI
        reads, e.g. an extra link's URL (`_link_<LinkClass>`, stored when the task ends)."""
        conn = psycopg2.connect(database_url(self.pg_admin_url, self.db_name, driver="postgresql"))
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = %s AND run_id = %s AND key LIKE %s",
                    (dag_id, run_id, key_like),
                )
                rows = cur.fetchall()
        finally:
            conn.close()
        out = []
        for task_id, map_index, key, value in rows:
            if isinstance(value, bytes | memoryview):
                value = bytes(value).decode()
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            out.append({"task_id": task_id, "map_index": map_index, "key": key, "value": value})
        return out

    def run_fleet_night(self, conf: dict, timeout: float = 1800, on_poll: Callable[[], None] | None = None) -> dict:
        """Trigger one night of the fleet DAG (both DAGs unpaused; conf = the fleet form's params, target fields
        dropped), wait for it and for every retrain run it triggered; returns
        {run_id, state, task_instances, runs: {retrain run id: {state, note, conf, task_instances}}}.

        The night's `retrain` tasks wait for their runs, so when the night ends its runs have ended too; a run still
        going (the night failed early) is waited for here."""
        for dag_id in (DAG_ID, FLEET_DAG_ID):
            self.wait_for_dag(dag_id)
            self.unpause(dag_id)
        conf = {k: v for k, v in conf.items() if k not in TARGET_FIELDS}
        run_id = self.trigger(conf, dag_id=FLEET_DAG_ID)
        deadline = time.monotonic() + timeout
        polled = (lambda _tis: on_poll()) if on_poll is not None else None
        night = self.wait_for_run(run_id, timeout=timeout, dag_id=FLEET_DAG_ID, on_poll=polled)
        runs = {}
        for run in self.dag_runs(DAG_ID):
            if not run["dag_run_id"].startswith(f"{run_id}__"):
                continue
            if run["state"] not in TERMINAL_RUN_STATES:
                run = self.wait_for_run(run["dag_run_id"], timeout=max(60.0, deadline - time.monotonic()))
            runs[run["dag_run_id"]] = {
                "state": run["state"],
                "note": run.get("note"),
                "conf": run.get("conf"),
                "task_instances": self.task_instances(run["dag_run_id"]),
            }
        return {
            "run_id": run_id,
            "state": night["state"],
            "task_instances": self.task_instances(run_id, dag_id=FLEET_DAG_ID),
            "runs": runs,
        }

    # -- processes --
    def check_alive(self) -> None:
        dead = {name: s.proc.returncode for name, s in self.processes.items() if s.proc.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow processes exited: {dead}\n{self.tails()}")

    def tails(self, lines: int = 40) -> str:
        """The last lines of every process log, for a failure message."""
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"===== {path.name} (last {len(text)} lines) =====\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop every process group (workers first), drop the database, flush the Redis DB, remove the password."""
        for name in (*self.worker_processes, "triggerer", "scheduler", "dag-processor", "api-server"):
            if name in self.processes:
                self.processes[name].stop()
        self.passwords_file.unlink(missing_ok=True)
        try:
            drop_database(self.pg_admin_url, self.db_name)
        finally:
            release_redis_db(self.redis_url, self.redis_db)


def stack_env(
    base_dir: Path,
    pg_admin_url: str,
    db_name: str,
    redis_url: str,
    redis_db: int,
    api_port: int,
    cognigy_conn: str,
    mlflow_url: str,
) -> dict[str, str]:
    """Full environment of every Airflow process: shared settings + this machine's endpoints + local-only keys."""
    home = base_dir / "airflow-home"
    api_url = f"http://127.0.0.1:{api_port}"
    return {
        **os.environ,
        **AIRFLOW_SETTINGS,
        # endpoints (deployment.ENDPOINT_KEYS)
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(pg_admin_url, db_name),
        "AIRFLOW__CELERY__BROKER_URL": f"{redis_url}/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": database_url(pg_admin_url, db_name, driver="db+postgresql+psycopg2"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        "AIRFLOW_CONN_COGNIGY_DEFAULT": cognigy_conn,
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "host": mlflow_url}),
        "COGNIGY_RETRAIN_STATE_DIR": str(base_dir / "pipeline-state"),
        "PYTHONPATH": str(ROOT),
        # this machine only (deployment.LOCAL_ONLY_KEYS)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(url="", proc=proc, log_path=log_path, argv=argv)


def start_stack(
    base_dir: Path,
    cognigy_conn: str,
    mlflow_url: str,
    *,
    pg_admin_url: str,
    redis_url: str,
    timeout: float = 240,
    extra_env: dict[str, str] | None = None,
    workers: Sequence[Worker] = (),
    local_settings: str | None = None,
) -> AirflowStack:
    """Fresh database + Redis DB on the given servers, `airflow db migrate`, then the five components; returns
    once all are healthy. pg_admin_url: `postgresql://user@host:port/db` of a database to run CREATE DATABASE
    from; redis_url: `redis://host:port` (no DB index). `workers`: these Celery workers (each with folders of its
    own, see `Worker`) instead of the one `celery-worker`; `local_settings`: the text of
    `$AIRFLOW_HOME/config/airflow_local_settings.py` (cluster policies) for every process."""
    base_dir.mkdir(parents=True, exist_ok=True)
    db_name = create_database(pg_admin_url)
    try:
        redis_db = claim_redis_db(redis_url)
    except Exception:
        drop_database(pg_admin_url, db_name)
        raise
    api_port = free_port()
    base_env = stack_env(base_dir, pg_admin_url, db_name, redis_url, redis_db, api_port, cognigy_conn, mlflow_url)
    env = {**base_env, **(extra_env or {})}
    password = secrets.token_urlsafe(18)
    api_url = f"http://127.0.0.1:{api_port}"
    stack = AirflowStack(base_dir, env, api_url, db_name, redis_db, pg_admin_url, redis_url, password)
    try:
        stack.home.mkdir(parents=True, exist_ok=True)
        stack.state_dir.mkdir(parents=True, exist_ok=True)
        if local_settings is not None:
            (stack.home / "config").mkdir(exist_ok=True)
            (stack.home / "config" / "airflow_local_settings.py").write_text(local_settings)
        _write_private(stack.passwords_file, json.dumps({ADMIN_USER: password}))
        migrate_log = stack.log_dir / "db-migrate.log"
        migrate_log.parent.mkdir(parents=True, exist_ok=True)
        with open(migrate_log, "wb") as log:
            subprocess.run([airflow_bin(), "db", "migrate"], env=env, cwd=ROOT, stdout=log,
                           stderr=subprocess.STDOUT, check=True, timeout=300)  # fmt: skip
        for name, args in COMPONENTS.items():
            if name == "celery-worker" and workers:
                continue
            extra = ["--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"] if name == "api-server" else []
            stack.processes[name] = _spawn(name, [airflow_bin(), *args, *extra], env, stack.log_dir)
        for worker in workers:
            dirs = stack.workers[worker.name] = worker.dirs(base_dir)
            for folder in dirs.values():
                folder.mkdir(parents=True, exist_ok=True)
            argv, worker_env = [airflow_bin(), *worker.argv()], worker.env(env, base_dir)
            stack.processes[worker.process_name] = _spawn(worker.process_name, argv, worker_env, stack.log_dir,
                                                          cwd=dirs["cwd"])  # fmt: skip
        stack.processes["api-server"].url = stack.api_url
        ensure_tenant_pool(env)  # while they boot: the pool every Cognigy-calling task runs in (docs/operations.md)
        _wait_healthy(stack, timeout)
    except BaseException:
        stack.stop()
        raise
    return stack


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def _wait_healthy(stack: AirflowStack, timeout: float) -> None:
    """api-server answers, scheduler/triggerer/dag-processor heartbeat, and every Celery worker said `ready`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            health = requests.get(f"{stack.api_url}/api/v2/monitor/health", timeout=5).json()
            last = health
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            components_ok = all((health.get(p) or {}).get("status") == "healthy" for p in parts)
        except (requests.RequestException, ValueError) as exc:
            last, components_ok = exc, False
        logs = [stack.processes[name].log_path.read_text(errors="replace") for name in stack.worker_processes]
        if components_ok and all(" ready." in log for log in logs):
            return
        time.sleep(1)
    raise TimeoutError(f"Airflow stack not healthy within {timeout}s (last health: {last})\n{stack.tails()}")


# --- by hand -------------------------------------------------------------------------------------------------
def external_servers(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(PostgreSQL admin URL, Redis URL) from COGNIGY_STACK_PG_URL / COGNIGY_STACK_REDIS_URL, or None: start our
    own. Both or neither: half of a deployment on the machine's servers is no test of anything."""
    environ = os.environ if environ is None else environ
    pg_url, redis_url = environ.get(PG_URL_ENV, ""), environ.get(REDIS_URL_ENV, "")
    if bool(pg_url) != bool(redis_url):
        raise ValueError(f"set both {PG_URL_ENV} and {REDIS_URL_ENV}, or neither (servers of our own)")
    return (pg_url, redis_url.rstrip("/")) if pg_url else None


def main() -> int:
    from devtools.airflow_env import cognigy_conn
    from devtools.servers import start_emulator, start_mlflow
    from devtools.services import own_services

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "distributed"))
    parser.add_argument("--training-seconds", type=float, default=8)
    parser.add_argument("--run", action="store_true", help="trigger one fast run, print its outcome, stop")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `finally` below on `kill` too
    base = Path(args.state_dir).resolve()
    external = external_servers()
    services = contextlib.ExitStack()
    emulator = start_emulator(base / "emulator")
    mlflow = stack = None
    try:
        emulator.knobs(training_seconds=args.training_seconds)
        mlflow = start_mlflow(base / "mlflow")
        started = time.monotonic()
        if external is None:
            postgres, redis_server = services.enter_context(own_services(base / "services"))
            pg_admin_url, redis_url = postgres.url, redis_server.url
            print(f"PostgreSQL {postgres.version} {postgres.url}, Redis {redis_server.version} {redis_server.url}: "
                  f"our own, stopped at the end (logs in {base / 'services'})", flush=True)  # fmt: skip
        else:
            pg_admin_url, redis_url = external
        stack = start_stack(
            base / "airflow", cognigy_conn(emulator), mlflow.url, pg_admin_url=pg_admin_url, redis_url=redis_url
        )
        print(f"Airflow UI/API  {stack.api_url}  (user {ADMIN_USER}, password in {stack.passwords_file})")
        print(f"MLflow          {mlflow.url}\nCognigy emulator {emulator.url}\nprocess logs    {stack.log_dir}")
        print(f"database {stack.db_name} (dropped at stop), Redis DB {stack.redis_db}; ready in "
              f"{time.monotonic() - started:.0f}s", flush=True)  # fmt: skip
        stack.wait_for_dag()
        if not args.run:
            print("Ctrl-C stops everything.", flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0
        stack.unpause()
        run_id = stack.trigger(FAST_CONF)
        run = stack.wait_for_run(run_id)
        print(f"run {run_id}: {run['state']} in {_seconds(run):.0f}s")
        return 0 if run["state"] == "success" else 1
    finally:
        try:
            if stack is not None:
                stack.stop()
        finally:
            services.close()  # our PostgreSQL and Redis, after the stack that used them
            if mlflow is not None:
                mlflow.stop()
            emulator.stop()


def _seconds(run: dict) -> float:
    from datetime import datetime

    start, end = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


if __name__ == "__main__":
    raise SystemExit(main())
