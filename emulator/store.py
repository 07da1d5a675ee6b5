"""Persistent emulator state: one SQLite file in the state dir, one connection guarded by a lock.

Times are stored as epoch seconds (float). JSON columns hold plain dicts/lists. Secrets are never stored:
tokens are kept only as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flows (
    id TEXT PRIMARY KEY, reference_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    project_id TEXT NOT NULL, primary_locale_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS locales (
    id TEXT PRIMARY KEY, reference_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    nlu_language TEXT NOT NULL, project_id TEXT NOT NULL, position INTEGER NOT NULL);
-- one NLU model per (flow, locale); the training-jobs dialect calls it a model with versions
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, locale_id TEXT NOT NULL,
    active_version_id TEXT, intents_revision INTEGER NOT NULL DEFAULT 0, UNIQUE (flow_id, locale_id));
CREATE TABLE IF NOT EXISTS intents (
    flow_id TEXT NOT NULL, locale_id TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
    sentences TEXT NOT NULL, PRIMARY KEY (flow_id, locale_id, name));
CREATE TABLE IF NOT EXISTS versions (
    model_id TEXT NOT NULL, version_id TEXT NOT NULL, task_id TEXT, created_at REAL NOT NULL,
    blob BLOB NOT NULL, feedback TEXT NOT NULL, training_counts TEXT NOT NULL, trained_revision INTEGER,
    metrics TEXT, PRIMARY KEY (model_id, version_id));
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, dialect TEXT NOT NULL, type TEXT NOT NULL, project_id TEXT NOT NULL,
    flow_id TEXT NOT NULL, locale_id TEXT NOT NULL, model_id TEXT NOT NULL, status TEXT NOT NULL,
    parameters TEXT NOT NULL, payload TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    last_changed REAL NOT NULL, duration REAL NOT NULL, deadline REAL, deadline_reason TEXT,
    fail_reason TEXT, version_id TEXT, current_step INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT, request_hash TEXT, created_by TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks (created_at);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_idempotency ON tasks (idempotency_key);
-- Cognigy endpoints: the channels customers talk to; each serves one flow
-- entrypoint: the project id (the live flows) or a snapshot id; locale_id NULL: the flow's primary locale
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, reference_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, channel TEXT NOT NULL,
    flow_id TEXT NOT NULL, project_id TEXT NOT NULL, active INTEGER NOT NULL, url_token TEXT NOT NULL,
    position INTEGER NOT NULL, entrypoint TEXT NOT NULL DEFAULT '', locale_id TEXT);
-- every change of what an endpoint serves (entrypoint, flow or locale; locales resolved, never NULL)
CREATE TABLE IF NOT EXISTS endpoint_history (
    endpoint_id TEXT NOT NULL, at REAL NOT NULL, old_entrypoint TEXT NOT NULL, new_entrypoint TEXT NOT NULL,
    old_flow_id TEXT NOT NULL, new_flow_id TEXT NOT NULL, old_locale_id TEXT NOT NULL, new_locale_id TEXT NOT NULL);
-- snapshots: immutable; per flow and locale the model version that served at creation and the intents
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    hash TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL, task_id TEXT);
CREATE TABLE IF NOT EXISTS snapshot_flows (
    snapshot_id TEXT NOT NULL, id TEXT NOT NULL, reference_id TEXT NOT NULL, name TEXT NOT NULL,
    project_id TEXT NOT NULL, primary_locale_id TEXT NOT NULL, PRIMARY KEY (snapshot_id, id));
CREATE TABLE IF NOT EXISTS snapshot_models (
    snapshot_id TEXT NOT NULL, flow_id TEXT NOT NULL, locale_id TEXT NOT NULL, model_id TEXT NOT NULL,
    version_id TEXT, intents TEXT NOT NULL, PRIMARY KEY (snapshot_id, flow_id, locale_id));
-- serving timeline: one row per period a model version served a flow/locale (until NULL = still serving)
CREATE TABLE IF NOT EXISTS serving (
    flow_id TEXT NOT NULL, locale_id TEXT NOT NULL, model_id TEXT NOT NULL, version_id TEXT NOT NULL,
    task_id TEXT, since REAL NOT NULL, until REAL);
CREATE INDEX IF NOT EXISTS serving_by_flow_locale ON serving (flow_id, locale_id, since);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, audience TEXT NOT NULL, scopes TEXT NOT NULL, expires_at REAL NOT NULL);
"""

TENANT_TABLES = (
    "meta",
    "flows",
    "locales",
    "models",
    "intents",
    "versions",
    "tasks",
    "endpoints",
    "serving",
    "endpoint_history",
    "snapshots",
    "snapshot_flows",
    "snapshot_models",
)
# columns added after the first release: (table, column, declaration) for state dirs created before them
ADDED_COLUMNS = (
    ("endpoints", "entrypoint", "TEXT NOT NULL DEFAULT ''"),
    ("endpoints", "locale_id", "TEXT"),
)
JSON_TASK_COLUMNS = ("parameters", "payload")
OPEN_STATUSES = ("queued", "active", "cancelling")
VERSION_COLUMNS_WITHOUT_BLOB = (
    "model_id, version_id, task_id, created_at, feedback, training_counts, trained_revision, metrics"
)


def _task(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    task = dict(row)
    for column in JSON_TASK_COLUMNS:
        task[column] = json.loads(task[column]) if task[column] is not None else None
    return task


class SnapshotLimitError(ValueError):
    """The project already has as many snapshots as allowed (the message says the limit)."""


def snapshot_limit_detail(project_id: str, count: int, limit: int) -> str:
    return f"Snapshot limit reached: project '{project_id}' has {count} snapshots; at most {limit} per project"


def snapshot_in_use_detail(snapshot_id: str, endpoints: Sequence[Mapping[str, Any]]) -> str:
    named = ", ".join(f"'{e['name']}' ({e['id']})" for e in endpoints)
    return f"Snapshot '{snapshot_id}' cannot be deleted: it is the entrypoint of endpoints {named}"


def contents_hash(contents: Sequence[Mapping[str, Any]]) -> str:
    """sha256 over the canonical JSON of a snapshot's frozen contents (same contents, same hash)."""
    canonical = json.dumps(contents, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self.lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        for table, column, declaration in ADDED_COLUMNS:
            present = {row["name"] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._conn.execute("UPDATE endpoints SET entrypoint = project_id WHERE entrypoint = ''")

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one SQLite transaction (nested calls join the outer one)."""
        with self.lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self.lock:
            return self._conn.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.lock:
            return self._conn.execute(sql, args).fetchall()

    # --- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", key)
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def wipe_tenant_state(self) -> None:
        """Delete everything but the issued tokens (clients keep their credentials across a reset)."""
        with self.transaction() as conn:
            for table in TENANT_TABLES:
                conn.execute(f"DELETE FROM {table}")

    # --- catalog ------------------------------------------------------------------------------------
    def add_flow(self, flow_id: str, reference_id: str, name: str, project_id: str, primary_locale: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO flows VALUES (?, ?, ?, ?, ?)", (flow_id, reference_id, name, project_id, primary_locale)
            )

    def add_locale(self, locale_id: str, reference_id: str, name: str, nlu_language: str, project_id: str) -> None:
        with self.transaction() as conn:
            position = conn.execute("SELECT COUNT(*) FROM locales").fetchone()[0]
            conn.execute(
                "INSERT INTO locales VALUES (?, ?, ?, ?, ?, ?)",
                (locale_id, reference_id, name, nlu_language, project_id, position),
            )

    def get_flow(self, flow_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM flows WHERE id = ?", flow_id)
        return None if row is None else dict(row)

    def get_flow_by_reference(self, reference_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM flows WHERE reference_id = ?", reference_id)
        return None if row is None else dict(row)

    def list_flows(self, project_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all("SELECT * FROM flows WHERE project_id = ? ORDER BY id", project_id)]

    def project_exists(self, project_id: str) -> bool:
        return self._one("SELECT 1 FROM flows WHERE project_id = ?", project_id) is not None

    def remove_flow(self, flow_id: str, now: float) -> None:
        """Delete a flow with its models, intents, versions, serving timeline and endpoints; cancel its open tasks."""
        with self.transaction() as conn:
            models = [r["id"] for r in conn.execute("SELECT id FROM models WHERE flow_id = ?", (flow_id,))]
            for model_id in models:  # versions frozen in a snapshot stay (a snapshot is immutable)
                conn.execute(
                    "DELETE FROM versions WHERE model_id = ? AND NOT EXISTS (SELECT 1 FROM snapshot_models s "
                    "WHERE s.model_id = versions.model_id AND s.version_id = versions.version_id)",
                    (model_id,),
                )
            for table in ("models", "intents", "serving", "endpoints"):
                conn.execute(f"DELETE FROM {table} WHERE flow_id = ?", (flow_id,))
            conn.execute(
                f"UPDATE tasks SET status = 'cancelled', finished_at = ?, last_changed = ? "
                f"WHERE flow_id = ? AND status IN ({', '.join('?' for _ in OPEN_STATUSES)})",
                (now, now, flow_id, *OPEN_STATUSES),
            )
            conn.execute("DELETE FROM flows WHERE id = ?", (flow_id,))

    def locale_by_name(self, project_id: str, name: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM locales WHERE project_id = ? AND name = ? ORDER BY position", project_id, name)
        return None if row is None else dict(row)

    def get_locale(self, locale_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM locales WHERE id = ?", locale_id)
        return None if row is None else dict(row)

    def get_locale_by_reference(self, reference_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM locales WHERE reference_id = ?", reference_id)
        return None if row is None else dict(row)

    def list_locales(self, project_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all("SELECT * FROM locales WHERE project_id = ? ORDER BY position", project_id)]

    # --- endpoints ----------------------------------------------------------------------------------
    def add_endpoint(
        self,
        endpoint_id: str,
        reference_id: str,
        name: str,
        channel: str,
        flow_id: str,
        project_id: str,
        url_token: str,
        active: bool = True,
    ) -> None:
        """A new endpoint serves the project's live flow in the flow's primary locale."""
        with self.transaction() as conn:
            position = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM endpoints").fetchone()[0]
            conn.execute(
                "INSERT INTO endpoints (id, reference_id, name, channel, flow_id, project_id, active, url_token, "
                "position, entrypoint, locale_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    endpoint_id,
                    reference_id,
                    name,
                    channel,
                    flow_id,
                    project_id,
                    int(active),
                    url_token,
                    position,
                    project_id,
                ),
            )

    def list_endpoints(
        self, project_id: str | None = None, flow_id: str | None = None, entrypoint: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = [], []
        for column, value in (("project_id", project_id), ("flow_id", flow_id), ("entrypoint", entrypoint)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(f"SELECT * FROM endpoints {condition} ORDER BY position", *args)
        return [{**dict(r), "active": bool(r["active"])} for r in rows]

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM endpoints WHERE id = ?", endpoint_id)
        return None if row is None else {**dict(row), "active": bool(row["active"])}

    def update_endpoint(
        self,
        endpoint_id: str,
        changes: Mapping[str, Any],
        at: float,
        served: tuple[Sequence[str], Sequence[str]] | None = None,
    ) -> None:
        """Set columns of an endpoint; `served` = ((entrypoint, flow_id, locale_id) before, after) is recorded in
        the endpoint history when what it serves changed."""
        with self.transaction() as conn:
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
                conn.execute(f"UPDATE endpoints SET {assignments} WHERE id = ?", (*values, endpoint_id))
            if served is not None and tuple(served[0]) != tuple(served[1]):
                (old_entry, old_flow, old_locale), (new_entry, new_flow, new_locale) = served
                conn.execute(
                    "INSERT INTO endpoint_history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (endpoint_id, at, old_entry, new_entry, old_flow, new_flow, old_locale, new_locale),
                )

    def endpoint_history(self, endpoint_id: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM endpoint_history WHERE endpoint_id = ? ORDER BY at, rowid", endpoint_id)
        return [dict(r) for r in rows]

    # --- snapshots ----------------------------------------------------------------------------------
    def create_snapshot(
        self,
        snapshot_id: str,
        *,
        project_id: str,
        name: str,
        description: str,
        created_by: str,
        created_at: float,
        limit: int,
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """Freeze every flow of the project: per locale the serving model version (versions are immutable) and
        the intents. Raises SnapshotLimitError when the project already has `limit` snapshots."""
        with self.transaction() as conn:
            count = conn.execute("SELECT COUNT(*) FROM snapshots WHERE project_id = ?", (project_id,)).fetchone()[0]
            if count >= limit:
                raise SnapshotLimitError(snapshot_limit_detail(project_id, count, limit))
            contents = []
            for flow in self.list_flows(project_id):
                models = conn.execute(
                    "SELECT * FROM models WHERE flow_id = ? ORDER BY locale_id", (flow["id"],)
                ).fetchall()
                locales = [
                    {
                        "locale_id": model["locale_id"],
                        "model_id": model["id"],
                        "version_id": model["active_version_id"],
                        "intents": self.intents(flow["id"], model["locale_id"]),
                    }
                    for model in models
                ]
                contents.append({"flow": flow, "locales": locales})
            conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (snapshot_id, project_id, name, description, contents_hash(contents), created_at, created_by, task_id),
            )
            for entry in contents:
                flow = entry["flow"]
                conn.execute(
                    "INSERT INTO snapshot_flows VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        snapshot_id,
                        flow["id"],
                        flow["reference_id"],
                        flow["name"],
                        project_id,
                        flow["primary_locale_id"],
                    ),
                )
                conn.executemany(
                    "INSERT INTO snapshot_models VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            snapshot_id,
                            flow["id"],
                            locale["locale_id"],
                            locale["model_id"],
                            locale["version_id"],
                            json.dumps(locale["intents"]),
                        )
                        for locale in entry["locales"]
                    ],
                )
        snapshot = self.get_snapshot(snapshot_id)
        assert snapshot is not None
        return snapshot

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM snapshots WHERE id = ?", snapshot_id)
        return None if row is None else dict(row)

    def count_snapshots(self, project_id: str) -> int:
        return self._one("SELECT COUNT(*) AS n FROM snapshots WHERE project_id = ?", project_id)["n"]

    def list_snapshots(self, project_id: str, limit: int, skip: int) -> tuple[list[dict[str, Any]], int]:
        """Oldest first."""
        rows = self._all(
            "SELECT * FROM snapshots WHERE project_id = ? ORDER BY created_at, rowid LIMIT ? OFFSET ?",
            project_id,
            limit,
            skip,
        )
        return [dict(r) for r in rows], self.count_snapshots(project_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self.transaction() as conn:
            for table, column in (("snapshot_models", "snapshot_id"), ("snapshot_flows", "snapshot_id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (snapshot_id,))
            conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))

    def snapshot_flow(self, snapshot_id: str, flow_id: str) -> dict[str, Any] | None:
        """A flow frozen in the snapshot, found by its `_id` or its `referenceId`."""
        row = self._one(
            "SELECT id, reference_id, name, project_id, primary_locale_id FROM snapshot_flows "
            "WHERE snapshot_id = ? AND (id = ? OR reference_id = ?)",
            snapshot_id,
            flow_id,
            flow_id,
        )
        return None if row is None else dict(row)

    def snapshot_model(self, snapshot_id: str, flow_id: str, locale_id: str) -> dict[str, Any] | None:
        """{model_id, version_id (None: the flow was not trained in that locale), intents} frozen in a snapshot."""
        row = self._one(
            "SELECT model_id, version_id, intents FROM snapshot_models "
            "WHERE snapshot_id = ? AND flow_id = ? AND locale_id = ?",
            snapshot_id,
            flow_id,
            locale_id,
        )
        return None if row is None else {**dict(row), "intents": json.loads(row["intents"])}

    # --- models (one per flow + locale) -------------------------------------------------------------
    def add_model(self, model_id: str, flow_id: str, locale_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO models (id, flow_id, locale_id) VALUES (?, ?, ?)", (model_id, flow_id, locale_id))

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM models WHERE id = ?", model_id)
        return None if row is None else dict(row)

    def model_for(self, flow_id: str, locale_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM models WHERE flow_id = ? AND locale_id = ?", flow_id, locale_id)
        return None if row is None else dict(row)

    def set_active_version(self, model_id: str, version_id: str, at: float | None = None) -> None:
        """Make `version_id` serve the model and record the change in the serving timeline (at `at`)."""
        at = time.time() if at is None else at
        with self.transaction() as conn:
            model = conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
            if model is None or model["active_version_id"] == version_id:
                return
            conn.execute("UPDATE models SET active_version_id = ? WHERE id = ?", (version_id, model_id))
            conn.execute("UPDATE serving SET until = ? WHERE model_id = ? AND until IS NULL", (at, model_id))
            version = conn.execute(
                "SELECT task_id FROM versions WHERE model_id = ? AND version_id = ?", (model_id, version_id)
            ).fetchone()
            task_id = None if version is None else version["task_id"]
            conn.execute(
                "INSERT INTO serving VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (model["flow_id"], model["locale_id"], model_id, version_id, task_id, at),
            )

    def serving_timeline(self, flow_id: str, locale_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT task_id, version_id, since, until FROM serving WHERE flow_id = ? AND locale_id = ? "
            "ORDER BY since, rowid",
            flow_id,
            locale_id,
        )
        return [dict(r) for r in rows]

    # --- intents ------------------------------------------------------------------------------------
    def intents(self, flow_id: str, locale_id: str) -> dict[str, list[str]]:
        rows = self._all(
            "SELECT name, sentences FROM intents WHERE flow_id = ? AND locale_id = ? ORDER BY position",
            flow_id,
            locale_id,
        )
        return {row["name"]: json.loads(row["sentences"]) for row in rows}

    def replace_intents(self, flow_id: str, locale_id: str, intents: Mapping[str, Sequence[str]]) -> None:
        """Make the locale's intents exactly `intents` (in that order) and mark the training out of date."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM intents WHERE flow_id = ? AND locale_id = ?", (flow_id, locale_id))
            conn.executemany(
                "INSERT INTO intents VALUES (?, ?, ?, ?, ?)",
                [
                    (flow_id, locale_id, name, position, json.dumps(list(sentences)))
                    for position, (name, sentences) in enumerate(intents.items())
                ],
            )
            conn.execute(
                "UPDATE models SET intents_revision = intents_revision + 1 WHERE flow_id = ? AND locale_id = ?",
                (flow_id, locale_id),
            )

    # --- versions -----------------------------------------------------------------------------------
    def add_version(
        self,
        model_id: str,
        version_id: str,
        task_id: str | None,
        created_at: float,
        blob: bytes,
        feedback: dict[str, Any],
        training_counts: dict[str, int],
        trained_revision: int | None,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    model_id,
                    version_id,
                    task_id,
                    created_at,
                    blob,
                    json.dumps(feedback),
                    json.dumps(training_counts),
                    trained_revision,
                ),
            )

    def get_version(self, model_id: str, version_id: str, with_blob: bool = False) -> dict[str, Any] | None:
        columns = "*" if with_blob else VERSION_COLUMNS_WITHOUT_BLOB
        row = self._one(f"SELECT {columns} FROM versions WHERE model_id = ? AND version_id = ?", model_id, version_id)
        if row is None:
            return None
        version = dict(row)
        for column in ("feedback", "training_counts", "metrics"):
            version[column] = json.loads(version[column]) if version[column] is not None else None
        return version

    def list_versions(self, model_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT version_id, created_at, task_id FROM versions WHERE model_id = ? ORDER BY created_at", model_id
        )
        return [dict(r) for r in rows]

    def set_version_metrics(self, model_id: str, version_id: str, metrics: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE versions SET metrics = ? WHERE model_id = ? AND version_id = ?",
                (json.dumps(metrics), model_id, version_id),
            )

    # --- tasks --------------------------------------------------------------------------------------
    def add_task(self, task: Mapping[str, Any]) -> None:
        row = dict(task)
        for column in JSON_TASK_COLUMNS:
            row[column] = json.dumps(row[column]) if row.get(column) is not None else None
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO tasks ({columns}) VALUES ({marks})", tuple(row.values()))

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        return _task(self._one("SELECT * FROM tasks WHERE id = ?", task_id))

    def task_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return _task(self._one("SELECT * FROM tasks WHERE idempotency_key = ?", key))

    def update_task(self, task_id: str, only_if_status: Sequence[str] | None = None, **fields: Any) -> bool:
        """Update a task; with `only_if_status` only when its status is one of those. True when updated."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE tasks SET {assignments} WHERE id = ?"
        args: list[Any] = [*fields.values(), task_id]
        if only_if_status:
            sql += f" AND status IN ({', '.join('?' for _ in only_if_status)})"
            args.extend(only_if_status)
        with self.transaction() as conn:
            return conn.execute(sql, args).rowcount == 1

    def open_tasks(self) -> list[dict[str, Any]]:
        rows = self._all(
            f"SELECT * FROM tasks WHERE status IN ({', '.join('?' for _ in OPEN_STATUSES)}) ORDER BY created_at",
            *OPEN_STATUSES,
        )
        return [t for t in map(_task, rows) if t is not None]

    def list_tasks(
        self,
        dialect: str,
        project_id: str | None = None,
        task_type: str | None = None,
        model_id: str | None = None,
        newest_first: bool = True,
        limit: int | None = None,
        skip: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        where = ["dialect = ?"]
        args: list[Any] = [dialect]
        for column, value in (("project_id", project_id), ("type", task_type), ("model_id", model_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        condition = " AND ".join(where)
        order = "DESC" if newest_first else "ASC"
        total = self._one(f"SELECT COUNT(*) AS n FROM tasks WHERE {condition}", *args)["n"]
        sql = f"SELECT * FROM tasks WHERE {condition} ORDER BY created_at {order}, rowid {order}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, skip]
        return [t for t in map(_task, self._all(sql, *args)) if t is not None], total

    def task_status_counts(self) -> dict[str, int]:
        rows = self._all("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status ORDER BY status")
        return {row["status"]: row["n"] for row in rows}

    def training_tasks(self) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT t.dialect, t.flow_id, t.locale_id, t.model_id, l.name AS locale_name "
            "FROM tasks t LEFT JOIN locales l ON l.id = t.locale_id WHERE t.type = 'trainIntents'"
        )
        return [dict(r) for r in rows]

    # --- tokens -------------------------------------------------------------------------------------
    def add_token(self, token_hash: str, audience: str, scopes: Sequence[str], expires_at: float) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)", (token_hash, audience, " ".join(scopes), expires_at))

    def get_token(self, token_hash: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM tokens WHERE token_hash = ?", token_hash)
        return None if row is None else dict(row)

    def purge_tokens(self, now: float) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM tokens WHERE expires_at < ?", (now,))
