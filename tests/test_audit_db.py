"""Audit trail in a database (include/records/audit_db.py): same bytes and chain as the file, one unbroken chain under
concurrent writers, verify names edited/deleted/reordered rows, append-only triggers and grants, CLI, configuration.

Every test that takes ``db_url`` runs on SQLite and on PostgreSQL 16. The PostgreSQL server is the suite's own
(``stack_services`` of tests/fixtures_airflow_stack.py: pgserver's binaries on a free loopback port, data in a
temporary folder): the machine's server on 5432, if any, is neither needed nor touched. Each test gets a fresh
database in it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from devtools.servers import ROOT
from devtools.services import OwnServices
from include import settings
from include.records import audit, audit_db
from include.records.audit import AuditLog, AuditLogCorrupt
from include.records.audit_db import TABLE, DatabaseAuditLog, url_from_connection

pytest_plugins = ["tests.fixtures_airflow_stack"]

FIXED_TS = "2026-11-27T10:00:00.000Z"


# ---------------------------------------------------------------------------------------------- fixtures


@contextlib.contextmanager
def _admin(admin_url: str) -> Iterator[object]:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@pytest.fixture
def pg_url(stack_services: OwnServices) -> Iterator[str]:
    """A fresh database in the suite's own PostgreSQL, as a SQLAlchemy URL; dropped after the test."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    admin = stack_services.postgres.url
    with _admin(admin) as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield make_url(admin).set(drivername="postgresql+psycopg2", database=name).render_as_string(hide_password=False)
    audit_db._ENGINES.clear()  # NullPool: nothing stays connected, but forget the engines
    with _admin(admin) as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'audit.db'}"
    return request.getfixturevalue("pg_url")


class _Opaque:
    def __str__(self) -> str:
        return "<opaque>"


def _fill(log: DatabaseAuditLog | AuditLog) -> list[dict]:
    return [
        log.append(audit.RETRAIN_INITIATED, run_id="r1", dag_id="retrain", requested_by="alice"),
        log.append(audit.ROLLBACK_POINT_CAPTURED, run_id="r1", export_id="exp-1"),
        log.append(audit.TRAINING_SUBMITTED, run_id="r1", task_id="t-1"),
        log.append(audit.RETRAIN_COMPLETED, run_id="r1", task_id="t-1"),
        log.append(audit.RETRAIN_INITIATED, run_id="r2", dag_id="retrain", requested_by="bob"),
    ]


def _tamper(url: str, *statements: str) -> None:
    """Run statements past the append-only guard: PostgreSQL's maintenance flag; SQLite: drop its triggers."""
    engine = audit_db.engine_for(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL {audit_db.MAINTENANCE_SETTING} = 'on'")
        else:
            for name in ("no_update", "no_delete", "contiguous"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TABLE}_{name}")
        for statement in statements:
            conn.exec_driver_sql(statement)


def _export_and_verify(log: DatabaseAuditLog, path: Path) -> audit.VerifyResult:
    with open(path, "wb") as out:
        log.export(out)
    return audit.verify(path)


# ------------------------------------------------------------------------------------- records and chain


def test_records_are_byte_for_byte_what_the_file_holds(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "utc_timestamp", lambda: FIXED_TS)
    file_log = AuditLog(tmp_path / "audit.jsonl", known_secrets=["sk-live-123456"])
    db_log = DatabaseAuditLog(db_url, known_secrets=["sk-live-123456"])
    odd = {
        "api_key": "sk-live-123456",  # secret-looking key: masked
        "note": "token sk-live-123456 used; Authorization: Bearer abcdef123456",  # known secret in text
        "metrics": {"f1": 0.9134, "p_value": float("nan"), "ratio": float("inf")},  # not strict JSON
        "when": _Opaque(),  # not JSON at all: str(value)
        "utterance": 'Größe? 你好 🙂 \u2028 \x00 "quoted"',
        "target": {"project_id": "p", "locales": ["de-DE", "fr-FR"]},
        "run_id": 42,  # not text: the run_id column is NULL, the record keeps the number
    }
    for event, fields in [(audit.RETRAIN_INITIATED, odd), ("operator_note", {}), (audit.RETRAIN_FAILED, {"x": 1})]:
        assert db_log.append(event, **fields) == json.loads(json.dumps(file_log.append(event, **fields)))

    exported = tmp_path / "export.jsonl"
    with open(exported, "wb") as out:
        assert db_log.export(out) == 3
    assert exported.read_bytes() == file_log.path.read_bytes()
    first = db_log.read()[0]
    assert first["api_key"] == "***" and "sk-live-123456" not in exported.read_text()
    assert db_log.verify() == audit.verify(file_log.path)
    assert db_log.verify().ok and db_log.verify().head_hash == file_log.verify().head_hash


def test_chain_fields_and_read_filters(db_url: str) -> None:
    log = DatabaseAuditLog(db_url)
    written = _fill(log)
    assert [r["seq"] for r in written] == [1, 2, 3, 4, 5]
    assert written[0]["prev_hash"] == audit.GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(written))
    assert all(r["hash"] == audit.record_hash(r) for r in written)
    assert log.read() == written
    assert [r["seq"] for r in log.read(run_id="r1")] == [1, 2, 3, 4]
    assert [r["requested_by"] for r in log.read(event=audit.RETRAIN_INITIATED)] == ["alice", "bob"]
    assert [r["seq"] for r in log.read(run_id=["r2", "nope"])] == [5]
    with pytest.raises(ValueError, match="reserved"):
        log.append(audit.RETRAIN_INITIATED, seq=99)
    with pytest.raises(ValueError, match="event"):
        log.append("")
    result = log.verify()
    assert result.ok and result.records == 5 and result.head_hash == written[-1]["hash"]


def test_an_empty_or_missing_table(db_url: str, tmp_path: Path) -> None:
    log = DatabaseAuditLog(db_url)
    missing = log.verify()
    assert not missing.ok and "does not exist" in missing.reason
    log.ensure_schema()
    log.ensure_schema()  # idempotent
    assert log.verify() == audit.VerifyResult(True, 0)
    assert _export_and_verify(log, tmp_path / "empty.jsonl").ok


# ------------------------------------------------------------------------------------ concurrent writers


def _writer(url: str, worker: int, count: int, start: multiprocessing.synchronize.Barrier, warm: bool) -> None:
    log = DatabaseAuditLog(url)
    if warm:
        log._ready()  # imports done, engine made, table checked: the appends below start together
    start.wait(240)
    for i in range(count):
        log.append(audit.TRAINING_SUBMITTED, run_id=f"w{worker}", i=i, padding="x" * 2000)
        time.sleep(0.005)  # between appends the lock is free: without a pause one writer may drain its batch alone


def _run_writers(url: str, workers: int, per_worker: int, warm: bool) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the database
    start = ctx.Barrier(workers)
    procs = [ctx.Process(target=_writer, args=(url, w, per_worker, start, warm)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    assert [proc.exitcode for proc in procs] == [0] * workers


@pytest.mark.slow
def test_eight_processes_write_one_unbroken_chain(db_url: str, tmp_path: Path) -> None:
    DatabaseAuditLog(db_url).ensure_schema()  # as `init` does before the workers start
    workers, per_worker = 8, 20
    _run_writers(db_url, workers, per_worker, warm=True)

    log = DatabaseAuditLog(db_url)
    result = log.verify()
    assert result.ok, result
    assert result.records == workers * per_worker
    records = log.read()
    assert [r["seq"] for r in records] == list(range(1, workers * per_worker + 1))  # no gap, no fork
    for w in range(workers):  # each writer's records are all there, in its order
        assert [r["i"] for r in records if r["run_id"] == f"w{w}"] == list(range(per_worker))
    switches = sum(a["run_id"] != b["run_id"] for a, b in itertools.pairwise(records))
    assert switches > workers, f"the writers did not overlap ({switches} switches): no contention was tested"
    exported = _export_and_verify(log, tmp_path / "export.jsonl")
    assert exported.ok and exported.records == workers * per_worker and exported.head_hash == result.head_hash


@pytest.mark.slow
def test_first_appends_race_to_create_the_schema(db_url: str) -> None:
    """No `init`: the first appends of several processes create the table together, one chain results."""
    _run_writers(db_url, 4, 3, warm=False)
    result = DatabaseAuditLog(db_url).verify()
    assert result.ok and result.records == 12, result


# ------------------------------------------------------------------------------------------ tampering


@pytest.mark.parametrize(
    ("statements", "line", "seq", "reason"),
    [
        (
            [f"UPDATE {TABLE} SET record = replace(record, 'alice', 'mallory') WHERE seq = 1"],
            1,
            1,
            "hash mismatch: the record was edited",
        ),
        ([f"DELETE FROM {TABLE} WHERE seq = 3"], 3, 4, "seq 4 but expected 3: record(s) deleted"),
        (  # swap the positions of 3 and 4
            [
                f"UPDATE {TABLE} SET seq = -3 WHERE seq = 3",
                f"UPDATE {TABLE} SET seq = 3 WHERE seq = 4",
                f"UPDATE {TABLE} SET seq = 4 WHERE seq = -3",
            ],
            3,
            4,
            "seq 4 but expected 3: record(s) reordered or duplicated",
        ),
        (  # record 2 moved to the end
            [f"UPDATE {TABLE} SET seq = 99 WHERE seq = 2"],
            2,
            3,
            "seq 3 but expected 2: record(s) reordered or duplicated",
        ),
    ],
    ids=["edited", "deleted", "reordered", "moved"],
)
def test_verify_names_the_tampered_row(
    db_url: str, tmp_path: Path, statements: list[str], line: int, seq: int, reason: str
) -> None:
    log = DatabaseAuditLog(db_url)
    _fill(log)
    _tamper(db_url, *statements)
    result = log.verify()
    assert not result.ok
    assert (result.first_bad_line, result.first_bad_seq, result.reason) == (line, seq, reason)
    assert result.records == line - 1
    # The reviewer's export says the same through the file's verify.
    from_file = _export_and_verify(log, tmp_path / "export.jsonl")
    assert (from_file.first_bad_line, from_file.first_bad_seq, from_file.reason) == (line, seq, reason)
    assert from_file.head_hash == result.head_hash


def test_verify_names_a_row_whose_columns_were_edited(db_url: str) -> None:
    log = DatabaseAuditLog(db_url)
    _fill(log)
    _tamper(db_url, f"UPDATE {TABLE} SET event = 'validation_passed', run_id = 'r9' WHERE seq = 2")
    result = log.verify()
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 2, 2)
    assert result.reason == "column(s) event, run_id disagree with the record: the row was edited"


def test_append_refuses_to_chain_onto_an_edited_last_row(db_url: str) -> None:
    log = DatabaseAuditLog(db_url)
    _fill(log)
    _tamper(db_url, f"UPDATE {TABLE} SET record = replace(record, 'bob', 'eve') WHERE seq = 5")
    with pytest.raises(AuditLogCorrupt, match="seq 5"):
        log.append(audit.RETRAIN_FAILED, run_id="r2")
    assert log.verify().first_bad_seq == 5


# ------------------------------------------------------------------------------------------ append-only


def test_update_delete_and_gaps_are_refused_even_for_the_owner(db_url: str) -> None:
    log = DatabaseAuditLog(db_url)
    written = _fill(log)
    engine = audit_db.engine_for(db_url)
    refused = [
        f"UPDATE {TABLE} SET record = '{{}}' WHERE seq = 1",
        f"DELETE FROM {TABLE} WHERE seq = 5",
        f"DELETE FROM {TABLE}",
        # a gap (seq 7) and a fork (a second successor of record 4) are refused as well
        f"INSERT INTO {TABLE} (seq, ts, event, prev_hash, hash, record) VALUES (7, 't', 'e', '{written[4]['hash']}', "
        f"'{'a' * 64}', '{{}}')",
        f"INSERT INTO {TABLE} (seq, ts, event, prev_hash, hash, record) VALUES (5, 't', 'e', '{written[3]['hash']}', "
        f"'{'b' * 64}', '{{}}')",
    ]
    if engine.dialect.name == "postgresql":
        refused.append(f"TRUNCATE {TABLE}")
    for statement in refused:
        with pytest.raises(sa.exc.DatabaseError) as caught, engine.begin() as conn:
            conn.exec_driver_sql(statement)
        message = str(caught.value)
        assert "append-only" in message or "continue the chain" in message or "unique" in message.lower(), message
    assert log.verify().ok and log.verify().records == 5
    assert log.append(audit.RETRAIN_FAILED, run_id="r2")["seq"] == 6


def test_postgres_writer_role_has_insert_and_select_only(pg_url: str, stack_services: OwnServices) -> None:
    """The grants of docs/audit-database.md: the owner runs `init`, the writer appends and verifies, nothing else."""
    owner = DatabaseAuditLog(pg_url)
    owner.ensure_schema()
    role = f"audit_writer_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    with _admin(pg_url.replace("postgresql+psycopg2", "postgresql")) as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"REVOKE ALL ON {TABLE} FROM PUBLIC")
        cur.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        cur.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        cur.execute(f"GRANT SELECT, INSERT ON {TABLE} TO {role}")
    try:
        writer_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        writer = DatabaseAuditLog(writer_url)
        assert writer.append(audit.RETRAIN_INITIATED, run_id="r1")["seq"] == 1
        assert owner.append(audit.RETRAIN_COMPLETED, run_id="r1")["seq"] == 2
        assert writer.verify().ok and writer.verify().records == 2
        engine = audit_db.engine_for(writer_url)
        for statement in (
            f"UPDATE {TABLE} SET event = 'x'",
            f"DELETE FROM {TABLE}",
            f"TRUNCATE {TABLE}",
            f"SET LOCAL {audit_db.MAINTENANCE_SETTING} = 'on'; DELETE FROM {TABLE}",  # the flag does not grant
            f"DROP TABLE {TABLE}",
        ):
            with pytest.raises(sa.exc.DatabaseError, match=r"permission denied|must be owner"), engine.begin() as c:
                c.exec_driver_sql(statement)
        assert writer.verify().records == 2
    finally:
        audit_db._ENGINES.clear()
        with _admin(stack_services.postgres.url) as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            cur.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_writer_without_the_table_is_told_to_run_init(pg_url: str, stack_services: OwnServices) -> None:
    role = f"audit_nocreate_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    with _admin(pg_url.replace("postgresql+psycopg2", "postgresql")) as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
    try:
        writer = DatabaseAuditLog(make_url(pg_url).set(username=role))
        with pytest.raises(audit_db.AuditDatabaseError, match=r"include\.records\.audit_db init"):
            writer.append(audit.RETRAIN_INITIATED)
    finally:
        audit_db._ENGINES.clear()
        with _admin(stack_services.postgres.url) as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            cur.execute(f"DROP ROLE IF EXISTS {role}")


# ------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "include.records.audit_db", *args], cwd=ROOT, capture_output=True, timeout=120, **kwargs
    )


def test_cli_init_verify_export_show(db_url: str, tmp_path: Path) -> None:
    missing = _cli("verify", "--url", db_url)
    assert missing.returncode == 2 and b"MISSING" in missing.stderr
    assert _cli("init", "--url", db_url).returncode == 0
    log = DatabaseAuditLog(db_url)
    written = _fill(log)

    ok = _cli("verify", "--url", db_url)
    assert ok.returncode == 0 and ok.stdout.decode().startswith("OK: 5 records, chain intact")
    exported = _cli("export", "--url", db_url)
    assert exported.returncode == 0
    (tmp_path / "audit.jsonl").write_bytes(exported.stdout)
    assert [json.loads(line) for line in exported.stdout.splitlines()] == written
    reviewer = subprocess.run(
        [sys.executable, "-m", "include.records.audit", "verify", str(tmp_path / "audit.jsonl")],
        cwd=ROOT,
        capture_output=True,
    )
    assert reviewer.returncode == 0 and b"OK: 5 records" in reviewer.stdout
    assert _cli("export", "--url", db_url, "--output", str(tmp_path / "o.jsonl")).returncode == 0
    assert (tmp_path / "o.jsonl").read_bytes() == exported.stdout
    shown = _cli("show", "--url", db_url, "--event", audit.RETRAIN_INITIATED, "--where", "requested_by=bob")
    assert [json.loads(line)["seq"] for line in shown.stdout.splitlines()] == [5]

    _tamper(db_url, f"DELETE FROM {TABLE} WHERE seq = 2")
    broken = _cli("verify", env={**_env(), "COGNIGY_RETRAIN_AUDIT_URL": db_url})  # URL from the environment
    assert broken.returncode == 1
    assert broken.stdout.decode().strip() == "BROKEN at row 2 (seq 3): seq 3 but expected 2: record(s) deleted"


def test_cli_without_a_url_or_with_an_unreachable_one() -> None:
    env = {k: v for k, v in _env().items() if k != "COGNIGY_RETRAIN_AUDIT_URL"}
    assert _cli("verify", env=env).returncode == 2
    down = _cli("verify", "--url", "postgresql://audit:hunter2secret@127.0.0.1:9/audit", env=env)
    assert down.returncode == 2 and b"ERROR" in down.stderr and b"hunter2secret" not in down.stderr
    assert _cli("verify", "--url", "mysql://x@h/db", env=env).returncode == 2


def _env() -> dict[str, str]:
    return dict(os.environ)


# ----------------------------------------------------------------------------------------- configuration


def test_settings_audit_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_URL", raising=False)
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_CONN_ID", raising=False)
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_PATH", str(tmp_path / "a.jsonl"))
    assert settings.audit_store() == ("file", str(tmp_path / "a.jsonl"))
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_URL", "  ")  # blank is unset
    assert settings.audit_store()[0] == "file"
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_URL", "sqlite:////x/audit.db")
    assert settings.audit_store() == ("url", "sqlite:////x/audit.db")
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_CONN_ID", "audit_db")
    with pytest.raises(ValueError, match="not both"):
        settings.audit_store()
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_URL")
    assert settings.audit_store() == ("conn_id", "audit_db")


def test_url_from_connection_fields() -> None:
    url = url_from_connection(
        "postgres",
        host="db.internal",
        port=5433,
        login="audit_writer",
        password="p@ss word",
        schema="airflow_audit",
        extra={"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "cursor": "dictcursor", "x": None},
    )
    assert url.drivername == "postgresql+psycopg2" and url.host == "db.internal" and url.port == 5433
    assert (url.username, url.password, url.database) == ("audit_writer", "p@ss word", "airflow_audit")
    assert dict(url.query) == {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"}
    assert url_from_connection("sqlite", host="/var/audit.db").render_as_string() == "sqlite:////var/audit.db"
    over = url_from_connection("generic", password="pw", extra={"sqlalchemy_url": "postgres://u@h/d"})
    assert over.render_as_string(hide_password=False) == "postgresql+psycopg2://u:pw@h/d"
    with pytest.raises(audit_db.AuditDatabaseError, match="cannot hold"):
        url_from_connection("http", host="x")
    with pytest.raises(audit_db.AuditDatabaseError, match="not supported"):
        DatabaseAuditLog("mysql+pymysql://u@h/d")
    assert "secret" not in repr(DatabaseAuditLog("postgresql://u:secret@h/d"))


def _context(run_id: str) -> dict:
    ti = SimpleNamespace(dag_id="cognigy_nlu_retrain", run_id=run_id, task_id="validate", map_index=-1, try_number=1)
    return {"ti": ti, "dag_run": SimpleNamespace(run_type="manual", triggering_user_name="alice")}


def test_pipeline_audit_writes_where_configured(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """plugins' audit(): the file when nothing is set, the database by URL, the database by Airflow connection."""
    from cognigy_airflow import auditing

    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_URL", raising=False)
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_CONN_ID", raising=False)
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_PATH", str(tmp_path / "file.jsonl"))
    assert isinstance(auditing.audit_log(), AuditLog)
    auditing.audit(_context("r-file"), audit.REQUEST_REJECTED, reason="no")
    assert [r["run_id"] for r in audit.read(tmp_path / "file.jsonl")] == ["r-file"]

    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_URL", db_url)
    record = auditing.audit(_context("r-url"), audit.RETRAIN_INITIATED, plan={"request_hash": "abc"})
    assert (record["seq"], record["triggered_by"], record["outcome"]) == (1, "user:alice", "accepted")

    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_URL")
    parsed = make_url(db_url)
    if parsed.get_backend_name() == "sqlite":
        conn = {"conn_type": "sqlite", "host": parsed.database}
    else:
        conn = {"conn_type": "postgres", "host": parsed.host, "port": parsed.port, "login": parsed.username,
                "schema": parsed.database, "extra": {"application_name": "cognigy-audit"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_AUDIT_DB", json.dumps(conn))
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_CONN_ID", "audit_db")
    log = auditing.audit_log()
    assert isinstance(log, DatabaseAuditLog)
    auditing.audit(_context("r-conn"), audit.RETRAIN_COMPLETED, outcome="promoted")

    stored = DatabaseAuditLog(db_url)
    assert [(r["seq"], r["run_id"]) for r in stored.read()] == [(1, "r-url"), (2, "r-conn")]
    assert stored.read()[1]["outcome"] == "promoted" and stored.verify().ok
    assert [r["run_id"] for r in audit.read(tmp_path / "file.jsonl")] == ["r-file"]  # the file was left alone


def test_the_audit_location_people_read_names_the_database_without_its_password(monkeypatch) -> None:
    from include import settings

    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_URL", "postgresql+psycopg2://writer:s3cret-pw@db.example:5432/audit")
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_CONN_ID", raising=False)
    where = settings.audit_location()
    assert where == "the audit table at postgresql+psycopg2://db.example:5432/audit"
    assert "s3cret-pw" not in where and "writer" not in where


# --- a keyed chain (issue 26, item 5) ------------------------------------------------------------------------
def test_a_keyed_chain_in_the_database_survives_no_rewrite(db_url: str, tmp_path: Path) -> None:
    """The same HMAC chain as the file: a row edited by someone past the guards, with its hash recomputed as plain
    SHA-256 (or the whole table rewritten so), is named; the key is not in the database."""
    key = "database-audit-key-0123456789abcdef"
    log = DatabaseAuditLog(db_url, key=key)
    written = _fill(log)
    assert all(r["chain"] == "hmac-sha256" for r in written)
    assert log.verify().tamper_evident and log.verify(keys=[]).unchecked == 5
    with pytest.raises(audit.AuditKeyMissing):
        DatabaseAuditLog(db_url).append(audit.RETRAIN_FAILED, run_id="r2")
    key_file = tmp_path / "key"
    key_file.write_text(key)
    assert _cli("verify", "--url", db_url).returncode == 3  # keyed, no key given: not passed as keyed
    ok = _cli("verify", "--url", db_url, "--key-file", str(key_file))
    assert ok.returncode == 0 and "keyed: HMAC-SHA256" in ok.stdout.decode(), ok.stdout
    assert key not in (_cli("export", "--url", db_url).stdout.decode() + ok.stdout.decode())

    forged = dict(written[1], export_id="exp-forged")
    forged.pop("chain"), forged.pop("key_id")
    forged["hash"] = audit.record_hash(forged)
    _tamper(db_url, f"UPDATE {TABLE} SET record = '{audit.canonical_json(forged)}', hash = '{forged['hash']}' "
                    "WHERE seq = 2")  # fmt: skip
    result = log.verify()
    assert (result.ok, result.first_bad_line) == (False, 2)
    assert result.reason == "an unkeyed record after keyed ones: the chain was rewritten without the key"
