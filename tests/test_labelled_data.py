"""include.data.labelled_data: the parser for users' own labelled CSV/JSONL files, checked by what a user reads."""

from __future__ import annotations

import json

import pytest

from include.data.labelled_data import (
    MAX_FILE_BYTES,
    MAX_ROWS,
    DataFileInvalid,
    LabelledSet,
    LabelledUtterance,
    check_intents,
    normalise,
    parse_labelled,
)


def _errors(data: bytes, name: str, **kwargs) -> list[str]:
    with pytest.raises(DataFileInvalid) as info:
        parse_labelled(data, name, **kwargs)
    assert str(info.value).startswith(f"{info.value.name} is not a valid labelled data file")
    return info.value.errors


def test_limits_are_the_documented_ones():
    assert MAX_FILE_BYTES == 50 * 1024 * 1024
    assert MAX_ROWS == 200_000


def test_good_csv_with_slices_quoted_commas_and_newlines():
    data = (
        b"text, intent ,channel,locale\r\n"
        b"  I want to book a flight ,book_flight,voice,en-US\r\n"
        b'"Cancel it, please",cancel,chat,\r\n'
        b"\r\n"
        b'"first line\nsecond line",help,,en-US\r\n'
        b"where is my bag,lost_bag,chat,en-US\r\n"
    )
    result = parse_labelled(data, "tests/heldout.csv")
    assert isinstance(result, LabelledSet)
    assert result.name == "tests/heldout.csv"
    assert result.slice_names == ("channel", "locale")
    assert [u.line for u in result.utterances] == [2, 3, 5, 7]
    first, second, third, fourth = result.utterances
    assert first == LabelledUtterance(
        "I want to book a flight", "book_flight", (("channel", "voice"), ("locale", "en-US")), 2
    )
    assert second.text == "Cancel it, please"
    assert second.slice_dict() == {"channel": "chat"}  # empty locale: no value, not ""
    assert third.text == "first line\nsecond line"
    assert third.slice_dict() == {"locale": "en-US"}
    assert fourth.intent == "lost_bag"
    assert result.intents == ["book_flight", "cancel", "help", "lost_bag"]
    assert list(result.by_intent()) == ["book_flight", "cancel", "help", "lost_bag"]
    summary = result.summary()
    assert summary == {
        "name": "tests/heldout.csv",
        "sha256": summary["sha256"],
        "rows": 4,
        "intents": 4,
        "intent_names": ["book_flight", "cancel", "help", "lost_bag"],
        "slices": ["channel", "locale"],
        "duplicates": 0,
    }
    assert len(summary["sha256"]) == 64
    json.dumps(summary)
    assert parse_labelled(data, "tests/heldout.csv") == result  # deterministic


def test_good_jsonl_with_slices_and_duplicates():
    lines = [
        {"text": "Book a flight", "intent": "book_flight", "slices": {"channel": "voice", "turn": 1}},
        {"text": "book  a FLIGHT ", "intent": "book_flight", "extra": "ignored"},
        {"text": "cancel", "intent": "cancel", "slices": {"vip": True, "locale": "en-US", "empty": None}},
    ]
    data = ("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n").encode()
    result = parse_labelled(data, "s3://bucket/sets/train.ndjson?versionId=7")
    assert result.name == "s3://bucket/sets/train.ndjson"
    assert [u.line for u in result.utterances] == [1, 2, 4]
    assert result.utterances[0].slices == (("channel", "voice"), ("turn", "1"))
    assert result.utterances[1].text == "book  a FLIGHT"
    assert result.utterances[2].slice_dict() == {"locale": "en-US", "vip": "true"}
    assert result.slice_names == ("channel", "turn", "vip", "locale", "empty")
    assert result.duplicates == 1
    assert result.summary()["duplicates"] == 1
    assert result.by_intent() == {"book_flight": ["Book a flight", "book  a FLIGHT"], "cancel": ["cancel"]}
    assert result.normalised_texts() == {"book a flight", "cancel"}


def test_format_from_fmt_argument_overrides_the_name():
    result = parse_labelled(b'{"text": "hi", "intent": "greet"}\n', "upload.txt", fmt="jsonl")
    assert result.intents == ["greet"]


def test_bom_is_stripped():
    data = b"\xef\xbb\xbftext,intent\nhello,greet\n"
    result = parse_labelled(data, "bom.csv")
    assert result.utterances[0].text == "hello"
    assert result.slice_names == ()


def test_non_english_text():
    data = (
        "text,intent,locale\n"
        "Je voudrais réserver un vol à Zürich,book_flight,fr-FR\n"
        "Ich möchte meinen Flug stornieren – sofort,cancel,de-DE\n"
        "フライトを予約したいです,book_flight,ja-JP\n"
        "STRAẞE,address,de-DE\n"
    ).encode()
    result = parse_labelled(data, "intl.csv")
    assert [u.text for u in result.utterances][:3] == [
        "Je voudrais réserver un vol à Zürich",
        "Ich möchte meinen Flug stornieren – sofort",
        "フライトを予約したいです",
    ]
    assert result.by_intent()["book_flight"] == ["Je voudrais réserver un vol à Zürich", "フライトを予約したいです"]
    assert "strasse" in result.normalised_texts()


def test_normalise():
    assert normalise("  Hello\t\u00a0WORLD \n") == "hello world"
    assert normalise("Cafe\u0301") == normalise("Café")


def test_twenty_thousand_rows_parse_with_their_lines_intents_and_slices():
    """Size, not speed: a timed assertion fails on a loaded machine without anything being wrong (CI did)."""
    intents = [f"intent_{i:02d}" for i in range(40)]
    rows = ["text,intent,channel"] + [
        f"utterance number {i},{intents[i % 40]},{'voice' if i % 2 else 'chat'}" for i in range(20_000)
    ]
    data = ("\n".join(rows) + "\n").encode()
    result = parse_labelled(data, "big.csv")
    summary = result.summary()
    assert summary["rows"] == 20_000
    assert summary["intents"] == 40
    assert summary["intent_names"] == intents
    assert summary["slices"] == ["channel"]
    assert result.utterances[-1].line == 20_001
    assert sum(len(texts) for texts in result.by_intent().values()) == 20_000


# --- bad files: one test per case, asserting what the user reads -----------------------------------------------


def test_missing_column():
    errors = _errors(b"text,label\nhello,greet\n", "heldout.csv")
    assert errors == ["heldout.csv:1: header: missing column 'intent' (expected: text, intent, then any slice columns)"]


def test_semicolon_separated_file_gets_a_hint():
    errors = _errors(b"text;intent\nhello;greet\n", "de.csv")
    expected = "(expected: text, intent, then any slice columns); the file must be comma-separated"
    assert errors == [
        f"de.csv:1: header: missing column 'text' {expected}",
        f"de.csv:1: header: missing column 'intent' {expected}",
    ]


def test_empty_text_lists_every_row():
    data = b"text,intent\nhello,greet\n   ,greet\n,bye\n"
    assert _errors(data, "t.csv") == ["t.csv:3: text: empty", "t.csv:4: text: empty"]


def test_empty_text_in_jsonl():
    assert _errors(b'{"text": " ", "intent": "greet"}\n', "t.jsonl") == ["t.jsonl:1: text: empty"]


def test_undecodable_bytes_name_line_and_offset():
    data = b"text,intent\nhello,greet\ncaf\xe9,order\n"
    (error,) = _errors(data, "latin1.csv")
    assert error.startswith("latin1.csv:3: encoding: byte 0xe9 at byte offset 27 is not valid UTF-8")


def test_utf16_file_is_named_as_such():
    (error,) = _errors("text,intent\n".encode("utf-16"), "u16.csv")
    assert error == "u16.csv:1: encoding: the file is UTF-16; save it as UTF-8"


def test_duplicate_and_empty_header():
    errors = _errors(b"text,intent,channel, channel ,\nhi,greet,a,b,c\n", "h.csv")
    assert errors == [
        "h.csv:1: header: duplicate column name (columns 3 and 4)",
        "h.csv:1: header: column 5 has no name",
    ]


def test_wrong_number_of_fields():
    errors = _errors(b"text,intent\nhello,greet,extra\n", "f.csv")
    assert errors == ["f.csv:2: row: has 3 fields but the header (line 1) has 2"]


def test_unterminated_quote():
    (error,) = _errors(b'text,intent\n"hello,greet\nbye,bye\n', "q.csv")
    assert error.startswith("q.csv:2: csv: cannot read the record starting here")


def test_file_too_large():
    (error,) = _errors(b"x" * 101, "big.csv", max_bytes=100)
    assert error == "big.csv: file: 101 bytes is larger than the limit of 100 bytes (0.0 MiB)"


def test_file_too_large_default_limit_is_reported_in_mib():
    (error,) = _errors(b"x" * (MAX_FILE_BYTES + 1), "huge.jsonl")
    assert error == "huge.jsonl: file: 52,428,801 bytes is larger than the limit of 52,428,800 bytes (50.0 MiB)"


def test_too_many_rows():
    data = b"text,intent\n" + b"".join(b"row %d,greet\n" % i for i in range(4))
    assert _errors(data, "rows.csv", max_rows=3) == ["rows.csv:5: file: more than 3 data rows (the limit is 3)"]


def test_wrong_extension():
    (error,) = _errors(b"text,intent\nhi,greet\n", "https://host/sets/heldout.xlsx?sig=secret")
    accepted = "(accepted extensions: .csv, .jsonl, .ndjson)"
    assert error == f"https://host/sets/heldout.xlsx: file: unsupported file type '.xlsx' {accepted}"
    assert "secret" not in error


def test_credentials_are_not_shown():
    (error,) = _errors(b"", "https://user:p4ss@host/x/heldout.csv?token=abc")
    assert error == "https://host/x/heldout.csv: file: no data rows"


def test_malformed_json_lines():
    data = b'{"text": "hi", "intent": "greet"}\n{"text": "oops", intent: 1}\n[1, 2]\n{"text": 3, "intent": "x"}\n'
    data += b'{"intent": "x"}\n{"text": "a", "intent": "b", "slices": ["voice"]}\n{"text": NaN, "intent": "x"}\n'
    errors = _errors(data, "bad.jsonl")
    assert (
        errors[0]
        == "bad.jsonl:2: json: not valid JSON (Expecting property name enclosed in double quotes at column 18)"
    )
    assert errors[1] == 'bad.jsonl:3: json: expected an object like {"text": ..., "intent": ...}, got array'
    assert errors[2] == "bad.jsonl:4: text: must be a string, got number"
    assert errors[3] == "bad.jsonl:5: text: missing"
    assert errors[4] == "bad.jsonl:6: slices: must be an object, got array"
    assert errors[5].startswith("bad.jsonl:7: json: not valid JSON")
    assert len(errors) == 6


def test_conflicting_labels_name_both_lines():
    data = b"text,intent\nBook a flight,book_flight\nok,yes\n  book A flight,cancel\n"
    assert _errors(data, "c.csv") == ["c.csv:4: intent: conflicting labels: the same text has another intent on line 2"]


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        ("a/b", "must not contain '/' or '\\'"),
        ("a\\\\b", "must not contain '/' or '\\'"),
        ("a\\u202eb", "contains the control character U+202E"),
        ("a\\u0000b", "contains the control character U+0000"),
        ("x" * 201, "is 201 characters long (at most 200)"),
    ],
)
def test_bad_intent_names(intent, expected):
    line = '{"text": "hello", "intent": "' + intent + '"}\n'
    assert _errors(line.encode(), "i.jsonl") == [f"i.jsonl:1: intent: {expected}"]


def test_empty_intent():
    assert _errors(b"text,intent\nhello, \n", "e.csv") == ["e.csv:2: intent: empty"]


def test_empty_file():
    assert _errors(b"text,intent\n\n", "empty.csv") == ["empty.csv: file: no data rows"]
    assert _errors(b"\n  \n", "empty.jsonl") == ["empty.jsonl: file: no data rows"]


def test_user_values_are_not_quoted():
    """Issue 26, item 2: a file that failed to parse is not quoted (it may not be labelled data at all)."""
    long_text = "y" * 500
    data = f"text,intent\n{long_text},a\n{long_text},b\n".encode()
    (error,) = _errors(data, "long.csv")
    assert error == "long.csv:3: intent: conflicting labels: the same text has another intent on line 2"


def test_error_list_is_capped_at_fifty():
    data = b"text,intent\n" + b",greet\n" * 70
    with pytest.raises(DataFileInvalid) as info:
        parse_labelled(data, "many.csv")
    assert info.value.total == 70
    assert len(info.value.errors) == 51
    assert info.value.errors[-1] == "… and 20 more problems"
    assert str(info.value).startswith(
        "many.csv is not a valid labelled data file (70 problems):\nmany.csv:2: text: empty"
    )


def test_check_intents_on_unknown_intent():
    labelled = parse_labelled(b"text,intent\nhi,greet\nbye,farewell\nhey,greet\nflight?,book\n", "h.csv")
    errors = check_intents(labelled, ["greet", "cancel", "help"], "flow 'Support' (en-US)")
    assert errors == [
        "h.csv:3: intent: 'farewell' is not an intent of flow 'Support' (en-US) (it has: cancel, greet, help)",
        "h.csv:5: intent: 'book' is not an intent of flow 'Support' (en-US) (it has: cancel, greet, help)",
    ]
    assert check_intents(labelled, ["greet", "farewell", "book"], "the model") == []
    many = check_intents(labelled, [f"i{n:02d}" for n in range(12)], "the model")
    assert many[0].endswith("(it has: i00, i01, i02, i03, i04, i05, i06, i07, i08, i09 …)")


def test_every_undecodable_byte_is_listed_with_its_line():
    errors = _errors(b"text,intent\n\xff,a\nb\xfe\xfe,c\n", "bin.csv")
    assert [e.split(" is not")[0] for e in errors] == [
        "bin.csv:2: encoding: byte 0xff at byte offset 12",
        "bin.csv:3: encoding: byte 0xfe at byte offset 17",
        "bin.csv:3: encoding: byte 0xfe at byte offset 18",
    ]


# --- issue 26, item 8: what a JSONL file may not smuggle in ---------------------------------------------------


def test_jsonl_object_with_a_duplicate_key_is_refused_with_its_line():
    """json.loads keeps the last of two equal keys: what a reviewer sees is not what would be trained."""
    data = (
        b'{"text": "turn on the light", "intent": "LightOn"}\n'
        b'{"text": "turn off the light", "intent": "LightOff", "intent": "LightOn"}\n'
        b'{"text": "dim it", "intent": "Dim", "slices": {"channel": "chat", "channel": "voice"}}\n'
    )
    assert _errors(data, "dup.jsonl") == [
        "dup.jsonl:2: json: an object repeats the key 'intent' (each key once per object)",
        "dup.jsonl:3: json: an object repeats a key (each key once per object)",
    ]


@pytest.mark.parametrize("char", ["\u0000", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                  "\u2066", "\u2067", "\u2068", "\u2069"])  # fmt: skip
def test_jsonl_text_with_nul_or_a_bidi_control_is_refused_with_its_line(char):
    line = json.dumps({"text": f"pay {char}001 EUR", "intent": "Pay"})
    data = b'{"text": "hello", "intent": "Greet"}\n' + line.encode() + b"\n"
    assert _errors(data, "bidi.jsonl") == [
        f"bidi.jsonl:2: text: contains the control character U+{ord(char):04X} "
        "(NUL and bidirectional controls are not allowed)"
    ]


def test_csv_text_with_a_bidi_control_is_refused_too():
    data = "text,intent\nhello,Greet\npay \u202e001 EUR,Pay\n".encode()
    assert _errors(data, "bidi.csv") == [
        "bidi.csv:3: text: contains the control character U+202E (NUL and bidirectional controls are not allowed)"
    ]


# --- issue 26, item 2: a file that is not labelled data is not quoted ----------------------------------------


def test_a_secrets_file_is_refused_without_quoting_its_content():
    """A CSV of the deployment's secrets named as held-out set: the errors give line numbers and the expected
    columns, never a column name or value of the file."""
    secrets = b"AWS_SECRET_ACCESS_KEY,DB_PASSWORD,DB_PASSWORD\nwJalrXUtnFEMI,hunter2,hunter2\n"
    errors = _errors(secrets, "secrets.csv")
    assert errors == [
        "secrets.csv:1: header: duplicate column name (columns 2 and 3)",
        "secrets.csv:1: header: missing column 'text' (expected: text, intent, then any slice columns)",
        "secrets.csv:1: header: missing column 'intent' (expected: text, intent, then any slice columns)",
    ]
    lines = (
        b'{"text": "hunter2", "intent": "AWS/KEY"}\n{"text": "wJalrXUtnFEMI", "intent": "x", "slices": {"DB": [1]}}\n'
    )
    lines += b'{"text": "hunter2 again", "intent": "a"}\n{"text": "HUNTER2  again", "intent": "b"}\n'
    errors = _errors(lines, "secrets.jsonl")
    for secret in ("hunter2", "AWS", "KEY", "wJalrXUtnFEMI", "DB"):
        assert not any(secret in e for e in errors), errors
    assert [e.split(": ")[0] for e in errors] == ["secrets.jsonl:1", "secrets.jsonl:2", "secrets.jsonl:4"]
