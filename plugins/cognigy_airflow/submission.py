"""Exactly-once training starts: the pieces `operators._reattach` / `_start_once` put together.

At most one Cognigy training per DAG run, target and purpose ("submit", "promote", "rollback.N"), whatever
happens. Four windows, four fences:

1. Task-list lag. Cognigy writes the training task before it answers the POST (the answer carries its `_id`),
   but the tenant's task list (`GET /tasks`) may show it later. A try that does not know whether an earlier
   POST happened looks for it until `settle_seconds` have passed on the SERVER's clock since that POST's
   intent: `TASK_LIST_LAG_SECONDS` (the allowed list lag), plus the connection's request timeout when the
   POST got no HTTP answer at all (a request the server had not yet processed when the client gave up may be
   processed up to that much later). Only then does it conclude that nothing was started. Should another
   training of the flow/locale show up anyway, it is reported as `concurrent_training_seen` and never
   cancelled: nothing proves it is ours. The model is judged only once no training of the flow/locale runs
   (`include.cognigy.proof`).
2. Clock skew. The intent's time is the server's `Date` header of the task-list GET made just before the
   POST, so a training's `createdAt` is compared with the server's own clock (margin:
   `model.SERVER_CLOCK_MARGIN_SECONDS`, for the platform's nodes disagreeing and `Date`'s 1 s resolution).
3. Two tries at once (a zombie worker). The whole check-then-POST section runs under a lease: a folder
   `<run folder>/<purpose>.lease/` next to the task's state file (in the state store, `include.state.state_store`,
   which every worker shares: a local folder, or an object store such as S3). Each holder is one object named by
   a generation number, created exclusively (`state_store.create_exclusive`: `os.link` locally, a conditional
   PUT with `If-None-Match: *` on S3; fails if it exists), holding the owner (host,
   boot id, pid namespace, pid, the pid's start time, thread) and an expiry (`LEASE_SECONDS` after the last
   renewal, renewed while reconciling). A live holder blocks; a released, expired (expiry +
   `LEASE_CLOCK_MARGIN_SECONDS`, for workers' clocks) or dead one (same host, its process is gone) is taken
   over by creating the next generation, which only one contender can do. A holder checks it is still the
   newest generation right before it POSTs.
4. A POST that provably did nothing (4xx, 429, never connected, the request budget's store unreachable) is marked
   so that the retry does not wait.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.cognigy.errors import (
    AmbiguousSubmission,
    AuthenticationError,
    BadRequest,
    CognigyError,
    NotFound,
    PermissionDenied,
    RateLimited,
    TlsError,
    TransientError,
)
from include.cognigy.model import JobStatus, created_epoch
from include.cognigy.rate_limit import BudgetStoreUnavailable
from include.state import state_store

log = logging.getLogger(__name__)

TASK_LIST_LAG_SECONDS = float(os.environ.get("COGNIGY_TASK_LIST_LAG_SECONDS", "60"))
LEASE_SECONDS = 300.0  # a lease lives this long after its last renewal (covers an import between check and POST)
LEASE_CLOCK_MARGIN_SECONDS = 15.0  # another worker's clock may be this far off: expiry counts only after it
LEASE_WAIT_SECONDS = LEASE_SECONDS + LEASE_CLOCK_MARGIN_SECONDS + 30.0  # how long a try waits for a live holder
DEFAULT_REQUEST_TIMEOUT = 30.0


class LeaseBusy(CognigyError):
    """Another try of this task holds the submission lease and is alive: this try must not start anything."""


class LeaseLost(CognigyError):
    """This try's lease expired and another try took it over: it must not POST any more."""


# --- the server's clock and the lag bound ------------------------------------------------------------
def server_time(listing: Any) -> float | None:
    """The server's clock (epoch seconds) read from the answer that produced `listing`, if it said."""
    value = getattr(listing, "server_time", None)
    return float(value) if value is not None else None


def request_timeout(client: Any) -> float:
    config = getattr(client, "config", None)
    return float(getattr(config, "timeout_seconds", None) or DEFAULT_REQUEST_TIMEOUT)


def settle_seconds(client: Any, wait: float, *, answered: bool) -> float:
    """How long after a POST's intent (server clock) a training it started is certainly in the task list."""
    bound = TASK_LIST_LAG_SECONDS + (0.0 if answered else request_timeout(client))
    return max(float(wait), bound)


def provably_not_started(exc: BaseException) -> bool:
    """The POST's error proves Cognigy did nothing: refused (4xx, 429), TLS failure, or never connected."""
    if isinstance(exc, AmbiguousSubmission):
        return False
    if isinstance(exc, RateLimited | AuthenticationError | PermissionDenied | NotFound | BadRequest | TlsError):
        return True
    if isinstance(exc, BudgetStoreUnavailable):  # the request budget refused before anything was sent
        return True
    return type(exc) is TransientError and exc.status is None  # the transport's "cannot connect"


def earliest(jobs: list[JobStatus]) -> JobStatus:
    return sorted(jobs, key=lambda j: (created_epoch(j) or float("inf"), j.job_id))[0]


# --- other trainings of the same flow/locale ------------------------------------------------------------
def report_others(prefix: str, ours: str, others: list[JobStatus]) -> None:
    """Log and audit trainings of the flow/locale beside ours. They are never cancelled: nothing proves that
    this run started them (a person, another tool, or a POST of ours whose answer was lost)."""
    for job in others:
        log.warning(
            "concurrent_training_seen: %s follows training %s; training %s (created %s, %s) of the same flow and "
            "locale is not cancelled (it cannot be proven to be ours); the model is judged only once none runs",
            prefix, ours, job.job_id, job.created_at, job.raw_status,
        )  # fmt: skip
    try:
        from airflow.sdk import get_current_context

        from cognigy_airflow.auditing import audit

        context = get_current_context()
        task = context["task"]
        for job in others:
            audit(context, "concurrent_training_seen", getattr(task, "plan", None), getattr(task, "target", None),
                  purpose=prefix, followed_job_id=ours, other_job_id=job.job_id, other_created_at=job.created_at,
                  other_status=job.raw_status)  # fmt: skip
    except Exception as exc:  # no running Airflow task here (e.g. an in-process harness): the log line stands
        log.info("concurrent_training_seen not audited (%s); the caller finds it in the state", exc)


# --- the lease -----------------------------------------------------------------------------------------
def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


@dataclass(frozen=True)
class Owner:
    machine: str
    pid: int
    pid_start: str
    thread: int

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(_machine(), pid, _pid_start(pid), threading.get_ident())

    def alive(self) -> bool | None:
        """True/False when it can be told from here (same machine), None otherwise."""
        if self.machine != _machine():
            return None
        if self.pid == os.getpid():
            return None  # this very process: only the registry of held leases knows (see `_holds`)
        return _pid_start(self.pid) == self.pid_start != ""


def _machine() -> str:
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}|{_read(Path('/proc/sys/kernel/random/boot_id'))}|{pidns}"


def _pid_start(pid: int) -> str:
    """The process's start time (clock ticks since boot): tells a pid reused by another process apart."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    fields = stat.rsplit(")", 1)[-1].split() if stat else []
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # gone, or dead and not yet reaped
        return ""
    return fields[19]


@dataclass
class Lease:
    """One holder's generation of a submission lease (see the module docstring)."""

    folder: Any  # a state-store path (include.state.state_store)
    generation: int
    token: str
    owner: Owner
    ttl: float = LEASE_SECONDS
    continuous: bool = False  # True when handed on from `_reattach` to `_start_once` in the same try
    released: bool = field(default=False)

    @property
    def path(self) -> Any:
        return self.folder / f"{self.generation:010d}"

    def _record(self, *, released: bool = False) -> dict[str, Any]:
        return {
            "token": self.token,
            "owner": self.owner.__dict__,
            "expires_at": time.time() + self.ttl,
            "released": released,
        }

    def held(self) -> bool:
        """Still the newest generation, ours, not released and not expired by our own clock."""
        if self.released or _newest(self.folder) != self.generation:
            return False
        record = _load(self.path)
        return bool(record) and record.get("token") == self.token and float(record["expires_at"]) > time.time()

    def check(self) -> None:
        if not self.held():
            raise LeaseLost(f"submission lease {self.folder} was taken over by another try: not starting anything")

    def renew(self) -> None:
        if self.held():
            _write(self.path, self._record())

    def release(self) -> None:
        with _registry_lock:
            if _registry.get(str(self.folder)) is self:
                del _registry[str(self.folder)]
        if not self.released and _newest(self.folder) == self.generation:
            _write(self.path, self._record(released=True))
        self.released = True


_registry: dict[str, Lease] = {}  # leases this process holds, by folder
_creating: set[str] = set()  # tokens of leases this process is creating right now (not yet in _registry)
_registry_lock = threading.Lock()


def _load(path: Any) -> dict[str, Any]:
    try:
        return json.loads(state_store.read_bytes(path))
    except (OSError, ValueError):
        return {}


def _write(path: Any, record: dict[str, Any]) -> None:
    # atomic: a reader sees the old or the new record, never half of one (only the holder writes its generation)
    state_store.write_bytes(path, json.dumps(record).encode(), durable=False)


def _newest(folder: Any) -> int:
    generations = [int(name) for name in state_store.list_names(folder) if name.isdigit()]
    return max(generations, default=0)


def _holds(record: dict[str, Any], folder: Any) -> bool:
    """Whether the holder named in `record` may still act (it blocks everybody else)."""
    if not record or record.get("released"):
        return False
    if float(record.get("expires_at") or 0) + LEASE_CLOCK_MARGIN_SECONDS < time.time():
        return False  # expired (allowing for the holder's clock)
    owner = Owner(**record["owner"])
    if owner.machine == _machine() and owner.pid == os.getpid():
        with _registry_lock:
            held = _registry.get(str(folder))
            return record.get("token") in _creating or (held is not None and held.token == record.get("token"))
    return owner.alive() is not False


def lease_folder(state: Any, prefix: str) -> Any:
    """`<run folder>/<prefix>.lease`: next to the task's state file (RunState's file copy)."""
    state_file = state_store.path_of(state._file)
    return state_file.parent / f"{prefix}.lease"


def take_lease(folder: Any, *, wait: float | None = None, ttl: float | None = None) -> Lease:
    """The lease of `folder`: this thread's own if it still holds it (continuous), else a new generation once
    no live holder is left. Raises LeaseBusy after `wait` s of a live holder."""
    wait = LEASE_WAIT_SECONDS if wait is None else wait
    ttl = LEASE_SECONDS if ttl is None else ttl
    me = Owner.me()
    with _registry_lock:
        mine = _registry.get(str(folder))
    if mine is not None and mine.owner == me:
        if mine.held():
            mine.continuous = True
            mine.renew()
            return mine
        mine.release()  # ours but expired: start over like anybody else
    state_store.ensure_dir(folder)
    deadline = time.monotonic() + wait
    while True:
        newest = _newest(folder)
        record = _load(folder / f"{newest:010d}") if newest else {}
        if newest and _holds(record, folder):
            if time.monotonic() >= deadline:
                raise LeaseBusy(
                    f"another try holds the submission lease {folder} ({record.get('owner')}, expires "
                    f"{record.get('expires_at')}): not starting a second training; Airflow will retry"
                )
            time.sleep(0.5)
            continue
        lease = Lease(folder, newest + 1, uuid.uuid4().hex, me, ttl)
        with _registry_lock:
            _creating.add(lease.token)  # another thread of this process that reads it meanwhile sees it held
        try:
            # atomic create-exclusive with the content in place (os.link locally, If-None-Match: * on S3)
            if not state_store.create_exclusive(lease.path, json.dumps(lease._record()).encode(), durable=False):
                with _registry_lock:
                    _creating.discard(lease.token)
                continue  # another contender took this generation first: look again
        except BaseException:
            with _registry_lock:
                _creating.discard(lease.token)
            raise
        if newest and not record.get("released"):
            log.warning("took over submission lease %s from %s (expired or dead)", folder, record.get("owner"))
        for name in state_store.list_names(folder):  # keep the folder small: only the last two generations matter
            if name.isdigit() and int(name) < newest:
                with contextlib.suppress(OSError):
                    state_store.delete(folder / name)
        with _registry_lock:
            _registry[str(folder)] = lease
            _creating.discard(lease.token)
        return lease


@atexit.register
def _release_all() -> None:
    """A task process that ends normally (also after an exception) lets its leases go at once."""
    for lease in list(_registry.values()):
        with contextlib.suppress(Exception):
            lease.release()


# --- reconciliation ------------------------------------------------------------------------------------
def other_purposes_jobs(state: Any, prefix: str) -> set[str]:
    """Trainings this run started for its other purposes (submit, promote, earlier rollback rounds), read from
    the state files beside this one: they are never this purpose's training, nor a duplicate of it (a promotion
    training that failed a second before the restore was POSTed is not the restore)."""
    state_file = getattr(state, "_file", None)
    if state_file is None:
        return set()
    folder = state_store.path_of(state_file).parent
    jobs: set[str] = set()
    for name in state_store.list_names(folder):
        if not name.endswith("_state.json"):
            continue
        data = _load(folder / name)
        for key, value in data.items():
            owner = key.rsplit(".", 1)[0]
            if owner == prefix or not value:
                continue
            if key.endswith(".job_id"):
                jobs.add(str(value))
    return jobs


def reconcile(
    client: Any,
    target: Any,
    since: float,
    wait: float,
    *,
    until: float | None = None,
    lease: Lease | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> JobStatus | None:
    """The first training of this flow/locale started at or after `since` (server clock), other than `exclude`:
    looking for `wait` s, and with `until` also until the server's clock (each task-list answer's `Date`) passes
    `until`."""
    deadline = time.monotonic() + wait
    while True:
        listing = client.recent_trainings(target, since)
        found = [j for j in listing if j.job_id not in exclude]
        if found:
            return earliest(found)
        now = server_time(listing) or time.time()
        if time.monotonic() >= deadline and (until is None or now >= until):
            return None
        if lease is not None:
            lease.renew()
        left = max(deadline - time.monotonic(), (until or 0.0) - now)
        time.sleep(min(2.0, max(0.1, left)))


def attached(
    client: Any, target: Any, state: Any, prefix: str, wait: float, lease: Lease
) -> tuple[JobStatus, str] | None:
    """The training this purpose already started (state store, else the task list once it cannot lag any more)."""
    if job_id := state.get(f"{prefix}.job_id"):
        status, via = client.job_status(job_id), "state store"
    else:
        intent = state.get(f"{prefix}.intent_at")
        if intent is None or state.get(f"{prefix}.rejected_at") == intent:
            return None  # nothing was sent, or Cognigy provably refused it
        since = state.get(f"{prefix}.since_server_at")
        latest = state.get(f"{prefix}.intent_server_at")
        if since is None or latest is None:  # an intent kept before the server's clock was: the worker's, widened
            since = latest = float(intent) - LEASE_CLOCK_MARGIN_SECONDS
        answered = state.get(f"{prefix}.answered_at") == intent
        until = float(latest) + settle_seconds(client, wait, answered=answered)
        found = reconcile(
            client, target, float(since), wait, until=until, lease=lease, exclude=other_purposes_jobs(state, prefix)
        )
        if found is None:
            log.info("%s: no training since the intent within the task list's lag bound: one may be started", prefix)
            return None
        state.set(f"{prefix}.job_id", found.job_id)
        status, via = found, "tenant task list"
    return only_one(client, target, state, prefix, status), via


def only_one(client: Any, target: Any, state: Any, prefix: str, status: JobStatus) -> JobStatus:
    """Follow `status`; other trainings of this flow/locale since the purpose's first intent are recorded
    (`<prefix>.others_seen`) and audited once each (`concurrent_training_seen`), never cancelled."""
    since = state.get(f"{prefix}.since_server_at")
    if since is None:
        return status
    mine = other_purposes_jobs(state, prefix) | {status.job_id}
    others = [j for j in client.recent_trainings(target, float(since)) if j.job_id not in mine]
    known = set(state.get(f"{prefix}.others_seen") or [])
    if new := [j for j in others if j.job_id not in known]:
        report_others(prefix, status.job_id, new)
        state.set(f"{prefix}.others_seen", sorted(known | {j.job_id for j in new}))
    return status
