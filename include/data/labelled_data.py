"""Parse a user's own labelled utterances (a held-out test set or a training set) from CSV or JSONL.

One parser for both uses, plain Python (no Airflow), deterministic and strict: a file either parses completely
into a :class:`LabelledSet` or raises :class:`DataFileInvalid` listing every problem found, each as
``NAME:LINE: field: what is wrong`` (file-level problems read ``NAME: file: ...``). The problems quote nothing
of the file but line numbers and the expected columns: a file named by mistake (a CSV of secrets) leaks neither
its column names nor its values into logs and the audit trail.

CSV: a header row with ``text`` and ``intent``; every other column is a slice dimension (e.g. ``channel``).
JSONL: one object per line, ``{"text": ..., "intent": ..., "slices": {"channel": "voice"}}``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ROWS = 200_000
MAX_INTENT_CHARS = 200
MAX_LISTED_ERRORS = 50
MAX_SHOWN_CHARS = 60

FORMATS = ("csv", "jsonl")
EXPECTED_COLUMNS = "expected: text, intent, then any slice columns"
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

_UTF8_BOM = b"\xef\xbb\xbf"
# C0 + DEL, C1, line/paragraph separators, zero-width space, BOM/ZWNBSP, bidi marks, embeddings and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b\ufeff\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")
# Refused in text and slice values: NUL, bidi marks, embeddings/overrides and isolates (they make what a reviewer
# reads differ from what is trained, "Trojan Source").
_TEXT_CONTROL = re.compile("[\x00\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# JSON keys a labelled data line may have; only these are named in an error (other keys are file content).
_KNOWN_KEYS = frozenset({"text", "intent", "slices", "locale", "split"})


@dataclass(frozen=True, slots=True)
class LabelledUtterance:
    text: str
    intent: str
    slices: tuple[tuple[str, str], ...]  # sorted (dimension, value) pairs
    line: int  # 1-based; for CSV the physical line where the record starts

    def slice_dict(self) -> dict[str, str]:
        return dict(self.slices)


@dataclass(frozen=True, slots=True)
class LabelledSet:
    name: str  # display name (path/URI as given, credentials and query string removed)
    sha256: str  # of the raw bytes
    utterances: tuple[LabelledUtterance, ...]
    slice_names: tuple[str, ...]  # CSV extra columns / JSONL `slices` keys, first-seen order
    duplicates: int = 0  # rows repeating an earlier row's normalised text and intent (kept, only counted)

    @property
    def intents(self) -> list[str]:
        return sorted({u.intent for u in self.utterances})

    def by_intent(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for utt in self.utterances:
            grouped.setdefault(utt.intent, []).append(utt.text)
        return {intent: grouped[intent] for intent in sorted(grouped)}

    def summary(self) -> dict[str, Any]:
        intents = self.intents
        return {
            "name": self.name,
            "sha256": self.sha256,
            "rows": len(self.utterances),
            "intents": len(intents),
            "intent_names": intents,
            "slices": list(self.slice_names),
            "duplicates": self.duplicates,
        }

    def normalised_texts(self) -> set[str]:
        return {normalise(u.text) for u in self.utterances}


class DataFileInvalid(ValueError):
    """Every problem with a data file at once.

    ``errors`` holds at most 50 problems, followed by one ``... and N more problems`` line when there were more;
    ``total`` is the full count. ``str(exc)`` is a heading plus one problem per line.
    """

    def __init__(self, name: str, errors: list[str], total: int | None = None) -> None:
        self.name = name
        self.total = len(errors) if total is None else total
        listed = list(errors[:MAX_LISTED_ERRORS])
        if self.total > len(listed):
            listed.append(f"… and {self.total - len(listed)} more problems")
        self.errors: list[str] = listed
        plural = "" if self.total == 1 else "s"
        super().__init__(
            f"{name} is not a valid labelled data file ({self.total} problem{plural}):\n" + "\n".join(listed)
        )


def normalise(text: str) -> str:
    """Casefold, Unicode NFC, collapse whitespace runs to one space, strip (for duplicate and leakage checks)."""
    return " ".join(unicodedata.normalize("NFC", text.casefold()).split())


def display_name(name: str) -> str:
    """The name to show: as given, but a URI loses any ``user:password@`` and its query/fragment (signatures)."""
    if "://" not in name:
        return name
    try:
        parts = urlsplit(name)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return name.split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _show(value: Any) -> str:
    """repr of a user value, at most 60 of its characters."""
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        return repr(value[:MAX_SHOWN_CHARS] + "…")
    shown = repr(value)
    return shown if len(shown) <= MAX_SHOWN_CHARS + 2 else shown[:MAX_SHOWN_CHARS] + "…"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _extension(name: str) -> str:
    """The lower-cased extension of the file a path or URI names ('' if none), ignoring ?query and #fragment."""
    path = name.split("#", 1)[0].split("?", 1)[0]
    base = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    return base[dot:] if dot >= 0 else ""


def _detect_format(name: str, fmt: str | None) -> str | None:
    if fmt is not None:
        wanted = fmt.strip().lower().lstrip(".")
        wanted = "jsonl" if wanted == "ndjson" else wanted
        return wanted if wanted in FORMATS else None
    return EXTENSIONS.get(_extension(name))


def _decode(data: bytes, name: str) -> str:
    """The file as text (a UTF-8 BOM dropped), or DataFileInvalid naming each undecodable byte's line and offset."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFileInvalid(name, [f"{name}:1: encoding: the file is UTF-16; save it as UTF-8"])
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError:
        pass
    errors: list[str] = []
    view = memoryview(data)
    pos, line, counted_to = skip, 1, 0
    while pos < len(data) and len(errors) < MAX_LISTED_ERRORS:
        try:
            codecs.utf_8_decode(view[pos:], "strict", True)
            break
        except UnicodeDecodeError as exc:
            offset = pos + exc.start
            line += data.count(b"\n", counted_to, offset)
            counted_to = offset
            errors.append(
                f"{name}:{line}: encoding: byte 0x{data[offset]:02x} at byte offset {offset} is not valid UTF-8 "
                "(save the file as UTF-8)"
            )
            pos = pos + exc.end
    # one U+FFFD per undecodable sequence, as above; minus any U+FFFD the file really contains
    total = data[skip:].decode("utf-8", errors="replace").count("\ufffd") - data.count(b"\xef\xbf\xbd")
    raise DataFileInvalid(name, errors, total=max(total, len(errors)))


def _intent_problem(intent: str) -> str | None:
    """What is wrong with an (already stripped) intent name, or None."""
    if not intent:
        return "empty"
    if len(intent) > MAX_INTENT_CHARS:
        return f"is {len(intent)} characters long (at most {MAX_INTENT_CHARS})"
    if (bad := _CONTROL.search(intent)) is not None:
        return f"contains the control character U+{ord(bad.group()):04X}"
    if "/" in intent or "\\" in intent:
        return "must not contain '/' or '\\'"
    return None


class _Collector:
    """Validates rows as they come and builds the set; all checks common to CSV and JSONL live here."""

    def __init__(self, name: str, max_rows: int) -> None:
        self.name = name
        self.max_rows = max_rows
        self.errors: list[str] = []
        self.utterances: list[LabelledUtterance] = []
        self.slice_names: dict[str, None] = {}
        self.first_label: dict[str, tuple[str, int]] = {}  # normalised text -> (intent, line)
        self.seen: set[tuple[str, str]] = set()
        self.intent_problems: dict[str, str | None] = {}  # intent -> what is wrong with it (None: fine)
        self.duplicates = 0
        self.rows = 0

    def error(self, line: int, field: str, what: str) -> None:
        self.errors.append(f"{self.name}:{line}: {field}: {what}")

    def too_many(self, line: int) -> bool:
        """Count one data row; True (and an error) once the limit is passed, so the caller stops."""
        self.rows += 1
        if self.rows > self.max_rows:
            self.error(line, "file", f"more than {self.max_rows:,} data rows (the limit is {self.max_rows:,})")
            return True
        return False

    def add(self, line: int, text: str, intent: str, slices: dict[str, str]) -> None:
        text = text.strip()
        intent = intent.strip()
        ok = True
        if not text:
            self.error(line, "text", "empty")
            ok = False
        elif (bad := _TEXT_CONTROL.search(text)) is not None:
            self.error(line, "text", _text_control(bad.group()))
            ok = False
        for dim, value in slices.items():
            if (bad := _TEXT_CONTROL.search(dim) or _TEXT_CONTROL.search(value)) is not None:
                self.error(line, "slices", _text_control(bad.group()))
                ok = False
                break
        if intent in self.intent_problems:
            problem = self.intent_problems[intent]
        else:
            problem = self.intent_problems[intent] = _intent_problem(intent)
        if problem is not None:
            self.error(line, "intent", problem)
            ok = False
        if not ok:
            return
        key = normalise(text)
        first = self.first_label.get(key)
        if first is None:
            self.first_label[key] = (intent, line)
        elif first[0] != intent and (key, intent) not in self.seen:
            self.error(
                line,
                "intent",
                f"conflicting labels: the same text has another intent on line {first[1]}",
            )
        if (key, intent) in self.seen:
            self.duplicates += 1
        else:
            self.seen.add((key, intent))
        self.utterances.append(LabelledUtterance(text, intent, tuple(sorted(slices.items())), line))


def _parse_csv(text: str, col: _Collector) -> None:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 1
    text_i = intent_i = -1
    slice_cols: list[tuple[int, str]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            col.error(start, "csv", f"cannot read the record starting here ({exc}); check its quotes")
            return
        if not row or all(not field.strip() for field in row):
            continue  # blank line, or an all-empty row as spreadsheets export them
        if header is None:
            header_line = start
            header = [h.strip() for h in row]
            problems = 0
            for i, h in enumerate(header):
                if not h:
                    col.error(start, "header", f"column {i + 1} has no name")
                    problems += 1
                elif header.index(h) != i:
                    col.error(start, "header", f"duplicate column name (columns {header.index(h) + 1} and {i + 1})")
                    problems += 1
            hint = ""
            if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
                hint = "; the file must be comma-separated"
            for required in ("text", "intent"):
                if required not in header:
                    col.error(start, "header", f"missing column '{required}' ({EXPECTED_COLUMNS}){hint}")
                    problems += 1
            if problems:
                return
            text_i, intent_i = header.index("text"), header.index("intent")
            slice_cols = [(i, h) for i, h in enumerate(header) if i not in (text_i, intent_i)]
            for _, h in slice_cols:
                col.slice_names[h] = None
            continue
        if col.too_many(start):
            return
        if len(row) != len(header):
            col.error(start, "row", f"has {len(row)} fields but the header (line {header_line}) has {len(header)}")
            continue
        slices = {h: v for i, h in slice_cols if (v := row[i].strip())}
        col.add(start, row[text_i], row[intent_i], slices)


def _text_control(char: str) -> str:
    return f"contains the control character U+{ord(char):04X} (NUL and bidirectional controls are not allowed)"


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not allowed in JSON")


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: an object whose key repeats is refused (json.loads would silently keep the last)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _parse_jsonl(text: str, col: _Collector) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if col.too_many(number):
            return
        try:
            obj = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            key = f"the key {exc.key!r}" if exc.key in _KNOWN_KEYS else "a key"
            col.error(number, "json", f"an object repeats {key} (each key once per object)")
            continue
        except json.JSONDecodeError as exc:
            col.error(number, "json", f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:
            col.error(number, "json", f"not valid JSON ({type(exc).__name__}: {str(exc)[:MAX_SHOWN_CHARS]})")
            continue
        if not isinstance(obj, dict):
            col.error(number, "json", f'expected an object like {{"text": ..., "intent": ...}}, got {_json_type(obj)}')
            continue
        ok = True
        for key in ("text", "intent"):
            if key not in obj:
                col.error(number, key, "missing")
                ok = False
            elif not isinstance(obj[key], str):
                col.error(number, key, f"must be a string, got {_json_type(obj[key])}")
                ok = False
        slices: dict[str, str] = {}
        raw_slices = obj.get("slices")
        if raw_slices is not None and not isinstance(raw_slices, dict):
            col.error(number, "slices", f"must be an object, got {_json_type(raw_slices)}")
            ok = False
        for dim, value in raw_slices.items() if isinstance(raw_slices, dict) else ():
            dim_name = dim.strip()
            if not dim_name:
                col.error(number, "slices", "a dimension has an empty name")
                ok = False
            elif isinstance(value, dict | list):
                what = f"a dimension's value must be a string, number or boolean, got {_json_type(value)}"
                col.error(number, "slices", what)
                ok = False
            else:
                col.slice_names.setdefault(dim_name, None)
                shown = "" if value is None else value if isinstance(value, str) else json.dumps(value)
                if shown.strip():
                    slices[dim_name] = shown.strip()
        if ok:
            col.add(number, obj["text"], obj["intent"], slices)


def parse_labelled(
    data: bytes,
    name: str,
    *,
    fmt: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    max_rows: int = MAX_ROWS,
) -> LabelledSet:
    """Parse labelled utterances from ``data`` (the file's raw bytes); raise DataFileInvalid listing every problem.

    ``name`` is the path or URI the user gave (shown in errors without credentials or query string); the format
    comes from ``fmt`` ("csv" or "jsonl") or else from the name's extension (.csv, .jsonl, .ndjson).
    """
    shown = display_name(name)
    kind = _detect_format(name, fmt)
    if kind is None:
        accepted = ", ".join(EXTENSIONS)
        if fmt is not None:
            raise DataFileInvalid(shown, [f"{shown}: file: unknown format {_show(fmt)} (accepted: csv, jsonl)"])
        ext = _extension(name)
        got = f"unsupported file type {_show(ext)}" if ext else "the name has no file extension"
        raise DataFileInvalid(shown, [f"{shown}: file: {got} (accepted extensions: {accepted})"])
    if len(data) > max_bytes:
        raise DataFileInvalid(
            shown,
            [f"{shown}: file: {len(data):,} bytes is larger than the limit of {max_bytes:,} bytes ({_mib(max_bytes)})"],
        )
    text = _decode(data, shown)
    col = _Collector(shown, max_rows)
    (_parse_csv if kind == "csv" else _parse_jsonl)(text, col)
    if not col.errors and not col.utterances:
        col.errors.append(f"{shown}: file: no data rows")
    if col.errors:
        raise DataFileInvalid(shown, col.errors)
    return LabelledSet(
        name=shown,
        sha256=hashlib.sha256(data).hexdigest(),
        utterances=tuple(col.utterances),
        slice_names=tuple(col.slice_names),
        duplicates=col.duplicates,
    )


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def check_intents(labelled: LabelledSet, known: Iterable[str], what: str) -> list[str]:
    """One error per intent of ``labelled`` that is not in ``known``, at the first line where it occurs."""
    known_sorted = sorted(set(known))
    known_set = set(known_sorted)
    listed = ", ".join(known_sorted[:10]) + (" …" if len(known_sorted) > 10 else "")
    has = f"it has: {listed}" if known_sorted else "it has none"
    first_line: dict[str, int] = {}
    for utt in labelled.utterances:
        if utt.intent not in known_set:
            first_line.setdefault(utt.intent, utt.line)
    return [
        f"{labelled.name}:{line}: intent: {_show(intent)} is not an intent of {what} ({has})"
        for intent, line in sorted(first_line.items(), key=lambda item: (item[1], item[0]))
    ]
