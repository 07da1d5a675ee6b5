"""Audit trail: hash chain, tamper detection, concurrent writers, redaction, CLI."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.servers import ROOT
from include.records import audit
from include.records.audit import AuditLog, AuditLogCorrupt, read, record_hash, verify
from include.records.redaction import is_secret_key, redact, redact_text


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def log_with_five(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(audit.RETRAIN_INITIATED, run_id="r1", dag_id="retrain", requested_by="alice")
    log.append(audit.ROLLBACK_POINT_CAPTURED, run_id="r1", export_id="exp-1")
    log.append(audit.TRAINING_SUBMITTED, run_id="r1", task_id="t-1")
    log.append(audit.RETRAIN_COMPLETED, run_id="r1", task_id="t-1")
    log.append(audit.RETRAIN_INITIATED, run_id="r2", dag_id="retrain", requested_by="bob")
    return log.path


# ------------------------------------------------------------------------------------------ the chain


def test_records_form_a_hash_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "nested" / "audit.jsonl")
    first = log.append(audit.RETRAIN_INITIATED, run_id="r1", locale="de-DE", scores={"f1": 0.91})
    second = log.append(audit.VALIDATION_PASSED, run_id="r1", gates=["f1", "regression"])

    lines = _lines(log.path)
    assert len(lines) == 2 and all(line.endswith("\n") for line in lines)
    on_disk = [json.loads(line) for line in lines]
    assert on_disk == [first, second]
    assert [r["seq"] for r in on_disk] == [1, 2]
    assert first["prev_hash"] == "0" * 64
    assert second["prev_hash"] == first["hash"]
    for record in on_disk:
        assert record["hash"] == record_hash(record)
        assert record["ts"].endswith("Z") and len(record["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert on_disk[0]["scores"] == {"f1": 0.91} and on_disk[0]["locale"] == "de-DE"

    result = verify(log.path)
    assert result.ok and result.records == 2 and result.first_bad_line is None
    assert result.head_hash == second["hash"]


def test_reserved_fields_cannot_be_overridden(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="reserved"):
        log.append(audit.RETRAIN_INITIATED, seq=99)
    assert not log.path.exists() or verify(log.path).records == 0


def test_unknown_event_names_are_accepted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("operator_note", note="retrained by hand")
    assert "operator_note" not in audit.KNOWN_EVENTS
    assert read(log.path, event="operator_note")[0]["note"] == "retrained by hand"


def test_every_event_the_pipeline_writes_has_a_meaning_and_an_outcome() -> None:
    """A reviewer reads `outcome` on every record: an event written without an entry in EVENTS would carry none."""
    import re

    written = set()
    for path in (ROOT / "plugins" / "cognigy_airflow").glob("*.py"):
        written |= set(re.findall(r'\baudit\(\s*context,\s*"([a-z_]+)"', path.read_text()))
    assert len(written) > 15, written  # the scan found the pipeline's calls
    assert written <= audit.KNOWN_EVENTS, written - audit.KNOWN_EVENTS
    assert all(outcome and meaning for outcome, meaning in audit.EVENTS.values())


def test_the_pipeline_refuses_an_event_it_does_not_know() -> None:
    from types import SimpleNamespace

    from cognigy_airflow.auditing import audit as pipeline_audit

    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1)
    with pytest.raises(ValueError, match="unknown audit event 'trained_somehow'"):
        pipeline_audit({"ti": ti, "dag_run": SimpleNamespace(run_type="manual")}, "trained_somehow")


def test_read_filters(log_with_five: Path) -> None:
    assert [r["seq"] for r in read(log_with_five, run_id="r1")] == [1, 2, 3, 4]
    assert [r["requested_by"] for r in read(log_with_five, event=audit.RETRAIN_INITIATED)] == ["alice", "bob"]
    assert [r["seq"] for r in read(log_with_five, event=audit.RETRAIN_INITIATED, run_id="r2")] == [5]
    assert [r["seq"] for r in read(log_with_five, event=[audit.TRAINING_SUBMITTED, audit.RETRAIN_COMPLETED])] == [
        3,
        4,
    ]
    assert read(log_with_five, run_id="nope") == []


# ---------------------------------------------------------------------------------- tamper detection


def test_edited_record_is_named(log_with_five: Path) -> None:
    lines = _lines(log_with_five)
    lines[2] = lines[2].replace('"task_id":"t-1"', '"task_id":"t-666"')
    _write(log_with_five, lines)

    result = verify(log_with_five)
    assert not result.ok
    assert (result.first_bad_line, result.first_bad_seq, result.records) == (3, 3, 2)
    assert "edited" in result.reason


def test_edit_with_recomputed_hash_breaks_the_next_link(log_with_five: Path) -> None:
    lines = _lines(log_with_five)
    record = json.loads(lines[1])
    record["export_id"] = "forged"
    record["hash"] = record_hash(record)
    lines[1] = audit.canonical_json(record) + "\n"
    _write(log_with_five, lines)

    result = verify(log_with_five)
    assert not result.ok and (result.first_bad_line, result.first_bad_seq) == (3, 3)
    assert "prev_hash" in result.reason


def test_deleted_record_is_named(log_with_five: Path) -> None:
    lines = _lines(log_with_five)
    del lines[1]
    _write(log_with_five, lines)

    result = verify(log_with_five)
    assert not result.ok and (result.first_bad_line, result.first_bad_seq) == (2, 3)
    assert "deleted" in result.reason


def test_deleted_first_record_is_detected(log_with_five: Path) -> None:
    _write(log_with_five, _lines(log_with_five)[1:])
    result = verify(log_with_five)
    assert not result.ok and (result.first_bad_line, result.first_bad_seq, result.records) == (1, 2, 0)


def test_reordered_records_are_named(log_with_five: Path) -> None:
    lines = _lines(log_with_five)
    lines[2], lines[3] = lines[3], lines[2]
    _write(log_with_five, lines)

    result = verify(log_with_five)
    assert not result.ok and (result.first_bad_line, result.first_bad_seq) == (3, 4)


def test_truncated_last_line_is_named(log_with_five: Path) -> None:
    data = log_with_five.read_bytes()
    log_with_five.write_bytes(data[:-25])

    result = verify(log_with_five)
    assert not result.ok and result.first_bad_line == 5 and result.records == 4
    assert "truncated" in result.reason
    # A new record is never chained onto a damaged tail: append moves it aside first (test_torn_last_line_*).


def test_garbage_line_in_the_middle(log_with_five: Path) -> None:
    lines = _lines(log_with_five)
    lines.insert(2, "{not json\n")
    _write(log_with_five, lines)
    result = verify(log_with_five)
    assert not result.ok and result.first_bad_line == 3 and result.first_bad_seq is None


def test_missing_file_does_not_verify(tmp_path: Path) -> None:
    assert not verify(tmp_path / "none.jsonl").ok


# ------------------------------------------------------------------------------- concurrent writers


def _writer(path: str, worker: int, count: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(10)
    log = AuditLog(path)
    for i in range(count):
        # Big records make interleaved writes visible if locking were broken.
        log.append(audit.TRAINING_SUBMITTED, run_id=f"w{worker}", i=i, padding="x" * 5000)


def test_concurrent_processes_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers, per_worker = 6, 25
    procs = [ctx.Process(target=_writer, args=(str(path), w, per_worker, start)) for w in range(workers)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0

    result = verify(path)
    assert result.ok, result
    assert result.records == workers * per_worker
    records = read(path)
    assert [r["seq"] for r in records] == list(range(1, workers * per_worker + 1))
    for w in range(workers):  # each writer's own records are all there, in its order
        assert [r["i"] for r in records if r["run_id"] == f"w{w}"] == list(range(per_worker))


# -------------------------------------------------------------------------------------------- redaction


def test_secret_keys_are_redacted_at_any_depth(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", known_secrets=["sk-live-0123456789"])
    record = log.append(
        audit.RETRAIN_INITIATED,
        run_id="r1",
        api_key="sk-live-0123456789",
        connection={"X-API-Key": "abc", "Authorization": "Bearer eyJhbGciOi", "host": "cognigy.example"},
        oauth=[{"client_secret": "cs", "access_token": "at", "refresh_token": "rt"}],
        note="called with key sk-live-0123456789",
        max_tokens=512,
    )
    text = log.path.read_text(encoding="utf-8")
    for secret in ("sk-live-0123456789", '"abc"', "eyJhbGciOi", '"cs"', '"at"', '"rt"'):  # quoted: hashes are hex
        assert secret not in text
    assert record["api_key"] == "***"
    assert record["connection"] == {"X-API-Key": "***", "Authorization": "***", "host": "cognigy.example"}
    assert record["oauth"] == [{"client_secret": "***", "access_token": "***", "refresh_token": "***"}]
    assert record["note"] == "called with key ***"
    assert record["max_tokens"] == 512  # not a secret
    assert verify(log.path).ok


@pytest.mark.parametrize(
    "key",
    ["api_key", "apikey", "x-api-key", "API_KEY", "client_secret", "secret", "password", "token", "access_token",
     "refresh_token", "Authorization", "bearer", "cognigyApiKey", "auth.client_secret", "db_password"],
)  # fmt: skip
def test_secret_looking_keys(key: str) -> None:
    assert is_secret_key(key)
    assert redact({"outer": {key: "value"}}) == {"outer": {key: "***"}}


@pytest.mark.parametrize("key", ["max_tokens", "token_count", "secret_ref", "project_id", "locale"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact({key: "value"}) == {key: "value"}


def test_redact_returns_a_copy_and_redact_text_masks_known_values() -> None:
    original = {"token": "t", "items": [{"password": "p"}]}
    clean = redact(original)
    assert original == {"token": "t", "items": [{"password": "p"}]}
    assert clean == {"token": "***", "items": [{"password": "***"}]}
    assert redact_text("GET /x?key=abc123 failed", ["abc123", None, ""]) == "GET /x?key=*** failed"
    assert redact_text("header Authorization: Bearer abc.def.ghi", []) == "header Authorization: Bearer ***"


# ------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "include.records.audit", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_verify_and_show(log_with_five: Path) -> None:
    ok = _cli("verify", str(log_with_five))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "OK: 5 records, chain intact"

    shown = _cli("show", str(log_with_five), "--event", audit.RETRAIN_INITIATED, "--run-id", "r2")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["seq"], r["requested_by"]) for r in records] == [(5, "bob")]

    lines = _lines(log_with_five)
    del lines[3]
    _write(log_with_five, lines)
    broken = _cli("verify", str(log_with_five))
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN at line 4 (seq 5): ")


# --- secrets inside free text coming back from a server (issue: secrets in free text) ---------------------
def test_credentials_in_server_error_text_never_reach_the_audit_log(tmp_path) -> None:
    """A Cognigy `detail` quoting the refused header, a bearer JWT and a client secret: all masked, with no
    known-secret list given to the log (the production AuditLog is built without one)."""
    from include.cognigy.errors import BadRequest
    from include.records.redaction import register_secret

    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjbGllbnQifQ.c2lnbmF0dXJlLXNpZw"
    register_secret("oauth-client-secret-9f8e7d")  # what the hook does with the connection's secrets
    detail = (
        f"401 Unauthorized: Authorization: Bearer {jwt}; X-API-Key: sk-live-4242abcd rejected; "
        "client_secret=oauth-client-secret-9f8e7d; api_key=k-123456"
    )
    error = BadRequest(detail, status=401)  # how every Cognigy error is built
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("rollback_failed", reason=str(error), nested={"message": detail})
    text = (tmp_path / "audit.jsonl").read_text()
    for secret in (jwt, "sk-live-4242abcd", "oauth-client-secret-9f8e7d", "k-123456"):
        assert secret not in text and secret not in str(error), secret
    assert "401 Unauthorized" in text and "rejected" in text  # the useful part survives


# --- a torn last line (a writer died mid-append) is moved aside, not a dead end ------------------------------
def _tear(path: Path, cut: int = 25) -> bytes:
    """Cut the log's last ``cut`` bytes, as a writer dying mid-append would; return the torn line's bytes."""
    data = path.read_bytes()[:-cut]
    path.write_bytes(data)
    return data[data.rfind(b"\n") + 1 :]


def test_torn_last_line_is_moved_to_a_sidecar_and_appends_go_on(log_with_five: Path) -> None:
    import hashlib

    torn = _tear(log_with_five)
    kept = log_with_five.read_bytes()[: -len(torn)]
    assert torn and not torn.endswith(b"\n")

    # The rollback's first record must get through.
    record = AuditLog(log_with_five).append(audit.ROLLBACK_TRIGGERED, run_id="r2")

    result = verify(log_with_five)
    assert result.ok, result
    assert result.records == 6 and result.repairs == 1 and result.sidecar_problems == ()
    records = read(log_with_five)
    repair = records[4]
    assert [r["event"] for r in records[4:]] == [audit.LOG_REPAIRED, audit.ROLLBACK_TRIGGERED]
    assert record == records[5] and record["seq"] == 6 and record["prev_hash"] == repair["hash"]
    assert repair["seq"] == 5 and repair["prev_hash"] == records[3]["hash"]  # chained onto the last good record
    assert repair["action"] == "moved_torn_tail" and repair["torn_bytes"] == len(torn)
    assert repair["torn_offset"] == len(kept)
    sidecar = log_with_five.with_name(repair["sidecar"])
    assert sidecar.name.startswith("audit.jsonl.torn-") and sidecar.parent == log_with_five.parent
    assert sidecar.read_bytes() == torn  # the evidence, byte for byte
    assert repair["sidecar_sha256"] == hashlib.sha256(torn).hexdigest()
    assert log_with_five.read_bytes().startswith(kept)  # the complete records are untouched

    # verify still catches edits and deletions after a repair...
    lines = _lines(log_with_five)
    lines[1] = lines[1].replace('"exp-1"', '"exp-2"')
    _write(log_with_five, lines)
    assert verify(log_with_five).first_bad_line == 2
    lines = _lines(log_with_five)
    del lines[1]
    _write(log_with_five, lines)
    assert not verify(log_with_five).ok


def test_a_repair_record_cannot_hide_a_changed_or_deleted_sidecar(log_with_five: Path) -> None:
    _tear(log_with_five)
    AuditLog(log_with_five).append(audit.ROLLBACK_TRIGGERED, run_id="r2")
    (repair,) = read(log_with_five, event=audit.LOG_REPAIRED)
    sidecar = log_with_five.with_name(repair["sidecar"])
    ok = _cli("verify", str(log_with_five))
    assert ok.returncode == 0 and "1 torn last line(s) repaired" in ok.stdout, ok.stdout

    sidecar.write_bytes(b"something else")
    changed = _cli("verify", str(log_with_five))
    assert changed.returncode == 1 and "EVIDENCE: seq 5: sidecar" in changed.stdout and "changed" in changed.stdout
    sidecar.unlink()
    assert verify(log_with_five).sidecar_problems == (f"seq 5: sidecar {sidecar.name} is missing",)


def test_torn_line_that_is_a_whole_record_only_gets_its_newline(log_with_five: Path) -> None:
    log_with_five.write_bytes(log_with_five.read_bytes()[:-1])  # died between the record and its newline
    AuditLog(log_with_five).append(audit.ROLLBACK_TRIGGERED, run_id="r2")
    result = verify(log_with_five)
    assert result.ok and result.records == 7 and result.repairs == 1 and result.sidecar_problems == ()
    records = read(log_with_five)
    assert records[4]["requested_by"] == "bob"  # kept in the chain, not moved out
    assert records[5]["event"] == audit.LOG_REPAIRED and records[5]["action"] == "newline_added"
    assert records[5]["repaired_seq"] == 5 and "sidecar" not in records[5]
    assert not list(log_with_five.parent.glob("*.torn-*"))


def test_torn_first_and_only_line_starts_a_fresh_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq": 1, "ts": "2026')
    record = AuditLog(path).append(audit.RETRAIN_INITIATED, run_id="r1")
    result = verify(path)
    assert result.ok and result.records == 2 and record["seq"] == 2
    assert read(path)[0]["prev_hash"] == audit.GENESIS_HASH and read(path)[0]["torn_offset"] == 0


def test_an_edited_last_line_still_blocks_appends(log_with_five: Path) -> None:
    # A last line that ends with its newline but is not a valid record was edited, not torn: no repair.
    lines = _lines(log_with_five)
    lines[-1] = lines[-1].replace('"bob"', '"eve"')
    _write(log_with_five, lines)
    with pytest.raises(AuditLogCorrupt):
        AuditLog(log_with_five).append(audit.RETRAIN_FAILED, run_id="r2")
    assert not list(log_with_five.parent.glob("*.torn-*"))


def _tearing_writer(path: str, worker: int, count: int, torn: multiprocessing.synchronize.Event) -> None:
    import fcntl
    import os

    log = AuditLog(path)
    if worker == 0:  # one record, then die mid-append holding the lock, after half a line
        log.append(audit.TRAINING_SUBMITTED, run_id="w0", i=0)
        with open(path, "ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.write(b'{"seq": 2, "event": "half')
            fh.flush()
            torn.set()
            os._exit(0)
    torn.wait(30)
    for i in range(count):  # the others all meet the torn line at once
        log.append(audit.TRAINING_SUBMITTED, run_id=f"w{worker}", i=i, padding="x" * 2000)


def test_concurrent_writers_repair_a_torn_line_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    torn = ctx.Event()
    procs = [ctx.Process(target=_tearing_writer, args=(str(path), w, 10, torn)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    result = verify(path)
    assert result.ok, result
    repairs = read(path, event=audit.LOG_REPAIRED)
    assert len(repairs) == 1 and result.repairs == 1 and result.sidecar_problems == ()
    assert path.with_name(repairs[0]["sidecar"]).read_bytes() == b'{"seq": 2, "event": "half'
    assert result.records == 1 + 1 + 3 * 10  # worker 0's record, the repair, the others' records


# --- a keyed chain and anchors (issue 26, item 5) -----------------------------------------------------------
KEY = "audit-key-for-tests-0123456789abcdef"


def _recompute(lines: list[str], edit: dict, at: int = 2) -> list[str]:
    """What someone who can write the file does: edit record `at` and recompute every plain SHA-256 after it."""
    records = [json.loads(line) for line in lines]
    records[at].update(edit)
    prev = audit.GENESIS_HASH
    for record in records:
        record.pop("chain", None), record.pop("key_id", None)
        record["prev_hash"] = prev
        record["hash"] = prev = record_hash(record)
    return [audit.canonical_json(r) + "\n" for r in records]


@pytest.fixture
def keyed_five(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / "keyed.jsonl", key=KEY)
    for i in range(5):
        log.append(audit.RETRAIN_INITIATED, run_id=f"r{i}", outcome="accepted")
    return log.path


def test_an_edit_with_recomputed_hashes_passes_an_unkeyed_chain_but_not_a_keyed_one(log_with_five, keyed_five):
    unkeyed = _recompute(_lines(log_with_five), {"requested_by": "mallory"})
    _write(log_with_five, unkeyed)
    forged = verify(log_with_five)
    assert forged.ok and not forged.tamper_evident  # what issue 26 item 5 is about: unkeyed, anyone can rewrite
    assert forged.key_status().startswith("UNKEYED: not tamper-evident")

    lines = _lines(keyed_five)
    assert all('"chain":"hmac-sha256"' in line and KEY not in line for line in lines)
    assert verify(keyed_five, keys=[KEY]).tamper_evident
    _write(keyed_five, _recompute(lines, {"outcome": "rejected"}))  # rewritten as an unkeyed chain
    result = verify(keyed_five, keys=[KEY])
    assert not result.tamper_evident and result.keyed == 0, result
    assert main_exit(keyed_five, "--key-file", _key_file(keyed_five)) == 3  # a key given, nothing keyed

    record = json.loads(lines[2])  # edited, hash recomputed with a guessed key
    record["outcome"] = "rejected"
    record["hash"] = audit.AuditKey("a-guessed-key-0123456789").mac(
        audit.canonical_json({k: v for k, v in record.items() if k != "hash"}).encode()
    )
    _write(keyed_five, [*lines[:2], audit.canonical_json(record) + "\n", *lines[3:]])
    broken = verify(keyed_five, keys=[KEY])
    assert (broken.ok, broken.first_bad_line, broken.first_bad_seq) == (False, 3, 3)
    assert broken.reason.startswith("HMAC mismatch: the record was edited")


def _key_file(near: Path) -> str:
    path = near.parent.parent / f"key-{near.stem}"  # not beside the log
    path.write_text(KEY + "\n")
    return str(path)


def main_exit(path: Path, *args: str) -> int:
    return audit.main(["verify", str(path), *args])


def test_a_writer_without_the_key_cannot_continue_a_keyed_chain(keyed_five: Path) -> None:
    with pytest.raises(audit.AuditKeyMissing, match="cognigy_audit_key"):
        AuditLog(keyed_five).append(audit.RETRAIN_INITIATED, run_id="late")
    last = json.loads(_lines(keyed_five)[-1])  # a forged unkeyed record after keyed ones
    forged = audit.next_record({**last, "chain": None}, audit.RETRAIN_INITIATED, {"run_id": "forged"})
    _write(keyed_five, [*_lines(keyed_five), audit.canonical_json(forged) + "\n"])
    result = verify(keyed_five, keys=[KEY])
    assert (result.ok, result.first_bad_line) == (False, 6)
    assert "unkeyed record after keyed ones" in result.reason


def test_old_unkeyed_records_verify_as_unkeyed_and_a_key_seals_them(log_with_five: Path, capsys) -> None:
    assert main_exit(log_with_five) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "OK: 5 records, chain intact"  # unchanged for scripts
    assert out.err.startswith("UNKEYED: not tamper-evident")
    assert main_exit(log_with_five, "--require-keyed") == 3

    AuditLog(log_with_five, key=KEY).append(audit.RETRAIN_INITIATED, run_id="keyed-now")
    result = verify(log_with_five, keys=[KEY])
    assert (result.ok, result.unkeyed, result.keyed, result.tamper_evident) == (True, 5, 1, True)
    assert "the first 5 record(s) predate the key" in result.key_status()
    lines = _lines(log_with_five)
    prefix = _recompute(lines[:5], {"requested_by": "mallory"}, at=1)  # the old part rewritten
    _write(log_with_five, [*prefix, lines[5]])
    broken = verify(log_with_five, keys=[KEY])
    assert (broken.ok, broken.first_bad_line) == (False, 6) and "prev_hash" in broken.reason


def test_verify_cli_with_and_without_the_key(keyed_five: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(audit.KEY_ENV_FILE, raising=False)
    monkeypatch.delenv(audit.KEY_ENV_CONN, raising=False)
    assert main_exit(keyed_five) == 3
    assert "KEYED (HMAC-SHA256, key id" in capsys.readouterr().out
    assert main_exit(keyed_five, "--key-file", _key_file(keyed_five)) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 5 records, chain intact; keyed: HMAC-SHA256 (key id ") and "tamper-evident" in out
    monkeypatch.setenv(audit.KEY_ENV_CONN, json.dumps({"conn_type": "generic", "password": KEY}))
    assert main_exit(keyed_five) == 0
    monkeypatch.setenv(audit.KEY_ENV_CONN, f"generic://:{KEY}@")
    assert main_exit(keyed_five) == 0
    assert KEY not in capsys.readouterr().out


def test_a_rotated_key_needs_both_keys(tmp_path: Path) -> None:
    other = "the-next-audit-key-fedcba9876543210"
    path = tmp_path / "rotated.jsonl"
    AuditLog(path, key=KEY).append(audit.RETRAIN_INITIATED, run_id="a")
    AuditLog(path, key=other).append(audit.RETRAIN_INITIATED, run_id="b")  # rotation: chains on
    assert verify(path, keys=[KEY, other]).tamper_evident
    only_new = verify(path, keys=[other])
    assert only_new.ok and only_new.unchecked == 1 and not only_new.tamper_evident
    assert len(only_new.key_ids) == 2


def test_anchors_catch_a_removed_tail_and_a_rewrite(keyed_five: Path, tmp_path: Path, capsys) -> None:
    records = [json.loads(line) for line in _lines(keyed_five)]
    anchors = [{"seq": r["seq"], "hash": r["hash"], "source": f"XCom of task {r['run_id']}"} for r in records[3:]]
    assert verify(keyed_five, keys=[KEY], anchors=anchors).anchors == 2
    _write(keyed_five, _lines(keyed_five)[:4])  # the last record removed: a shorter chain, valid on its own
    result = verify(keyed_five, keys=[KEY], anchors=anchors)
    assert result.ok and not result.tamper_evident
    assert result.anchor_problems == (
        "seq 5 (XCom of task r4) is past the end of the log (4 records): records removed",
    )
    anchor_file = tmp_path / "anchors.json"
    anchor_file.write_text(json.dumps(anchors))
    assert main_exit(keyed_five, "--key-file", _key_file(keyed_five), "--anchors", str(anchor_file)) == 1
    assert "ANCHOR MISMATCH: seq 5" in capsys.readouterr().out
    wrong = [{**anchors[0], "hash": "f" * 64}]
    assert verify(keyed_five, keys=[KEY], anchors=wrong).anchor_problems[0].startswith("seq 4: the log's hash differs")


def test_the_pipeline_keys_with_the_airflow_connection_and_anchors_in_xcom(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    sys.path.insert(0, str(ROOT / "plugins"))
    from cognigy_airflow import auditing

    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_URL", raising=False)
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_CONN_ID", raising=False)
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_PATH", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_COGNIGY_AUDIT_KEY", json.dumps({"conn_type": "generic", "password": KEY}))
    monkeypatch.setattr(auditing, "_KEYS", {})
    pushed: dict = {}
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1,
                         xcom_push=lambda key, value: pushed.update({key: value}))  # fmt: skip
    context = {"ti": ti, "dag_run": SimpleNamespace(run_type="manual", triggering_user_name="alice")}
    record = auditing.audit(context, "retrain_initiated", None, None, carry=False)
    assert record["chain"] == "hmac-sha256" and record["key_id"] == audit.AuditKey(KEY).id
    assert pushed["audit_anchor"] == {"seq": 1, "hash": record["hash"], "event": "retrain_initiated",
                                      "key_id": record["key_id"]}  # fmt: skip
    log_file = tmp_path / "state" / "audit" / "retrain_audit.jsonl"
    assert KEY not in log_file.read_text() and not list(log_file.parent.glob("*key*"))
    assert verify(log_file, keys=[KEY], anchors=[pushed["audit_anchor"]]).tamper_evident

    monkeypatch.setattr(auditing, "_KEYS", {})  # a deployment without the connection: unkeyed, and says so
    monkeypatch.delenv("AIRFLOW_CONN_COGNIGY_AUDIT_KEY")
    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_PATH", str(tmp_path / "unkeyed.jsonl"))
    assert "chain" not in auditing.audit(context, "retrain_initiated", None, None, carry=False)
    assert verify(tmp_path / "unkeyed.jsonl").key_status().startswith("UNKEYED")


def test_remote_state_without_a_shared_audit_or_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow.sdk.exceptions import AirflowFailException

    from cognigy_airflow.auditing import refuse_per_host_stores

    for name in ("COGNIGY_RETRAIN_AUDIT_URL", "COGNIGY_RETRAIN_AUDIT_CONN_ID", "COGNIGY_RETRAIN_SINGLE_HOST",
                 "COGNIGY_RATE_LIMIT_STORAGE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_COGNIGY_T", json.dumps({"conn_type": "cognigy", "host": "https://c.example"}))
    monkeypatch.delenv("COGNIGY_RETRAIN_STATE_URI", raising=False)
    refuse_per_host_stores("cognigy_t")  # local state: files are fine

    monkeypatch.setenv("COGNIGY_RETRAIN_STATE_URI", "s3://state_conn@bucket/prefix")
    with pytest.raises(AirflowFailException) as refused:
        refuse_per_host_stores("cognigy_t")
    message = str(refused.value)
    for setting in ("COGNIGY_RETRAIN_STATE_URI", "COGNIGY_RETRAIN_AUDIT_URL", "COGNIGY_RETRAIN_AUDIT_CONN_ID",
                    "COGNIGY_RATE_LIMIT_STORAGE", "rate_limit_storage", "COGNIGY_RETRAIN_SINGLE_HOST"):  # fmt: skip
        assert setting in message, (setting, message)

    monkeypatch.setenv("COGNIGY_RETRAIN_AUDIT_URL", "postgresql+psycopg2://w@db/audit")
    with pytest.raises(AirflowFailException, match="rate budget") as refused:
        refuse_per_host_stores("cognigy_t")
    assert "audit trail" not in str(refused.value)
    monkeypatch.setenv("COGNIGY_RATE_LIMIT_STORAGE", "redis://redis:6379/0")
    refuse_per_host_stores("cognigy_t")
    monkeypatch.delenv("COGNIGY_RETRAIN_AUDIT_URL")
    monkeypatch.setenv("COGNIGY_RETRAIN_SINGLE_HOST", "true")  # one machine: the files are shared
    refuse_per_host_stores("cognigy_t")
