"""Secrets in every form they take in text (issue 26, item 4): encoded, re-cased, line-split, JSON-escaped, inside
URLs (user-info, credential parameters) and `Authorization: <scheme> <credentials>` headers.

Unit tests of `include.records.redaction`, the Airflow masker fed with every form, and one whole DAG run
(`airflow dags test`) whose server error texts and connection settings carry them: no file of the run (task logs,
audit, MLflow, state, Airflow's database) may hold any of them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from devtools.airflow_env import cognigy_conn
from devtools.servers import ROOT, Server
from include.records import redaction
from include.records.redaction import MASK, redact, redact_text, register_secret, secret_forms, url_credentials

sys.path.insert(0, str(ROOT / "plugins"))  # what Airflow does with its plugins folder


def _forms_in_text(secret: str) -> dict[str, str]:
    """How a secret shows up in a server's error text, a log line or a dumped header."""
    return {
        "as is": secret,
        "upper-case": secret.upper(),
        "lower-case": secret.lower(),
        "url-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret, safe=""),
        "double url-encoded": quote(quote(secret, safe=""), safe=""),
        "json-escaped": json.dumps({"k": secret})[7:-2],
        "base64": base64.b64encode(secret.encode()).decode(),
        "base64 url-safe": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        "basic credential": "Basic " + base64.b64encode(f"client:{secret}".encode()).decode(),
        "base64 inside a blob": base64.b64encode(json.dumps({"apiKey": secret, "x": 1}).encode()).decode(),
        "split over lines": f"{secret[:9]}\n    {secret[9:]}",
        "split, json-escaped": json.dumps(f"{secret[:9]}\n{secret[9:]}")[1:-1],
    }


def _visible(secret: str, text: str) -> list[str]:
    """Which recognisable form of `secret` is still readable in `text` (line breaks removed first)."""
    flat = re.sub(r"\s*(?:\n|\\n)\s*", "", text)
    decoded = [text, flat]
    for blob in [] if len(text) > 2_000_000 else re.findall(r"[A-Za-z0-9+/_-]{16,}={0,2}", text):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(ValueError):
                decoded.append(decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "replace"))
    found = []
    for name, form in {**_forms_in_text(secret), "secret itself": secret}.items():
        if any(form in candidate or form.lower() in candidate.lower() for candidate in decoded if len(form) >= 6):
            found.append(name)
    return found


def _context(secret: str, text: str) -> str:
    """Where a leak is, for the failure message."""
    for form in (secret, quote(secret), quote_plus(secret), secret[:9]):
        at = text.lower().find(form.lower())
        if at >= 0:
            return text[max(0, at - 200) : at + len(form) + 100]
    return "?"


# --- registered secrets: every form ---------------------------------------------------------------------
@pytest.mark.parametrize("form", list(_forms_in_text("x")))
def test_every_form_of_a_registered_secret_is_masked(form: str) -> None:
    secret = f"Reg1stered/secret+{uuid.uuid4().hex[:10]}=value"
    register_secret(secret)
    text = f"server said: {_forms_in_text(secret)[form]} (request 42 refused)"
    clean = redact_text(text)
    assert not _visible(secret, clean), (form, clean)
    assert clean.startswith("server said: ") and clean.endswith("(request 42 refused)")


def test_known_secrets_given_to_redact_are_masked_in_every_form_too() -> None:
    secret = f"given-not-registered-{uuid.uuid4().hex[:10]}"
    encoded = base64.b64encode(secret.encode()).decode()
    record = redact({"note": f"key {secret.upper()} / {quote(secret)}", "nested": [encoded]}, [secret])
    assert encoded not in json.dumps(record)
    assert secret.upper() not in json.dumps(record) and quote(secret) not in json.dumps(record)


def test_secret_forms_cover_three_base64_alignments() -> None:
    secret = "abcdefghij-0123"
    forms = secret_forms(secret)
    for prefix in (b"", b"x", b"xy", b"Basic client:"):
        encoded = base64.b64encode(prefix + secret.encode() + b"tail").decode()
        assert any(f in encoded and len(f) >= len(secret) for f in forms), prefix


# --- unregistered credentials, found by parsing ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("cache redis://:r3dis-pw-771@cache.internal:6379/0 down", "r3dis-pw-771"),
        ("dsn postgresql://svc:pg%20pass%2Fword@db.internal:5432/x?sslmode=require", "pg%20pass%2Fword"),
        ("amqp://guest:amqp-pass-9@mq/vhost", "amqp-pass-9"),
        ("clone https://ghp_tokenvalue123@github.com/org/repo.git", "ghp_tokenvalue123"),
        ("GET https://h/o?X-Amz-Security-Token=IQoJb3JpZ2luX2VjE&X-Amz-Signature=ff00aa&x=1", "IQoJb3JpZ2luX2VjE"),
        ("GET https://h/o?X-Amz-Security-Token=IQoJb3JpZ2luX2VjE&X-Amz-Signature=ff00aa11&x=1", "ff00aa11"),
        ("blob https://acct.blob.core.windows.net/c/b?sv=2022&sig=AzSig%2Bvalue%3D", "AzSig%2Bvalue%3D"),
        ("GET /new/v2.0/flows?token=tok-4711&limit=5 failed", "tok-4711"),
        ("GET /maps/api?key=AIzaKey-123456&q=x", "AIzaKey-123456"),
        ("callback https://app/cb#access_token=frag-tok-99&state=1", "frag-tok-99"),
        ("Authorization: Token tok-abc-123456", "tok-abc-123456"),
        ("authorization=ApiKey k-abc-123456", "k-abc-123456"),
        ('{"headers": {"Authorization": "Token tok-json-123456"}}', "tok-json-123456"),
        ('"{\\"Authorization\\":\\"Token tok-esc-123456\\"}"', "tok-esc-123456"),
        ("Proxy-Authorization: Digest username=\"u\", response=\"resp-dig-123456\"", "resp-dig-123456"),
        ('password="correct horse battery staple" rejected', "horse battery"),
        ("password: 'correct horse battery staple'", "horse battery"),
        ('{\\"password\\": \\"correct horse battery staple\\"}', "horse battery"),
        ("X-Amz-Security-Token: IQoJb3JpZ2luX2VjEhdr", "IQoJb3JpZ2luX2VjEhdr"),
    ],
)  # fmt: skip
def test_credentials_are_found_by_parsing(text: str, secret: str) -> None:
    clean = redact_text(text)
    assert secret not in clean, clean
    assert MASK in clean


@pytest.mark.parametrize(
    "text",
    ["https://api-app.cognigy.ai/new/v2.0/flows/abc?limit=25&skip=0", "max_tokens: 512, token_count=7",
     "authorization failed for user bob", "GET /new/v2.0/tasks/6630a1b2?type=train", "sqlite:////var/lib/audit.db"],
)  # fmt: skip
def test_ordinary_urls_and_words_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_url_credentials_are_what_a_connection_registers() -> None:
    url = "https://svc:p%40ss@console.example.com/x?token=t-1&locale=en&sig=s%2B1#access_token=a-1"
    assert url_credentials(url) == ["p@ss", "t-1", "s+1", "a-1"]
    assert url_credentials("https://api-app.cognigy.ai") == []


def test_the_airflow_masker_gets_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook module (cognigy_provider.hooks.cognigy) forwards each registered secret to Airflow's `mask_secret`,
    in all its forms: the task logs (which Airflow masks, not our code) hide the encoded ones too."""
    from airflow.sdk._shared.secrets_masker import _secrets_masker
    from cognigy_provider.hooks.cognigy import register_connection_secrets

    from include.cognigy.config import ConnectionConfig

    key = f"Masker/key+{uuid.uuid4().hex[:10]}"
    console_token = f"console-tok-{uuid.uuid4().hex[:10]}"
    config = ConnectionConfig(base_url="https://api.example.com", api_key=key,
                              console_url=f"https://console.example.com/?token={console_token}")  # fmt: skip
    register_connection_secrets(config)
    masker = _secrets_masker()
    for name, form in {**_forms_in_text(key), "console token": console_token}.items():
        if name.startswith("split") or name.startswith("base64 inside") or name == "basic credential":
            continue  # Airflow's masker matches whole strings only; redact_text covers these
        assert form not in masker.redact(f"log line: {form} end"), name


def test_registering_twice_calls_listeners_once(monkeypatch: pytest.MonkeyPatch) -> None:
    heard: list[str] = []
    redaction.on_register(heard.append)
    try:
        secret = f"listener-{uuid.uuid4().hex}"
        register_secret(secret)
        register_secret(secret)
        assert heard.count(secret) == 1
    finally:
        redaction._LISTENERS.remove(heard.append)


# --- end to end: one DAG run ------------------------------------------------------------------------------
@pytest.mark.slow
def test_no_form_of_a_secret_reaches_any_file_of_a_run(airflow_home, mlflow_server: Server, tmp_path: Path) -> None:
    """The canary run of test_mlflow_pipeline, with the secrets also in the emulator's error texts (a 503's
    `detail` and a failed training's reason) and in the connection's URLs, in every form. The run's audit chain is
    keyed (issue 26, item 5) with a key from the Airflow connection `cognigy_audit_key`, which leaks nowhere either,
    and every anchor (XCom `audit_anchor`, the MLflow run's tags) matches the log."""
    from devtools.airflow_env import demo_audit_key
    from include.records.audit import verify
    from tests.test_mlflow_pipeline import PASS, run_dag, run_outputs, start_emulator_with_secrets

    canary = uuid.uuid4().hex[:10]
    api_key, client_secret = f"SECRET-canary-{canary}-api/key+1", f"SECRET-canary-{canary}-client/secret+2"
    mlflow_password = f"SECRET canary {canary} mlflow multi word"
    # Never registered anywhere: only parsing can find these.
    parsed = {
        "redis": f"SECRETcanary{canary}redis",
        "postgres": f"SECRET canary {canary} pg",
        "token param": f"SECRET-canary-{canary}-tokparam",
        "key param": f"SECRET-canary-{canary}-keyparam",
        "sig param": f"SECRET-canary-{canary}-sigparam",
        "amz token": f"SECRET-canary-{canary}-amztoken",
        "authorization token": f"SECRET-canary-{canary}-authtoken",
        "multi-word password": f"SECRET canary {canary} correct horse",
        "console password": f"SECRET-canary-{canary}-consolepw",
        "console token": f"SECRET-canary-{canary}-consoletok",
    }
    registered_forms = " | ".join(f"{n}: {f}" for s in (api_key, client_secret) for n, f in _forms_in_text(s).items())
    parsing_forms = (
        f"cache redis://:{parsed['redis']}@cache.internal:6379/0 | db postgresql://svc:{quote(parsed['postgres'])}"
        f"@db.internal/x | GET /new/v2.0/x?token={parsed['token param']}&key={parsed['key param']}&limit=5 | "
        f"https://b.s3.amazonaws.com/o?X-Amz-Security-Token={parsed['amz token']}&sig={parsed['sig param']} | "
        f"Authorization: Token {parsed['authorization token']}; "
        f"headers {json.dumps({'Authorization': 'Token ' + parsed['authorization token']})} | "
        f'password="{parsed["multi-word password"]}"'
    )
    detail = f"upstream failure: {registered_forms} | {parsing_forms}"
    emulator = start_emulator_with_secrets(tmp_path / "emulator", api_key, client_secret)
    try:
        emulator.knobs(
            training_seconds=3,
            fail_next_trainings=1,
            fail_reason=f"training crashed: {detail}",
            fail_next_requests=[{"method": "GET", "path_regex": "/new/v2.0/", "status": 503, "count": 2,
                                 "detail": detail}],
        )  # fmt: skip
        cognigy = json.loads(cognigy_conn(emulator))
        cognigy.update(login="canary-client", password=client_secret)
        cognigy["extra"].update(
            api_key=api_key,
            console_url=f"https://ops:{parsed['console password']}@console.example.com/"
            f"?token={parsed['console token']}",
        )
        mlflow = {"conn_type": "http", "host": mlflow_server.url, "login": "svc-airflow", "password": mlflow_password}
        key_file, key_env = demo_audit_key(tmp_path / "secrets")
        audit_key = key_file.read_text().strip()
        audit_path = tmp_path / "audit" / "retrain_audit.jsonl"  # a keyed chain of its own, not the session's log
        env = airflow_home(
            AIRFLOW_CONN_COGNIGY_DEFAULT=json.dumps(cognigy),
            AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps(mlflow),
            COGNIGY_RETRAIN_AUDIT_PATH=str(audit_path),
            **key_env,
        )
        run = run_dag(env, tmp_path / "dags_test.log", PASS)
        knobs, stats = emulator.knobs(), emulator.stats()
    finally:
        emulator.stop()
    assert stats["trainings_total"] >= 1, stats  # the canary credentials were used
    assert knobs["fail_next_requests"] == [] and knobs["fail_next_trainings"] == 0, knobs  # both faults were met
    assert "[DAG TEST] starting task_id=submit" in run.log

    outputs, mlflow_run = run_outputs(env, run, mlflow_server.url, tmp_path, audit_path.parent)
    assert b"training crashed" in outputs[str(audit_path)]  # the server's text reached the audit, masked
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        anchors = [json.loads(v) for (v,) in db.execute(
            "SELECT value FROM xcom WHERE run_id = ? AND key = 'audit_anchor'", (run.run_id,))]  # fmt: skip

    tags = mlflow_run.data.tags
    anchors.append({"seq": int(tags["audit_head_seq"]), "hash": tags["audit_head_hash"], "source": "MLflow run"})
    checked = verify(audit_path, keys=[audit_key], anchors=anchors)
    assert checked.tamper_evident and checked.unkeyed == 0, checked
    assert checked.anchors == len(anchors) >= 8, (checked, anchors)  # every task's last record, and the MLflow tag

    secrets = {"api key": api_key, "client secret": client_secret, "mlflow password": mlflow_password, **parsed}
    secrets["audit key"] = audit_key
    leaks = []
    for where, data in outputs.items():
        text = data.decode("utf-8", "replace")
        for name, secret in secrets.items():
            forms = _visible(secret, text) if name in ("api key", "client secret", "audit key") else (
                [f for f in {secret, quote(secret), quote_plus(secret)} if f in text])  # fmt: skip
            if forms:
                leaks.append((where, name, forms, _context(secret, text)))
    assert not leaks, "\n".join(map(repr, leaks))
    assert not [where for where, data in outputs.items() if f"canary-{canary}".encode() in data]
