"""The audit trail in a database: one append-only table, the same records and hash chain as ``include.records.audit``.

Workers on several hosts share no disk, and ``flock`` is not reliable between hosts, so a deployment keeps its
audit trail in PostgreSQL (SQLite for ``make run`` and single-host installs). Each row holds one record, exactly
the bytes the JSON-lines file would hold on that line (``record``: the canonical JSON of
:func:`include.records.audit.canonical_json`, same fields, same ``redact``, same ``seq``/``prev_hash``/``hash``
rules), plus copies of ``seq``, ``ts``, ``event``, ``dag_id``, ``run_id``, ``prev_hash`` and ``hash`` in columns
for queries.
``export`` writes the ``record`` column in ``seq`` order, one per line: ``include.records.audit.verify`` accepts
that file.

Appends are serialised by the database, so concurrent writers on different hosts leave no gap and no fork:

- PostgreSQL: one transaction takes ``pg_advisory_xact_lock`` (a key derived from the table name), reads the last
  row, inserts the next one and commits (the lock ends with the transaction). The writer role needs INSERT and
  SELECT only. A ``BEFORE INSERT`` trigger takes the same lock and refuses a row that does not continue the chain
  (``seq`` = last + 1, ``prev_hash`` = last ``hash``), so even a writer that skips this module cannot fork or gap
  it; ``seq`` is the primary key and ``prev_hash`` is unique besides.
- SQLite: the transaction starts with ``BEGIN IMMEDIATE`` (the database's write lock), WAL journal,
  ``synchronous=FULL``; triggers refuse UPDATE, DELETE and a row that does not continue the chain.

Append-only: on PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE, even for the table's owner, unless the
transaction sets the maintenance flag (``SET LOCAL cognigy_audit.maintenance = 'on'``); grants (a writer role with
INSERT + SELECT only) are in docs/audit-database.md. :func:`ensure_schema` (``init`` on the CLI) creates the table
and the triggers; the first append creates them when the table is missing and the role may.

:meth:`DatabaseAuditLog.verify` has the file's semantics: it reads the rows in ``seq`` order and names the first
edited, deleted or reordered one (``first_bad_line`` is its position, which is its line in the export), and also a
row whose query columns disagree with its record.

CLI (the URL defaults to ``$COGNIGY_RETRAIN_AUDIT_URL``; leave the password out of it and use ``PGPASSWORD`` or
``~/.pgpass`` so it does not show in the process list)::

    python -m include.records.audit_db init   [--url URL]         # create the table and triggers (as the owner)
    python -m include.records.audit_db verify [--url URL]         # exit 0 intact, 1 broken, 2 no table/database
    python -m include.records.audit_db export [--url URL] [--output FILE]  # JSON lines, byte-for-byte the file's format
    python -m include.records.audit_db show   [--url URL] [--event E] [--run-id R] [--where KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from include.records.audit import (
    GENESIS_HASH,
    AuditKey,
    AuditLogCorrupt,
    ChainCheck,
    VerifyResult,
    add_key_arguments,
    as_key,
    canonical_json,
    clean_fields,
    filter_records,
    next_record,
    report,
    sealed,
    show_filters,
    verify_inputs,
)
from include.records.redaction import redact_text

TABLE = "cognigy_retrain_audit"
MAINTENANCE_SETTING = "cognigy_audit.maintenance"  # SET LOCAL cognigy_audit.maintenance = 'on' (PostgreSQL)
SQLITE_BUSY_SECONDS = 120.0  # how long a SQLite writer waits for the write lock
APPEND_ATTEMPTS = 5  # a unique-key conflict (a writer outside this module) is retried on a fresh head
# pg_advisory_xact_lock key: the first 8 bytes of SHA-256 of the table name, as a signed 64-bit integer.
LOCK_KEY = int.from_bytes(hashlib.sha256(TABLE.encode()).digest()[:8], "big", signed=True)
# Columns copied from the record for queries; verify checks they still agree with it.
COPIED = ("seq", "ts", "event", "dag_id", "run_id", "prev_hash", "hash")
# libpq parameters an Airflow connection's extra may carry into the URL (others are Airflow's own).
LIBPQ_EXTRAS = frozenset(
    {
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "options",
        "application_name",
        "connect_timeout",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
    }
)

metadata = sa.MetaData()
records = sa.Table(
    TABLE,
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("dag_id", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("record", sa.Text, nullable=False),  # the canonical JSON line, without its newline
    sa.UniqueConstraint("prev_hash", name=f"{TABLE}_one_successor"),  # no fork: one record per predecessor
    sa.UniqueConstraint("hash", name=f"{TABLE}_hash_key"),
    sa.Index(f"{TABLE}_run_id", "run_id"),
    sa.Index(f"{TABLE}_event", "event"),
)

_PG_GUARD = f"""
CREATE OR REPLACE FUNCTION {TABLE}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('{MAINTENANCE_SETTING}', true), '') <> 'on' THEN
        RAISE EXCEPTION 'the audit table %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'maintenance only: as the owner, SET LOCAL {MAINTENANCE_SETTING} = ''on'' in the transaction';
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$
"""
_PG_LINK = f"""
CREATE OR REPLACE FUNCTION {TABLE}_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_seq bigint;
    last_hash text;
BEGIN
    IF coalesce(current_setting('{MAINTENANCE_SETTING}', true), '') = 'on' THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock({LOCK_KEY});
    EXECUTE format('SELECT seq, hash FROM %I.%I ORDER BY seq DESC LIMIT 1', TG_TABLE_SCHEMA, TG_TABLE_NAME)
        INTO last_seq, last_hash;
    IF NEW.seq IS DISTINCT FROM coalesce(last_seq, 0) + 1
            OR NEW.prev_hash IS DISTINCT FROM coalesce(last_hash, '{GENESIS_HASH}') THEN
        RAISE EXCEPTION 'audit record seq % does not continue the chain (last seq %)', NEW.seq, coalesce(last_seq, 0)
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$
"""
_PG_TRIGGERS = (
    ("append_only", "BEFORE UPDATE OR DELETE", "FOR EACH ROW", "guard"),
    ("no_truncate", "BEFORE TRUNCATE", "FOR EACH STATEMENT", "guard"),
    ("contiguous", "BEFORE INSERT", "FOR EACH ROW", "link"),
)
_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'the audit table {TABLE} is append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'the audit table {TABLE} is append-only: DELETE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_contiguous BEFORE INSERT ON {TABLE}
    WHEN NEW.seq IS NOT coalesce((SELECT max(seq) FROM {TABLE}), 0) + 1
      OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM {TABLE} ORDER BY seq DESC LIMIT 1), '{GENESIS_HASH}')
    BEGIN SELECT RAISE(ABORT, 'audit record does not continue the chain'); END""",
)

_ENGINES: dict[tuple[str, int], Engine] = {}
_READY: set[tuple[str, int]] = set()
_LOCK = threading.Lock()


class AuditDatabaseError(RuntimeError):
    """The audit database is missing, unsupported or refused the append."""


def normalize_url(url: str | URL) -> URL:
    """A SQLAlchemy URL; ``postgres://`` (Airflow's spelling) becomes ``postgresql://``. PostgreSQL or SQLite only."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise AuditDatabaseError(f"audit database {backend!r} is not supported: use PostgreSQL or SQLite")
    return parsed


def url_from_connection(
    conn_type: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> URL:
    """The SQLAlchemy URL of an Airflow connection's fields (the plugins side looks the connection up).

    ``postgres``/``postgresql``: host, port, login, password, database = the connection's *schema*, plus libpq
    parameters from the extra (``sslmode``, ``sslrootcert``, ``options``, ...). ``sqlite``: the host is the file.
    An extra ``sqlalchemy_url`` overrides all of it (password still from the connection when the URL has none).
    """
    extra = dict(extra or {})
    if extra.get("sqlalchemy_url"):
        url = normalize_url(str(extra["sqlalchemy_url"]))
        return url.set(password=password) if password and url.password is None else url
    kind = (conn_type or "").lower()
    if kind in ("postgres", "postgresql"):
        query = {k: str(v) for k, v in extra.items() if k in LIBPQ_EXTRAS and v not in (None, "")}
        return URL.create(
            "postgresql+psycopg2",
            username=login or None,
            password=password or None,
            host=host or None,
            port=int(port) if port else None,
            database=schema or None,
            query=query,
        )
    if kind == "sqlite":
        if not host:
            raise AuditDatabaseError("an sqlite connection needs the database file as its host")
        return URL.create("sqlite", database=host)
    raise AuditDatabaseError(f"connection type {conn_type!r} cannot hold the audit trail: use postgres or sqlite")


def _key(url: URL) -> tuple[str, int]:
    return url.render_as_string(hide_password=False), os.getpid()


def engine_for(url: str | URL) -> Engine:
    """One engine per URL and process (a forked worker gets its own). No pool: a connection per transaction."""
    parsed = normalize_url(url)
    key = _key(parsed)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _create_engine(parsed)
        return engine


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, poolclass=NullPool)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_SECONDS})

    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not BEGIN on its own: `_begin` does
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA synchronous=FULL")  # a committed record survives a power cut
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Readers take a snapshot; everything else takes the write lock up front, so two appends never both
        # read the same head and one of them fail on upgrade.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("audit_read") else "BEGIN IMMEDIATE")

    return engine


def _reading(engine: Engine) -> Connection:
    """A connection whose transactions only read (SQLite: a deferred BEGIN, no write lock)."""
    return engine.connect().execution_options(audit_read=True)


def has_table(engine: Engine) -> bool:
    with _reading(engine) as conn:
        return sa.inspect(conn).has_table(TABLE)


def ensure_schema(engine: Engine) -> None:
    """Create the table, its indexes and the append-only triggers if missing (idempotent, safe to race)."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # not in a transaction: the journal mode is a property of the file
        try:
            _sqlite_wal(raw.driver_connection)
        finally:
            raw.close()
        with engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            for ddl in _SQLITE_TRIGGERS:
                conn.exec_driver_sql(ddl)
        return
    with engine.begin() as conn:  # PostgreSQL DDL is transactional: all of it or nothing
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        metadata.create_all(conn, checkfirst=True)
        _run_verbatim(conn, _PG_GUARD)  # PL/pgSQL with `%` placeholders: no parameter interpolation
        _run_verbatim(conn, _PG_LINK)
        for name, when, level, function in _PG_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TABLE}_{name} ON {TABLE}")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {TABLE}_{name} {when} ON {TABLE} {level} EXECUTE FUNCTION {TABLE}_{function}()"
            )


def _sqlite_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL. SQLite does not call its busy handler for this switch: when processes race to create
    the schema it fails at once with "database is locked", so it is asked again until SQLITE_BUSY_SECONDS pass."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _run_verbatim(conn: Connection, sql: str) -> None:
    """Execute ``sql`` on the connection's DBAPI cursor without parameters (psycopg2 leaves ``%`` alone then)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The query columns a record's row must carry (text columns hold only text; other values become NULL)."""
    out: dict[str, Any] = {}
    for name in COPIED:
        value = record.get(name)
        if name == "seq":
            out[name] = value if isinstance(value, int) and not isinstance(value, bool) else None
        else:
            out[name] = value if isinstance(value, str) else None
    return out


class DatabaseAuditLog:
    """Append-only, hash-chained audit table at a SQLAlchemy ``url`` (PostgreSQL or SQLite).

    Same interface as :class:`include.records.audit.AuditLog`: ``append(event, **fields) -> record``, ``verify()``,
    ``read(**filters)``; plus ``export(binary_file)``.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        known_secrets: Iterable[str | None] = (),
        key: AuditKey | str | bytes | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self._key = as_key(key)  # HMAC key of the chain (include.records.audit): never stored in the database
        self._known_secrets = [s for s in known_secrets if s]
        if self.url.password:
            self._known_secrets.append(self.url.password)

    def __repr__(self) -> str:
        return f"DatabaseAuditLog({self.url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        return engine_for(self.url)

    def ensure_schema(self) -> None:
        ensure_schema(self.engine)
        _READY.add(_key(self.url))

    def _ready(self) -> None:
        key = _key(self.url)
        if key in _READY:
            return
        if not has_table(self.engine):
            try:
                ensure_schema(self.engine)
            except DBAPIError as exc:
                raise AuditDatabaseError(
                    f"the audit table {TABLE} does not exist in {self!r} and this role cannot create it "
                    f"({self._mask(exc)}): run `python -m include.records.audit_db init` as the table's owner"
                ) from None
        _READY.add(key)

    def _mask(self, exc: BaseException) -> str:
        return redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self._known_secrets)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Insert one record and return it (as stored: redacted, with seq, ts and hashes).

        Field values under secret-looking keys become ``"***"`` and known secret values are masked; values that
        JSON cannot encode are stored as ``str(value)``. The same rules, and the same bytes, as the file.
        """
        clean = clean_fields(event, fields, self._known_secrets)
        self._ready()
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
                    record = next_record(self._head(conn, self._key), event, clean, self._key)
                    conn.execute(records.insert().values(**_columns(record), record=canonical_json(record)))
                return record
            except IntegrityError as exc:  # only a writer that bypasses the lock gets here
                if attempt == APPEND_ATTEMPTS:
                    raise AuditDatabaseError(f"could not append to the audit table: {self._mask(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _head(conn: Connection, key: AuditKey | None = None) -> dict[str, Any] | None:
        """The last record, checked like the file's last line: a new record is never chained to a bad one."""
        row = conn.execute(
            sa.select(records.c.seq, records.c.hash, records.c.record).order_by(records.c.seq.desc()).limit(1)
        ).first()
        if row is None:
            return None
        try:
            record = json.loads(row.record)
            if not sealed(record, key) or record["seq"] != row.seq or record["hash"] != row.hash:
                raise ValueError("hash or seq mismatch")
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditLogCorrupt(f"the last audit row (seq {row.seq}) is not valid ({exc}); run `verify`") from exc
        return record

    def rows(self) -> Iterator[Any]:
        """All rows in ``seq`` order, streamed from one snapshot."""
        with _reading(self.engine) as conn, conn.begin():
            yield from _select_all(conn)

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Parsed records in ``seq`` order; rows that are not JSON objects are skipped (``verify`` reports them)."""
        for row in self.rows():
            try:
                record = json.loads(row.record)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def read(self, **filters: Any) -> list[dict[str, Any]]:
        """Records whose fields equal every given filter (None ignored; a list/tuple/set matches any member)."""
        return filter_records(self.iter_records(), **filters)

    def export(self, out: IO[bytes]) -> int:
        """Write every row's record as one JSON line, in ``seq`` order, as stored (a broken row too: the reviewer's
        ``python -m include.records.audit verify`` names it). Returns the number of lines."""
        count = 0
        for row in self.rows():
            out.write(row.record.encode("utf-8") + b"\n")
            count += 1
        out.flush()
        return count

    def exists(self) -> bool:
        """Whether the table is there (a SQLite file that does not exist is not created by asking)."""
        database = self.url.database or ""
        on_disk = database not in ("", ":memory:") and not database.startswith("file:")
        if self.url.get_backend_name() == "sqlite" and on_disk and not Path(database).expanduser().exists():
            return False
        return has_table(self.engine)

    def verify(
        self, keys: Iterable[AuditKey | str | bytes | None] | None = None, anchors: Iterable[Mapping[str, Any]] = ()
    ) -> VerifyResult:
        """Check the whole chain in ``seq`` order (HMACs with ``keys``, default this log's key; the ``anchors``);
        ``first_bad_line`` is the row's position (its export line)."""
        if not self.exists():
            return VerifyResult(False, 0, None, None, f"the table {TABLE} does not exist in {self!r}")
        keys = [self._key] if keys is None else keys
        with _reading(self.engine) as conn, conn.begin():
            return verify_rows(_select_all(conn), ChainCheck(keys, anchors))


def _select_all(conn: Connection) -> Iterator[Any]:
    return conn.execution_options(stream_results=True, yield_per=500).execute(
        sa.select(records).order_by(records.c.seq)
    )


def verify_rows(rows: Iterable[Any], check: ChainCheck | None = None) -> VerifyResult:
    """:func:`include.records.audit.verify`'s checks over rows (attributes ``record`` and the copied columns)."""
    check = check or ChainCheck()
    good, prev_hash = 0, GENESIS_HASH
    remaining = iter(rows)

    def broken(position: int, seq: Any, reason: str) -> VerifyResult:
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        return VerifyResult(
            False, good, seq, position, reason, prev_hash if good else None, **check.fields(good, False)
        )

    for position, row in enumerate(remaining, start=1):
        try:
            record = json.loads(row.record)
        except (ValueError, TypeError):
            return broken(position, row.seq, "not valid JSON")
        if not isinstance(record, dict) or not {"seq", "hash", "prev_hash", "event"} <= record.keys():
            return broken(position, row.seq, "not an audit record (fields missing)")
        seq = record["seq"]
        if problem := check.problem(record):
            return broken(position, seq, problem)
        expected = good + 1
        if seq != expected:
            if isinstance(seq, int) and seq > expected and not _seq_later(remaining, expected):
                why = f"seq {seq} but expected {expected}: record(s) deleted"
            else:
                why = f"seq {seq} but expected {expected}: record(s) reordered or duplicated"
            return broken(position, seq, why)
        if record["prev_hash"] != prev_hash:
            return broken(position, seq, "prev_hash does not match the previous record: chain broken")
        wrong = [name for name, value in _columns(record).items() if getattr(row, name) != value]
        if wrong:
            return broken(position, seq, f"column(s) {', '.join(wrong)} disagree with the record: the row was edited")
        check.accept(record)
        good, prev_hash = good + 1, record["hash"]
    return VerifyResult(True, good, head_hash=prev_hash if good else None, **check.fields(good, True))


def _seq_later(rows: Iterator[Any], seq: int) -> bool:
    """Does a later row hold the record with ``seq`` (then it moved rather than vanished)?"""
    for row in rows:
        try:
            record = json.loads(row.record)
        except (ValueError, TypeError):
            continue
        if isinstance(record, dict) and record.get("seq") == seq:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.records.audit_db", description="Audit trail in a database")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "init": "create the table and its append-only triggers (run as the table's owner)",
        "verify": "check the hash chain (HMAC with the audit key) and the anchors",
        "export": "write the records as JSON lines (what include.records.audit verify reads)",
        "show": "print matching records as JSON lines",
    }
    subs = {name: sub.add_parser(name, help=text) for name, text in commands.items()}
    for p in subs.values():
        p.add_argument("--url", default=os.environ.get("COGNIGY_RETRAIN_AUDIT_URL") or None,
                       help="SQLAlchemy URL (default: $COGNIGY_RETRAIN_AUDIT_URL)")  # fmt: skip
    add_key_arguments(subs["verify"])
    subs["export"].add_argument("--output", "-o", help="file to write (default: standard output)")
    subs["show"].add_argument("--event")
    subs["show"].add_argument("--run-id", dest="run_id")
    subs["show"].add_argument("--dag-id", dest="dag_id")
    subs["show"].add_argument("--where", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no database: pass --url or set COGNIGY_RETRAIN_AUDIT_URL")
    secrets: list[str | None] = []
    try:
        secrets.append(make_url(args.url).password)
        return _run(parser, args, DatabaseAuditLog(args.url))
    except (AuditDatabaseError, SQLAlchemyError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ERROR: {redact_text(message, [s for s in secrets if s])}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, log: DatabaseAuditLog) -> int:
    if args.command == "init":
        log.ensure_schema()
        print(f"OK: table {TABLE} and its append-only triggers are in place ({log!r})")
        return 0
    if not log.exists():
        print(f"MISSING: the table {TABLE} does not exist in {log!r}", file=sys.stderr)
        return 2
    if args.command == "verify":
        keys, anchors = verify_inputs(args)
        result = log.verify(keys, anchors)
        if result.ok:
            ok_line = f"OK: {result.records} records, chain intact (head {result.head_hash})"
            return report(result, ok_line, bool(keys), args.require_keyed)
        seq = result.first_bad_seq if result.first_bad_seq is not None else "?"
        print(f"BROKEN at row {result.first_bad_line} (seq {seq}): {result.reason}")
        return 1
    if args.command == "export":
        if args.output:
            with open(args.output, "wb") as out:
                count = log.export(out)
            print(f"exported {count} records to {args.output}", file=sys.stderr)
        else:
            log.export(sys.stdout.buffer)
        return 0
    filters = show_filters(args, parser)
    for record in log.read(**filters):
        print(json.dumps(record, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
