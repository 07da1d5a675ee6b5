"""Durable outbox for MLflow syncs: when MLflow is down, the record waits on disk instead of being lost.

One entry per ``run_key``: ``<dir>/<slug>-<hash>.json`` plus a private copy of the payload's artifacts in
``<dir>/<slug>-<hash>.<token>.artifacts/`` (the task's temporary files are gone by the time MLflow is
back). Entries are written with temp file + fsync + ``os.replace`` + directory fsync, so a crash leaves
either the old entry or the new one. A second :meth:`Outbox.put` for the same key replaces the first.

:meth:`Outbox.resync` pushes every entry with :func:`include.mlflow_sync.sync` (idempotent: it finds
the run by its run key) and removes an entry only if it was not replaced meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from include.durable import fsync_dir, fsync_file
from include.mlflow_sync import MlflowAuth, SyncPayload, SyncResult, sync
from include.redaction import redact_text

log = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


class Outbox:
    def __init__(self, dir: str | Path) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------ public API

    def put(self, payload: SyncPayload) -> Path:
        """Store ``payload`` (and copies of its artifacts) durably; return the entry's path."""
        stem = self._stem(payload.run_key)
        artifacts_dir = self.dir / f"{stem}.{uuid.uuid4().hex[:12]}.artifacts"
        artifacts_dir.mkdir()
        try:
            copied: dict[str, str] = {}
            for index, (name, source) in enumerate(sorted(payload.artifacts.items())):
                target = artifacts_dir / f"{index:03d}-{Path(source).name}"
                shutil.copyfile(source, target)
                fsync_file(target)
                copied[name] = str(target)
            fsync_dir(artifacts_dir)
            stored = replace(payload, artifacts=copied)
            entry = self.dir / f"{stem}.json"
            tmp = self.dir / f".tmp-{stem}-{uuid.uuid4().hex[:8]}"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(stored.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            with self._lock():
                os.replace(tmp, entry)
                fsync_dir(self.dir)
                self._remove_artifact_dirs(stem, keep=artifacts_dir)
        except BaseException:
            shutil.rmtree(artifacts_dir, ignore_errors=True)
            raise
        return entry

    def pending(self) -> list[SyncPayload]:
        """The stored payloads, oldest first."""
        return [payload for _, payload, _ in self._entries()]

    def done(self, run_key: str) -> None:
        """Forget the entry of ``run_key`` (no error if there is none)."""
        stem = self._stem(run_key)
        with self._lock():
            (self.dir / f"{stem}.json").unlink(missing_ok=True)
            self._remove_artifact_dirs(stem)
            fsync_dir(self.dir)

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
        for entry, payload, identity in self._entries():
            try:
                result = sync(payload, tracking_uri, auth=auth)
            except Exception as exc:  # keep it; the next resync tries again
                log.warning("outbox: sync of %s failed, kept: %s", payload.run_key, redact_text(str(exc), secrets))
                continue
            results.append(result)
            if on_synced is not None:
                on_synced(payload, result)
            with self._lock():
                if _identity(entry) == identity:  # not replaced by a newer put meanwhile
                    entry.unlink()
                    self._remove_artifact_dirs(entry.stem)
                    fsync_dir(self.dir)
        return results

    # ------------------------------------------------------------------------------------- internals

    @staticmethod
    def _stem(run_key: str) -> str:
        digest = hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:16]
        return f"{_SLUG.sub('_', run_key)[:80]}-{digest}"

    def _entries(self) -> list[tuple[Path, SyncPayload, tuple[int, int] | None]]:
        found = []
        for entry in self.dir.glob("*.json"):
            identity = _identity(entry)
            try:
                payload = SyncPayload.from_json(entry.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue  # removed by a concurrent resync
            except (ValueError, TypeError) as exc:
                log.error("outbox: %s is unreadable and stays for inspection: %s", entry.name, exc)
                continue
            found.append((entry, payload, identity))
        found.sort(key=lambda item: (item[0].stat().st_mtime_ns if item[0].exists() else 0, item[0].name))
        return found

    def _remove_artifact_dirs(self, stem: str, keep: Path | None = None) -> None:
        for path in self.dir.glob(f"{glob_escape(stem)}.*.artifacts"):
            if path != keep:
                shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
