"""Tamper-evident audit trail: a JSON-lines file in which every record carries a SHA-256 hash chain.

Each line is one record::

    {"seq": 7, "ts": "2026-01-02T03:04:05.678Z", "event": "retrain_completed", ...fields...,
     "chain": "hmac-sha256", "key_id": "<16 hex>",
     "prev_hash": "<hash of record 6>", "hash": "<HMAC-SHA256 of this record without 'hash'>"}

``hash`` is HMAC-SHA256, under the deployment's audit key, over the canonical JSON of the record without ``hash``
(``sort_keys=True``, ``separators=(",", ":")``, ``ensure_ascii=False``); the first record's ``prev_hash`` is
``"0" * 64``. ``key_id`` names the key (an HMAC of a fixed text under it: it reveals nothing of the key) so that a
rotated key is told apart from an edit. Editing, deleting, reordering or truncating a record breaks the chain, and
:func:`verify` names the first broken line; without the key, nobody can recompute the hashes after an edit.

Records written without a key (older logs; a deployment with no key configured) have no ``chain``/``key_id`` and
``hash`` is plain SHA-256: :func:`verify` still checks them but calls them *unkeyed: not tamper-evident* (anyone who
can write the file can edit a record and recompute every hash). A keyed record seals the unkeyed ones before it
(its HMAC covers their hash through ``prev_hash``); after one keyed record every later record must be keyed
(:class:`AuditKeyMissing` when a writer has no key, a broken chain for ``verify``).

Removing records from the *end* leaves a shorter valid chain: the pipeline anchors each task's last record
outside the log (``{"seq", "hash"}`` in the task's XCom ``audit_anchor`` and, per retrain, the MLflow run's tags
``audit_head_seq``/``audit_head_hash``), and ``verify --anchors``/``--mlflow-uri`` compares them.

Several DAG runs and processes may append to one file: :meth:`AuditLog.append` holds an exclusive
``fcntl.flock`` on the file while it reads the last record, writes one line with a single ``write``,
flushes and fsyncs. ``flock`` works on a local or block-device filesystem shared by the workers of one
host; it is not reliable over NFS between hosts.

A writer that dies mid-``write`` leaves a torn last line (no trailing newline). The next :meth:`AuditLog.append`
repairs it under the same lock instead of refusing every later record: the torn bytes move to a sidecar file
``<log>.torn-<UTC timestamp>`` next to the log (written and fsynced before the log is truncated back to its last
complete line), and a ``log_repaired`` record naming the sidecar, its SHA-256 and byte count is chained first.
If the torn line is in fact a complete, valid record that continues the chain (only its newline is missing),
the newline is added instead (``log_repaired`` with ``action: newline_added``). A last line that *ends* with a
newline but is not a valid record was not torn by a crash: append still refuses it (:class:`AuditLogCorrupt`).

Object storage (S3, GCS, Azure Blob) has no append and no lock. To plug it in, keep this class for the
local file and ship closed files, or write one object per record named by ``seq``
(``audit/<seq:012d>.json``) with a conditional create (S3 ``If-None-Match: *``, GCS
``ifGenerationMatch=0``): the create that loses the race for a ``seq`` re-reads the head and retries,
which gives the same chain without a lock. ``verify`` then reads the objects in ``seq`` order.

CLI::

    python -m include.records.audit verify PATH [--key-file F] [--anchors A.json] [--mlflow-uri URI]
        # exit 0: intact (keyed and checked, or unkeyed with a warning); 1: broken chain, HMAC or anchor mismatch,
        # a repair's sidecar gone/changed; 2: no file; 3: intact links but not verified as tamper-evident (keyed
        # records and no key given, or a key given and nothing keyed). The key: --key-file, else the file named by
        # $COGNIGY_RETRAIN_AUDIT_KEY_FILE, else the password of $AIRFLOW_CONN_COGNIGY_AUDIT_KEY (JSON or URI).
    python -m include.records.audit show PATH [--event E] [--run-id R] [--where KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from include.records.redaction import redact
from include.state.durable import fsync_dir

GENESIS_HASH = "0" * 64
HMAC_CHAIN = "hmac-sha256"  # the `chain` field of a keyed record
RESERVED_FIELDS = frozenset({"seq", "ts", "event", "prev_hash", "hash", "chain", "key_id"})
KEY_ENV_FILE = "COGNIGY_RETRAIN_AUDIT_KEY_FILE"
KEY_ENV_CONN = "AIRFLOW_CONN_COGNIGY_AUDIT_KEY"

# The events the pipeline writes: name -> (default outcome, what it means). The trail itself accepts any name
# (an operator's note, a later version's event); the pipeline's ``audit()`` writes only these.
EVENTS: dict[str, tuple[str, str]] = {
    "request_rejected": ("rejected", "a retrain request failed validation or authorization"),
    "retrain_initiated": ("accepted", "a retrain request was accepted (who, what, why)"),
    "retrain_unchanged": ("unchanged", "the training data matched what the flow last trained on: nothing sent"),
    "rollback_point_captured": ("captured", "the live intents were exported before training"),
    "training_submitted": ("submitted", "a Cognigy training task was started"),
    "training_reattached": ("reattached", "a retry found the task already running and followed it"),
    "duplicate_training_cancelled": ("cancelled", "a second training of the same try was found and cancelled"),
    "concurrent_training_seen": ("seen", "another training of the flow/locale ran beside this run's; not cancelled"),
    "challenger_staged": ("staged", "the new intents were trained in the staging flow, not production"),
    "retrain_failed": ("failed", "training failed or timed out"),
    "training_cancelled": ("cancelled", "a running training was cancelled"),
    "validation_passed": ("passed", "the quality gates accepted the new model"),
    "validation_failed": ("failed", "a quality gate rejected the new model"),
    "approval_requested": ("waiting", "the gates passed and the release waits for a person to approve it"),
    "approval_decided": ("decided", "a person approved or rejected the release, or the wait timed out (rejected)"),
    "promotion_started": ("started", "the gated intents are being imported into the production flow"),
    "promotion_training_started": ("started", "the production flow trains on the gated intents"),
    "promotion_verified": ("verified", "production serves the gated intents"),
    "promotion_failed": ("failed", "promotion did not complete; production is restored or needs a human"),
    "snapshots_pruned": ("deleted", "snapshots this product released were deleted to make room for a release"),
    "snapshot_released": ("released", "a snapshot of the judged model serves every endpoint of the flow"),
    "release_failed": ("failed", "the snapshot release failed; endpoints switched back (or a human is needed)"),
    "release_confirmed": ("confirmed", "the endpoints serve the live project, which holds the judged model"),
    "snapshot_rollback": ("switched", "a person switched the flow's endpoints back to a named snapshot"),
    "rollback_triggered": ("started", "restoring the captured rollback point started"),
    "rollback_retrain_started": ("started", "the restored intents are training"),
    "rollback_retry": ("retrying", "restoring failed once and is tried again"),
    "rollback_skipped": ("skipped", "nothing changed, so nothing to restore"),
    "rollback_verified": ("verified", "the restored model answers like the captured one"),
    "rollback_failed": ("failed", "restoring did not work; a human is needed"),
    "mlflow_synced": ("synced", "the run and model version are in MLflow"),
    "mlflow_sync_deferred": ("deferred", "MLflow was unreachable; the payload waits in the outbox"),
    "retrain_completed": ("completed", "closing record of one target's retrain, with its outcome"),
    "log_repaired": ("repaired", "a torn last line (a writer died mid-append) was moved to a sidecar file"),
}
KNOWN_EVENTS: frozenset[str] = frozenset(EVENTS)

RETRAIN_INITIATED = "retrain_initiated"
ROLLBACK_POINT_CAPTURED = "rollback_point_captured"
TRAINING_SUBMITTED = "training_submitted"
RETRAIN_COMPLETED = "retrain_completed"
RETRAIN_FAILED = "retrain_failed"
REQUEST_REJECTED = "request_rejected"
VALIDATION_PASSED = "validation_passed"
ROLLBACK_TRIGGERED = "rollback_triggered"
LOG_REPAIRED = "log_repaired"


def clean_fields(event: str, fields: dict[str, Any], known_secrets: Any) -> dict[str, Any]:
    """A record's fields as every audit store writes them: checked, redacted, and round-tripped through JSON so the
    hash covers exactly what a reader will parse back."""
    if not event or not isinstance(event, str):
        raise ValueError("event must be a non-empty string")
    clash = RESERVED_FIELDS & fields.keys()
    if clash:
        raise ValueError(f"reserved audit field(s): {sorted(clash)}")
    return json.loads(json.dumps(redact(fields, known_secrets), default=str))


class AuditLogCorrupt(RuntimeError):
    """The last line of the log is not a valid record, so a new record cannot be chained to it."""


class AuditKeyMissing(RuntimeError):
    """The trail is keyed but this writer has no key: an unkeyed record would downgrade the chain."""


class AuditKey:
    """The HMAC key of the chain (from the secrets backend: never stored beside the log, never logged)."""

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(raw) < 16:
            raise ValueError(
                "the audit key must be at least 16 bytes: generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        self._raw = raw
        self.id = hmac.new(raw, b"cognigy-retrain audit key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"AuditKey(id={self.id})"

    def mac(self, body: bytes) -> str:
        return hmac.new(self._raw, body, hashlib.sha256).hexdigest()


def as_key(key: AuditKey | str | bytes | None) -> AuditKey | None:
    return key if isinstance(key, AuditKey) or key is None else AuditKey(key)


def canonical_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(record: dict[str, Any], key: AuditKey | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of ``record`` without its ``hash`` field; HMAC-SHA256 under ``key``
    for a keyed record (``chain: hmac-sha256``)."""
    body = canonical_json({k: v for k, v in record.items() if k != "hash"}).encode("utf-8")
    if record.get("chain") == HMAC_CHAIN:
        if key is None:
            raise AuditKeyMissing(f"record {record.get('seq')} is keyed (key id {record.get('key_id')}): give the key")
        return key.mac(body)
    return hashlib.sha256(body).hexdigest()


def sealed(record: dict[str, Any], key: AuditKey | None) -> bool:
    """Is ``record``'s hash right, as far as a writer holding ``key`` can tell? A record keyed under another key
    (before a rotation) cannot be checked by the writer; `verify` with every key checks it."""
    if record.get("chain") == HMAC_CHAIN:
        if key is None or record.get("key_id") != key.id:
            return isinstance(record.get("hash"), str)
        return hmac.compare_digest(record_hash(record, key), str(record["hash"]))
    return record_hash(record) == record["hash"]


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Append-only, hash-chained JSON-lines log at a local ``path`` (created with its parents)."""

    def __init__(
        self, path: str | Path, *, known_secrets: Iterable[str | None] = (), key: AuditKey | str | bytes | None = None
    ) -> None:
        self.path = Path(path)
        self._known_secrets = [s for s in known_secrets if s]
        self._key = as_key(key)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record and return it (as written: redacted, with seq, ts and hashes).

        Field values under secret-looking keys become ``"***"`` and known secret values are masked.
        Values that JSON cannot encode are stored as ``str(value)``.
        """
        clean = clean_fields(event, fields, self._known_secrets)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                repair = _repair_torn_tail(fh, self.path, self._key)
                last = _last_record(fh, key=self._key)
                lines = []
                if repair is not None:
                    last = next_record(last, LOG_REPAIRED, repair, self._key)
                    lines.append(canonical_json(last) + "\n")
                record = next_record(last, event, clean, self._key)
                lines.append(canonical_json(record) + "\n")
                fh.write("".join(lines).encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        if created:
            fsync_dir(self.path.parent)
        return record

    def verify(self, anchors: Iterable[Mapping[str, Any]] = ()) -> VerifyResult:
        return verify(self.path, keys=[self._key] if self._key else (), anchors=anchors)

    def read(self, **filters: Any) -> list[dict[str, Any]]:
        return read(self.path, **filters)


def next_record(
    last: Mapping[str, Any] | None, event: str, fields: dict[str, Any], key: AuditKey | None = None
) -> dict[str, Any]:
    """The record that follows ``last`` (None: the first record), keyed when ``key`` is given; the file and the
    database trail both chain so. Refuses an unkeyed record after a keyed one (:class:`AuditKeyMissing`)."""
    if key is None and last is not None and last.get("chain") == HMAC_CHAIN:
        raise AuditKeyMissing(
            f"the audit trail is keyed (HMAC-SHA256, key id {last.get('key_id')}) but no audit key is configured: an "
            "unkeyed record would break it. Restore the key (Airflow connection cognigy_audit_key, its password)."
        )
    record: dict[str, Any] = {"seq": (last["seq"] + 1) if last else 1, "ts": utc_timestamp(), "event": event}
    record.update(fields)
    if key is not None:
        record.update(chain=HMAC_CHAIN, key_id=key.id)
    record["prev_hash"] = last["hash"] if last else GENESIS_HASH
    record["hash"] = record_hash(record, key)
    return record


def _last_line_start(fh: Any, end: int) -> int:
    """Offset of the first byte after the last newline before ``end`` (0 if there is none)."""
    pos = end
    while pos > 0:
        step = min(8192, pos)
        pos -= step
        cut = _read_at(fh, pos, step).rfind(b"\n")
        if cut >= 0:
            return pos + cut + 1
    return 0


def _read_at(fh: Any, pos: int, size: int) -> bytes:
    fh.seek(pos)
    return fh.read(size)


def _valid_record(line: bytes, key: AuditKey | None) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
        if isinstance(record, dict) and isinstance(record.get("seq"), int) and sealed(record, key):
            return record
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _repair_torn_tail(fh: Any, path: Path, key: AuditKey | None = None) -> dict[str, Any] | None:
    """Make a torn last line (no trailing newline) harmless; return the ``log_repaired`` fields, or None.

    Called with the log's lock held. A complete, valid record that continues the chain gets its newline; any
    other torn bytes go to ``<log>.torn-<ts>`` (fsynced, with its directory) before the log is truncated to its
    last complete line, so the evidence survives even if the process dies between the two steps.
    """
    end = fh.seek(0, os.SEEK_END)
    if end == 0 or _read_at(fh, end - 1, 1) == b"\n":
        return None
    start = _last_line_start(fh, end)
    torn = _read_at(fh, start, end - start)
    record = _valid_record(torn, key)
    if record is not None:
        previous = _last_record(fh, until=start, key=key) if start else None
        expected_prev = previous["hash"] if previous else GENESIS_HASH
        expected_seq = previous["seq"] + 1 if previous else 1
        if record.get("prev_hash") == expected_prev and record["seq"] == expected_seq:
            fh.write(b"\n")
            return {"action": "newline_added", "repaired_seq": record["seq"], "torn_offset": start}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(1000):
        sidecar = path.with_name(f"{path.name}.torn-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            out = open(sidecar, "xb")  # noqa: SIM115 - closed below, after fsync
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - a thousand sidecars with one timestamp
        raise AuditLogCorrupt(f"cannot create a sidecar for the torn last line of {path}")
    with out:
        out.write(torn)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(path.parent)
    fh.truncate(start)
    fh.flush()
    os.fsync(fh.fileno())
    return {
        "action": "moved_torn_tail",
        "sidecar": sidecar.name,
        "sidecar_sha256": hashlib.sha256(torn).hexdigest(),
        "torn_bytes": len(torn),
        "torn_offset": start,
        "reason": "the last line had no newline (a writer died mid-append); its bytes are in the sidecar file",
    }


def _last_record(fh: Any, until: int | None = None, key: AuditKey | None = None) -> dict[str, Any] | None:
    """The last record of an open file (or of its first ``until`` bytes), None if that is empty."""
    end = fh.seek(0, os.SEEK_END) if until is None else until
    if end == 0:
        return None
    if _read_at(fh, end - 1, 1) != b"\n":
        raise AuditLogCorrupt("the last line has no newline (interrupted write?); run `verify`")
    start = _last_line_start(fh, end - 1)
    line = _read_at(fh, start, end - 1 - start)
    try:
        record = json.loads(line)
        if not sealed(record, key) or not isinstance(record["seq"], int):
            raise ValueError("hash mismatch")
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditLogCorrupt(f"the last record is not valid ({exc}); run `verify`") from exc
    return record


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`. ``records`` counts the records found good (all of them when ``ok``)."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    reason: str | None = None
    head_hash: str | None = None  # hash of the last good record; anchor it elsewhere to detect tail loss
    repairs: int = 0  # log_repaired records in the good part (torn last lines moved to sidecar files)
    sidecar_problems: tuple[str, ...] = ()  # a repair's sidecar file is missing or its SHA-256 differs
    keyed: int = 0  # keyed records whose HMAC was checked with a given key
    unkeyed: int = 0  # plain SHA-256 records (written without a key): not tamper-evident by themselves
    unchecked: int = 0  # keyed records whose key was not given: their links were checked, their HMACs not
    key_ids: tuple[str, ...] = ()  # the keys the keyed records name
    anchors: int = 0  # anchors (seq, hash kept outside the log) that matched
    anchor_problems: tuple[str, ...] = ()  # anchors that did not match, or point past the end of the log

    @property
    def tamper_evident(self) -> bool:
        """Intact, keyed to the end (an unkeyed record after a keyed one is a break), every HMAC checked, every
        anchor matching: nobody without the key could have rewritten it."""
        return self.ok and self.keyed > 0 and not self.unchecked and not self.anchor_problems

    def key_status(self) -> str:
        """One line on how far the chain can be trusted (printed by both `verify` commands)."""
        ids = ", ".join(self.key_ids)
        if self.unchecked:
            return (f"KEYED (HMAC-SHA256, key id {ids}) but no key given for {self.unchecked} record(s): HMACs not "
                    "checked, not verified as tamper-evident (give --key-file or $" + KEY_ENV_FILE + ")")  # fmt: skip
        if self.keyed:
            before = (f"; the first {self.unkeyed} record(s) predate the key and are sealed by the first keyed one"
                      if self.unkeyed else "")  # fmt: skip
            return f"keyed: HMAC-SHA256 (key id {ids}), chain valid, tamper-evident{before}"
        return (
            "UNKEYED: not tamper-evident: plain SHA-256, which anyone who can write the log can recompute after an "
            "edit; configure the audit key (docs/audit-database.md)"
        )


class ChainCheck:
    """What :func:`verify` and the database's ``verify_rows`` check on each record beyond seq and prev_hash: its
    hash or HMAC, no unkeyed record after a keyed one; and, at the end, the anchors kept outside the log."""

    def __init__(self, keys: Iterable[AuditKey | str | bytes | None] = (), anchors: Iterable[Mapping] = ()) -> None:
        self.keys = {k.id: k for k in (as_key(key) for key in keys) if k is not None}
        self.anchors = [a for a in anchors if isinstance(a, Mapping) and isinstance(a.get("seq"), int)]
        self._wanted = {a["seq"] for a in self.anchors}
        self.hashes: dict[int, str] = {}
        self.keyed = self.unkeyed = self.unchecked = 0
        self.key_ids: list[str] = []

    def problem(self, record: dict[str, Any]) -> str | None:
        """Why the record's own hash is wrong, or None."""
        if record.get("chain") == HMAC_CHAIN:
            key = self.keys.get(record.get("key_id"))  # type: ignore[arg-type]
            if key is not None and not hmac.compare_digest(record_hash(record, key), str(record["hash"])):
                return "HMAC mismatch: the record was edited (or written without the key)"
            return None
        if "chain" in record or "key_id" in record:
            return f"unknown chain {record.get('chain')!r}: the record was edited"
        if self.keyed or self.unchecked:
            return "an unkeyed record after keyed ones: the chain was rewritten without the key"
        if record_hash(record) != record["hash"]:
            return "hash mismatch: the record was edited"
        return None

    def accept(self, record: dict[str, Any]) -> None:
        if record.get("chain") == HMAC_CHAIN:
            key_id = str(record.get("key_id"))
            if key_id not in self.key_ids:
                self.key_ids.append(key_id)
            if key_id in self.keys:
                self.keyed += 1
            else:
                self.unchecked += 1
        else:
            self.unkeyed += 1
        if record["seq"] in self._wanted:
            self.hashes[record["seq"]] = record["hash"]

    def fields(self, good: int, complete: bool) -> dict[str, Any]:
        """The VerifyResult fields on keys and anchors. ``complete``: the whole log was read (an anchor past its end
        then means records were removed from the end)."""
        problems, matched = [], 0
        for anchor in self.anchors:
            seq, where = anchor["seq"], anchor.get("source") or "anchor"
            if seq in self.hashes:
                if hmac.compare_digest(str(anchor.get("hash")), self.hashes[seq]):
                    matched += 1
                else:
                    problems.append(f"seq {seq}: the log's hash differs from the {where}'s: the log was rewritten")
            elif complete and seq > good:
                problems.append(f"seq {seq} ({where}) is past the end of the log ({good} records): records removed")
        return {
            "keyed": self.keyed,
            "unkeyed": self.unkeyed,
            "unchecked": self.unchecked,
            "key_ids": tuple(self.key_ids),
            "anchors": matched,
            "anchor_problems": tuple(problems),
        }


def verify(
    path: str | Path, keys: Iterable[AuditKey | str | bytes | None] = (), anchors: Iterable[Mapping[str, Any]] = ()
) -> VerifyResult:
    """Check the whole chain (HMACs with the given ``keys``) and name the first broken line (1-based) and the seq it
    claims; compare the ``anchors`` (``{"seq", "hash", "source"}`` kept outside the log)."""
    path = Path(path)
    if not path.exists():
        return VerifyResult(False, 0, None, None, f"{path} does not exist")
    check = ChainCheck(keys, anchors)
    good, prev_hash = 0, GENESIS_HASH
    repairs: list[dict[str, Any]] = []
    data = path.read_bytes()
    if not data:
        return VerifyResult(True, 0, **check.fields(0, True))  # created, nothing written yet
    lines = data.split(b"\n")
    terminated = data.endswith(b"\n")
    if terminated:
        lines.pop()  # the empty string after the final newline

    def broken(lineno: int, seq: Any, reason: str) -> VerifyResult:
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        head = prev_hash if good else None
        return VerifyResult(False, good, seq, lineno, reason, head, **check.fields(good, False))

    for lineno, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if lineno == len(lines) and not terminated:
                return broken(lineno, None, "truncated line (no trailing newline, not valid JSON)")
            return broken(lineno, None, "not valid JSON")
        if not isinstance(record, dict) or not {"seq", "hash", "prev_hash", "event"} <= record.keys():
            return broken(lineno, None, "not an audit record (fields missing)")
        seq = record["seq"]
        if lineno == len(lines) and not terminated:
            return broken(lineno, seq, "truncated line (no trailing newline)")
        if problem := check.problem(record):
            return broken(lineno, seq, problem)
        expected = good + 1
        if seq != expected:
            if isinstance(seq, int) and seq > expected and not _seq_later(lines[lineno:], expected):
                why = f"seq {seq} but expected {expected}: record(s) deleted"
            else:
                why = f"seq {seq} but expected {expected}: record(s) reordered or duplicated"
            return broken(lineno, seq, why)
        if record["prev_hash"] != prev_hash:
            return broken(lineno, seq, "prev_hash does not match the previous record: chain broken")
        check.accept(record)
        good, prev_hash = good + 1, record["hash"]
        if record["event"] == LOG_REPAIRED:
            repairs.append(record)
    return VerifyResult(
        True,
        good,
        head_hash=prev_hash if good else None,
        repairs=len(repairs),
        sidecar_problems=tuple(_sidecar_problems(path, repairs)),
        **check.fields(good, True),
    )


def _sidecar_problems(path: Path, repairs: list[dict[str, Any]]) -> Iterator[str]:
    """Each ``moved_torn_tail`` repair's sidecar must still hold the bytes its record hashed."""
    for record in repairs:
        name = record.get("sidecar")
        if record.get("action") != "moved_torn_tail" or not isinstance(name, str):
            continue
        sidecar = path.with_name(Path(name).name)
        try:
            digest = hashlib.sha256(sidecar.read_bytes()).hexdigest()
        except OSError:
            yield f"seq {record['seq']}: sidecar {sidecar.name} is missing"
            continue
        if digest != record.get("sidecar_sha256"):
            yield f"seq {record['seq']}: sidecar {sidecar.name} changed (SHA-256 differs from the log_repaired record)"


def _seq_later(lines: list[bytes], seq: int) -> bool:
    """Does a record with ``seq`` come later in the file (then it moved rather than vanished)?"""
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("seq") == seq:
            return True
    return False


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Parsed records in file order; lines that are not JSON objects are skipped (``verify`` reports them)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def read(path: str | Path, **filters: Any) -> list[dict[str, Any]]:
    """Records whose fields equal every given filter, e.g. ``read(p, event="retrain_failed", run_id=r)``.

    A filter whose value is ``None`` is ignored; a list/tuple/set value matches any of its members.
    """
    return filter_records(iter_records(path), **filters)


def filter_records(records: Iterable[dict[str, Any]], **filters: Any) -> list[dict[str, Any]]:
    """The records whose fields equal every given filter (None ignored; a list/tuple/set matches any member);
    shared by the file and the database (`include.records.audit_db`)."""
    active = {k: v for k, v in filters.items() if v is not None}

    def matches(record: dict[str, Any]) -> bool:
        for key, want in active.items():
            have = record.get(key)
            if isinstance(want, list | tuple | set | frozenset):
                if have not in want:
                    return False
            elif have != want:
                return False
        return True

    return [r for r in records if matches(r)]


def show_filters(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The `show` command's filters: --event, --run-id, --dag-id and each --where KEY=VALUE."""
    filters: dict[str, Any] = {"event": args.event, "run_id": args.run_id, "dag_id": args.dag_id}
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--where expects KEY=VALUE, got {item!r}")
        filters[key] = value
    return filters


def load_keys(key_files: Iterable[str] = ()) -> list[str]:
    """The audit keys for `verify`: each ``--key-file``; else the file named by ``$COGNIGY_RETRAIN_AUDIT_KEY_FILE``;
    else the password of the Airflow connection in ``$AIRFLOW_CONN_COGNIGY_AUDIT_KEY`` (JSON or URI form)."""
    files = list(key_files) or ([os.environ[KEY_ENV_FILE]] if os.environ.get(KEY_ENV_FILE) else [])
    keys = [Path(f).read_text(encoding="utf-8").strip() for f in files]
    conn = os.environ.get(KEY_ENV_CONN, "").strip()
    if not keys and conn:
        if conn.startswith("{"):
            keys.append(str(json.loads(conn).get("password") or ""))
        else:
            keys.append(unquote(urlsplit(conn).password or ""))
    return [k for k in keys if k]


def load_anchors(path: str) -> list[dict[str, Any]]:
    """Anchors from a JSON file: a list (or JSON lines) of ``{"seq": int, "hash": str, "source": str}``."""
    text = Path(path).read_text(encoding="utf-8").strip()
    items = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return [{**item, "source": item.get("source") or path} for item in items]


def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    """--key-file, --anchors, --mlflow-uri, --experiment, --require-keyed (the file's and the database's verify)."""
    parser.add_argument("--key-file", action="append", default=[], help="file holding an audit key (repeatable)")
    parser.add_argument("--anchors", help="JSON file of {seq, hash} anchors kept outside the log (XCom audit_anchor)")
    parser.add_argument("--mlflow-uri", help="compare with the audit_head_* tags of the MLflow runs")
    parser.add_argument("--experiment", default="cognigy-nlu-retrain")
    parser.add_argument("--require-keyed", action="store_true", help="exit 3 unless the chain is keyed and checked")


def verify_inputs(args: argparse.Namespace) -> tuple[list[str], list[dict[str, Any]]]:
    anchors = load_anchors(args.anchors) if args.anchors else []
    if args.mlflow_uri:
        from include.records.mlflow_tracking import audit_anchors

        anchors += audit_anchors(args.mlflow_uri, args.experiment)
    return load_keys(args.key_file), anchors


def report(result: VerifyResult, ok_line: str, keys_given: bool, require_keyed: bool) -> int:
    """Print an intact chain's verdict (the first line unchanged for scripts: ``OK: N records, chain intact``),
    its key status and anchors; return the exit code (see the module docstring)."""
    keyed = f"; {result.key_status()}" if result.keyed and not result.unchecked else ""
    print(ok_line + keyed)
    if not keyed:
        print(result.key_status(), file=sys.stderr if not result.unchecked else sys.stdout)
    for problem in result.sidecar_problems:
        print(f"EVIDENCE: {problem}")
    if result.anchors or result.anchor_problems:
        print(
            f"ANCHORS: {result.anchors} match"
            + (f", {len(result.anchor_problems)} do not" if result.anchor_problems else "")
        )
    for problem in result.anchor_problems:
        print(f"ANCHOR MISMATCH: {problem}")
    if result.sidecar_problems or result.anchor_problems:
        return 1
    if result.unchecked or ((keys_given or require_keyed) and not result.keyed):
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.records.audit", description="Audit trail tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_verify = sub.add_parser("verify", help="check the hash chain (HMAC with the audit key) and the anchors")
    p_verify.add_argument("path")
    add_key_arguments(p_verify)
    p_show = sub.add_parser("show", help="print matching records as JSON lines")
    p_show.add_argument("path")
    p_show.add_argument("--event")
    p_show.add_argument("--run-id", dest="run_id")
    p_show.add_argument("--dag-id", dest="dag_id")
    p_show.add_argument("--where", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    if args.command == "verify":
        if not Path(args.path).exists():
            print(f"MISSING: {args.path} does not exist", file=sys.stderr)
            return 2
        keys, anchors = verify_inputs(args)
        result = verify(args.path, keys=keys, anchors=anchors)
        if result.ok:
            repaired = (
                f" ({result.repairs} torn last line(s) repaired: see log_repaired records)" if result.repairs else ""
            )
            return report(
                result, f"OK: {result.records} records, chain intact{repaired}", bool(keys), args.require_keyed
            )
        seq = result.first_bad_seq if result.first_bad_seq is not None else "?"
        line = result.first_bad_line if result.first_bad_line is not None else "?"
        print(f"BROKEN at line {line} (seq {seq}): {result.reason}")
        return 1

    filters = show_filters(args, parser)
    if not Path(args.path).exists():
        print(f"{args.path} does not exist", file=sys.stderr)
        return 2
    for record in read(args.path, **filters):
        print(json.dumps(record, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
