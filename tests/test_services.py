"""The distributed stack runs on a PostgreSQL and a Redis of the suite's own (devtools/services.py): pip-installed
binaries on free loopback ports, data in temporary folders, every process stopped at the end. The machine's
own servers on 5432/6379 (this machine kind has both) are neither needed nor touched: no test here connects to
them, and no process of the stack or of the suite holds a connection to those ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg2
import pytest
import redis

from devtools.distributed import AirflowStack, external_servers
from devtools.services import (
    DEFAULT_PORTS,
    UNPRIVILEGED_USER,
    OwnServices,
    own_services,
    postgres_install,
    redis_server_binary,
)

pytest_plugins = ["tests.fixtures_airflow_stack"]


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _connections(proc: psutil.Process) -> list:
    """The process's inet connections; none once it has ended (task processes come and go while we look)."""
    try:
        return proc.net_connections(kind="inet")
    except (psutil.NoSuchProcess, FileNotFoundError):
        return []


def _listening(pid: int) -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port) for proc in _tree(pid) for c in _connections(proc) if c.status == psutil.CONN_LISTEN
    }


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_stack_uses_the_suites_own_servers(airflow_stack: AirflowStack, stack_services: OwnServices) -> None:
    postgres, redis_server = stack_services.postgres, stack_services.redis
    assert {postgres.port, redis_server.port}.isdisjoint(DEFAULT_PORTS)
    env = airflow_stack.env
    for key, port in (
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", postgres.port),
        ("AIRFLOW__CELERY__RESULT_BACKEND", postgres.port),
        ("AIRFLOW__CELERY__BROKER_URL", redis_server.port),
    ):
        address = urlsplit(env[key])
        assert (address.hostname, address.port) == ("127.0.0.1", port), (key, env[key])

    # Each port is served by the process the suite started, from the pip-installed binaries, on loopback only.
    for server, binary in ((postgres, postgres_install() / "bin" / "postgres"), (redis_server, redis_server_binary())):
        assert _listening(server.proc.pid) == {("127.0.0.1", server.port)}, server.argv
        exe = Path(psutil.Process(server.proc.pid).exe())
        assert exe.name == binary.name and exe.read_bytes() == binary.read_bytes(), exe
        assert not str(exe).startswith("/usr/"), exe  # not the machine's (Debian's) server
        assert server.data_dir is not None and server.data_dir.is_dir()
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as an existing unprivileged user
        assert {p.username() for p in _tree(postgres.proc.pid)} == {UNPRIVILEGED_USER}

    # The servers see the stack: the Airflow processes are connected to its database and to its Redis DB.
    with psycopg2.connect(postgres.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (airflow_stack.db_name,))
        assert cur.fetchone()[0] > 0
    conn.close()
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert any(int(c["db"]) == airflow_stack.redis_db for c in client.client_list()), client.client_list()
    finally:
        client.close()


def test_nothing_connects_to_the_machines_servers(airflow_stack: AirflowStack, stack_services: OwnServices) -> None:
    """No process of the stack, of its servers or of this test session holds a connection to 5432 or 6379."""
    pids = [s.proc.pid for s in (*airflow_stack.processes.values(), stack_services.postgres, stack_services.redis)]
    processes = [proc for pid in pids for proc in _tree(pid)] + _tree(os.getpid())
    remote = {(proc.pid, c.raddr.port) for proc in processes for c in _connections(proc) if c.raddr}
    assert not {(pid, port) for pid, port in remote if port in DEFAULT_PORTS}, remote
    assert any(port == stack_services.postgres.port for _, port in remote)
    assert any(port == stack_services.redis.port for _, port in remote)


def test_make_distributed_starts_its_own_servers_unless_both_urls_are_given() -> None:
    assert external_servers({}) is None
    urls = {"COGNIGY_STACK_PG_URL": "postgresql://u@db:5432/postgres", "COGNIGY_STACK_REDIS_URL": "redis://r:6379/"}
    assert external_servers(urls) == ("postgresql://u@db:5432/postgres", "redis://r:6379")
    with pytest.raises(ValueError, match="both"):
        external_servers({"COGNIGY_STACK_PG_URL": urls["COGNIGY_STACK_PG_URL"]})


def test_servers_start_on_free_ports_and_leave_nothing_behind(tmp_path: Path) -> None:
    """A second pair besides the session's: both answer, then stopping ends every process and removes the data."""
    with own_services(tmp_path) as (postgres, redis_server):
        assert postgres.version.startswith("16."), postgres.version
        assert redis_server.version.startswith("6.2."), redis_server.version
        servers = (postgres, redis_server)
        assert len({s.port for s in servers} | DEFAULT_PORTS) == 4
        processes = [proc for s in servers for proc in _tree(s.proc.pid)]
        data_dirs = [s.data_dir for s in servers]
        assert all(d is not None and d.is_dir() and tmp_path not in d.parents for d in data_dirs)
        with psycopg2.connect(postgres.url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE probe (x int); INSERT INTO probe VALUES (1); SELECT x FROM probe")
            assert cur.fetchone() == (1,)
        conn.close()
        assert redis.Redis.from_url(redis_server.url).ping()
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], processes
    assert not any(_port_open(s.port) for s in servers)
    assert not any(d.exists() for d in data_dirs)
    assert (tmp_path / "postgres.log").exists() and (tmp_path / "redis.log").exists()
