"""Durable outbox for MLflow syncs: when MLflow is down, the record waits on disk instead of being lost.

One entry per ``run_key``: ``<dir>/<slug>-<hash>.json`` plus a private copy of the payload's artifacts in
``<dir>/<slug>-<hash>.<token>.artifacts/`` (the task's temporary files are gone by the time MLflow is
back). Entries are written with temp file + fsync + ``os.replace`` + directory fsync, so a crash leaves
either the old entry or the new one. A second :meth:`Outbox.put` for the same key replaces the first.

:meth:`Outbox.resync` pushes every entry with :func:`include.records.mlflow_tracking.sync` (idempotent: it finds
the run by its run key) and removes an entry only if it was not replaced meanwhile.

Leases: one entry is never pushed by two processes at once. Whoever pushes an entry holds its lease
``<dir>/<slug>-<hash>.lease`` ({owner, kind, host, pid, pid start time, expires}), taken and dropped under the
directory's ``flock``. :meth:`Outbox.put` takes the lease for its caller (the retrain's own ``mlflow_sync``
task, which pushes right after) and keeps it until :meth:`Outbox.done` or :meth:`Outbox.release`; it waits
for a resync that holds the lease to finish, and takes over a lease of an earlier try of the task (tries
of one task run one after another). :meth:`Outbox.resync` skips an entry whose lease another process holds
and takes the lease for its own push. A lease is void once it expires (``lease_seconds``, default 900 s
or ``$COGNIGY_OUTBOX_LEASE_SECONDS``) or, on the same host, once its process has ended, so a task that died
or deferred never blocks the resync for long. The lease must outlast one MLflow push (client timeout
times retries).

In an object store (the outbox's folder is a store path, see :mod:`include.state.state_store`: ``mlflow_outbox`` under
``COGNIGY_RETRAIN_STATE_URI=s3://...``) there is no file lock and no rename: an entry and each artifact copy is
one PUT (``<stem>.json``, ``<stem>.<token>.artifacts/<n>-<name>``), and a lease is a series of generations
``<stem>.lease/<generation>``, each created exclusively (a conditional PUT): whoever creates the next generation
after a void one holds the lease, and its holder marks it released. A push downloads the artifacts first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from include.records.mlflow_tracking import MlflowAuth, SyncPayload, SyncResult, sync
from include.records.redaction import redact_text
from include.state import state_store
from include.state.durable import fsync_dir

log = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
DEFAULT_LEASE_SECONDS = 900.0
LEASE_POLL_SECONDS = 0.2
LeaseKind = Literal["task", "resync"]


class Outbox:
    def __init__(self, dir: str | Path | Any, *, lease_seconds: float | None = None) -> None:
        """`dir`: a local folder (str or Path) or a state-store path (an ObjectStoragePath; see `include.state`)."""
        self.dir = Path(dir) if isinstance(dir, str | os.PathLike) else dir
        self._local = state_store.is_local(self.dir)
        state_store.ensure_dir(self.dir)
        if lease_seconds is None:
            lease_seconds = float(os.environ.get("COGNIGY_OUTBOX_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))
        if not lease_seconds > 0:
            raise ValueError("lease_seconds must be positive")
        self.lease_seconds = lease_seconds
        self._owner = uuid.uuid4().hex  # this instance: its own leases never block it

    # ------------------------------------------------------------------------------------ public API

    def put(self, payload: SyncPayload) -> Path:
        """Store ``payload`` (and copies of its artifacts) durably; return the entry's path."""
        stem = self._stem(payload.run_key)
        self._claim(stem, "task", wait=True)  # the caller pushes next; no resync may push it meanwhile
        artifacts_dir = self.dir / f"{stem}.{uuid.uuid4().hex[:12]}.artifacts"
        try:
            state_store.ensure_dir(artifacts_dir)
            copied: dict[str, str] = {}
            for index, (name, source) in enumerate(sorted(payload.artifacts.items())):
                origin = state_store.path_of(source)  # a run folder's file, local or in the state store
                target = artifacts_dir / f"{index:03d}-{origin.name}"
                state_store.copy(origin, target)  # whole or absent; fsynced locally
                copied[name] = str(target)
            if self._local:
                fsync_dir(artifacts_dir)
            entry = self.dir / f"{stem}.json"
            with self._lock():  # a no-op in an object store, where the entry is one PUT
                state_store.write_text(entry, replace(payload, artifacts=copied).to_json())
                self._remove_artifact_dirs(stem, keep=artifacts_dir)
        except BaseException:
            state_store.delete_tree(artifacts_dir)
            self._release(stem)
            raise
        return entry

    def pending(self) -> list[SyncPayload]:
        """The stored payloads, oldest first."""
        return [payload for _, payload, _ in self._entries()]

    def done(self, run_key: str) -> None:
        """Forget the entry of ``run_key`` (no error if there is none)."""
        stem = self._stem(run_key)
        if not self._local:
            state_store.delete(self.dir / f"{stem}.json")
            self._remove_artifact_dirs(stem)
            self._drop_store_leases(stem)
            return
        with self._lock():
            (self.dir / f"{stem}.json").unlink(missing_ok=True)
            self._remove_artifact_dirs(stem)
            lease = self._read_lease(stem)
            if lease is not None and (lease.get("owner") == self._owner or not _lease_live(lease)):
                self._lease_path(stem).unlink(missing_ok=True)
            fsync_dir(self.dir)

    def release(self, run_key: str) -> None:
        """Give up this instance's lease on ``run_key`` (the entry stays): e.g. when the task defers the push
        to the resync DAG, which may then take it at once."""
        self._release(self._stem(run_key))

    def in_flight(self) -> list[str]:
        """Run keys of entries another process holds a live lease on (being pushed right now)."""
        busy = []
        for entry, payload, _ in self._entries():
            lease = self._read_lease(entry.stem)
            if lease is not None and lease.get("owner") != self._owner and _lease_live(lease):
                busy.append(payload.run_key)
        return busy

    def resync(
        self,
        tracking_uri: str,
        auth: MlflowAuth | None = None,
        on_synced: Callable[[SyncPayload, SyncResult], None] | None = None,
    ) -> list[SyncResult]:
        """Sync every pending payload, oldest first; remove those that succeeded, keep the others.

        ``on_synced(payload, result)`` runs after each successful push and before its entry is removed
        (e.g. to audit it); if it raises, the entry stays and the error propagates.
        """
        results: list[SyncResult] = []
        secrets = auth.secret_values() if auth else []
        for entry, listed, _ in self._entries():
            stem = entry.stem
            if not self._claim(stem, "resync", wait=False):
                log.info("outbox: %s is being pushed by another process; skipped", listed.run_key)
                continue
            try:
                # Read again under the lease: the entry may have been pushed and removed, or replaced, meanwhile.
                identity = self._identity(entry)
                try:
                    payload = SyncPayload.from_json(state_store.read_text(entry))
                except (FileNotFoundError, ValueError, TypeError):
                    continue
                try:
                    with state_store.local_files(payload.artifacts) as files:  # MLflow logs local files
                        result = sync(replace(payload, artifacts=files), tracking_uri, auth=auth)
                except Exception as exc:  # keep it; the next resync tries again
                    log.warning("outbox: sync of %s failed, kept: %s", payload.run_key, redact_text(str(exc), secrets))
                    continue
                results.append(result)
                if on_synced is not None:
                    on_synced(payload, result)
                with self._lock():
                    if identity is not None and self._identity(entry) == identity:  # not replaced meanwhile
                        state_store.delete(entry)
                        self._remove_artifact_dirs(stem)
                        if self._local:
                            fsync_dir(self.dir)
            finally:
                self._release(stem)
        return results

    # ------------------------------------------------------------------------------------- internals

    @staticmethod
    def _stem(run_key: str) -> str:
        digest = hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:16]
        return f"{_SLUG.sub('_', run_key)[:80]}-{digest}"

    def _entries(self) -> list[tuple[Any, SyncPayload, Any]]:
        found = []
        if self._local:
            listed = list(self.dir.glob("*.json"))
        else:
            listed = [self.dir / n for n in state_store.list_names(self.dir) if n.endswith(".json") and n[0] != "."]
        for entry in listed:
            identity = self._identity(entry)
            try:
                payload = SyncPayload.from_json(state_store.read_text(entry))
            except FileNotFoundError:
                continue  # removed by a concurrent resync
            except (ValueError, TypeError) as exc:
                log.error("outbox: %s is unreadable and stays for inspection: %s", entry.name, exc)
                continue
            found.append((entry, payload, identity))
        found.sort(key=lambda item: (state_store.modified(item[0]), item[0].name))
        return found

    def _identity(self, entry: Any) -> Any:
        """What tells an entry from its replacement: (inode, mtime) locally, the content's hash in a store."""
        if self._local:
            return _identity(entry)
        try:
            return state_store.sha256(state_store.read_bytes(entry))
        except FileNotFoundError:
            return None

    # --- leases ------------------------------------------------------------------------------------------

    def _lease_path(self, stem: str) -> Path:
        return self.dir / f"{stem}.lease"

    def _read_lease(self, stem: str) -> dict[str, Any] | None:
        if not self._local:
            return self._store_lease(stem)[1]
        try:
            lease = json.loads(self._lease_path(stem).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # torn by a crash: void
            return {}
        return lease if isinstance(lease, dict) else {}

    def _claim(self, stem: str, kind: LeaseKind, *, wait: bool) -> bool:
        """Take the lease of ``stem`` for this instance. A live lease of another owner blocks, except that a
        task takes over an earlier try's lease. With ``wait`` poll until it is free (bounded by its expiry)."""
        while True:
            if not self._local:
                if self._claim_in_store(stem, kind):
                    return True
                if not wait:
                    return False
                time.sleep(LEASE_POLL_SECONDS)
                continue
            with self._lock():
                lease = self._read_lease(stem)
                held = (
                    lease is not None
                    and lease.get("owner") != self._owner
                    and _lease_live(lease)
                    and not (kind == "task" and lease.get("kind") == "task")
                )
                if not held:
                    self._write_lease(stem, kind)
                    return True
            if not wait:
                return False
            time.sleep(LEASE_POLL_SECONDS)

    def _lease_record(self, kind: LeaseKind) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "owner": self._owner,
            "kind": kind,
            "host": _host_id(),
            "pid": pid,
            "pid_start": _process_start(pid),
            "expires": time.time() + self.lease_seconds,
        }

    def _write_lease(self, stem: str, kind: LeaseKind) -> None:
        lease = self._lease_record(kind)
        tmp = self.dir / f".tmp-lease-{stem}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(lease), encoding="utf-8")
        os.replace(tmp, self._lease_path(stem))

    def _release(self, stem: str) -> None:
        if not self._local:
            generation, lease = self._store_lease(stem)
            if lease is not None and lease.get("owner") == self._owner:
                released = {**lease, "released": True}
                state_store.write_json(self._store_lease_folder(stem) / f"{generation:010d}", released)
            return
        with self._lock():
            lease = self._read_lease(stem)
            if lease is not None and lease.get("owner") == self._owner:
                self._lease_path(stem).unlink(missing_ok=True)

    # --- leases in an object store: generations created exclusively ------------------------------------
    def _store_lease_folder(self, stem: str) -> Any:
        return self.dir / f"{stem}.lease"

    def _store_lease(self, stem: str) -> tuple[int, dict[str, Any] | None]:
        """(newest generation, its record): (0, None) without a lease; a torn record reads as {} (void)."""
        folder = self._store_lease_folder(stem)
        generations = [int(n) for n in state_store.list_names(folder) if n.isdigit()]
        if not generations:
            return 0, None
        newest = max(generations)
        try:
            record = state_store.read_json(folder / f"{newest:010d}", {})
        except ValueError:
            record = {}
        return newest, record if isinstance(record, dict) else {}

    def _claim_in_store(self, stem: str, kind: LeaseKind) -> bool:
        """One attempt: take the next generation unless a live lease of another owner blocks."""
        folder = self._store_lease_folder(stem)
        generation, lease = self._store_lease(stem)
        if lease is not None and lease.get("owner") == self._owner and _lease_live(lease):
            state_store.write_json(folder / f"{generation:010d}", self._lease_record(kind))  # ours: renew
            return True
        if lease is not None and _lease_live(lease) and not (kind == "task" and lease.get("kind") == "task"):
            return False
        record = json.dumps(self._lease_record(kind)).encode()
        if not state_store.create_exclusive(folder / f"{generation + 1:010d}", record):
            return False  # another process took this generation first
        for name in state_store.list_names(folder):  # only the newest generation matters
            if name.isdigit() and int(name) <= generation:
                state_store.delete(folder / name)
        return True

    def _drop_store_leases(self, stem: str) -> None:
        """After `done`: remove this instance's lease and void ones (never another process's live lease)."""
        folder = self._store_lease_folder(stem)
        for name in state_store.list_names(folder):
            if not name.isdigit():
                continue
            try:
                record = state_store.read_json(folder / name, {})
            except ValueError:
                record = {}
            if not isinstance(record, dict) or record.get("owner") == self._owner or not _lease_live(record):
                state_store.delete(folder / name)

    def _remove_artifact_dirs(self, stem: str, keep: Any = None) -> None:
        if not self._local:
            for name in state_store.list_names(self.dir):
                if name.startswith(f"{stem}.") and name.endswith(".artifacts") and (keep is None or name != keep.name):
                    state_store.delete_tree(self.dir / name)
            return
        for path in self.dir.glob(f"{glob_escape(stem)}.*.artifacts"):
            if path != keep:
                shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if not self._local:  # an object store has no lock: leases (created exclusively) keep pushes apart
            yield
            return
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _lease_live(lease: dict[str, Any]) -> bool:
    """Not released, not expired, and (when it was taken on this host) its process still runs."""
    if lease.get("released"):
        return False
    expires = lease.get("expires")
    if not isinstance(expires, int | float) or expires <= time.time():
        return False
    if lease.get("host") == _host_id() and isinstance(lease.get("pid"), int):
        start = _process_start(lease["pid"])
        if start is None or (lease.get("pid_start") is not None and start != lease["pid_start"]):
            return False  # the process ended (or its pid now belongs to another process)
    return True


@cache
def _host_id() -> str:
    """This host and pid namespace: a lease's pid can only be checked where it means the same process."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.endswith("/pid") else Path(source).read_text().strip())
        except OSError:
            parts.append("?")
    return "|".join(parts)


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None if it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: fall back to "does the pid exist"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) > 19 and fields[0] == "Z":  # a zombie has ended
        return None
    return fields[19] if len(fields) > 19 else "?"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
