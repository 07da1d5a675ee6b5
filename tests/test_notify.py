"""Alerts and the morning summary (issue 24, parts 1-2) with real receivers: a whole `airflow dags test` run of
`cognigy_nlu_retrain` as one run of a fleet night (its `fleet` param, as `cognigy_nlu_fleet` sets it), whose
challenger the gates reject, sends its alert; then the fleet DAG's `morning_summary` (its task body, in its own
process: `airflow dags test` cannot run the retrain runs a fleet night triggers) reads that run's outcome and sends
the night's summary. Both go through the SMTP provider's notifier to a local SMTP server (aiosmtpd) and the Slack
provider's webhook notifier to a local HTTP server; what arrived names the bot, locale, outcome and links and carries
none of the run's secrets (SMTP password, webhook token, Cognigy API key); the summary is also kept as summary.md in
the night's folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from devtools.servers import ROOT, Emulator
from tests.test_staging import LOCALE, REJECTED, run_dag

SMTP_PASSWORD = "smtp-Pa55-never-in-a-message"
WEBHOOK_TOKEN = "T000/B000/webhook-token-never-in-a-message"
NIGHT = "scheduled__2026-12-05T02:00:00+00:00"
# What `cognigy_nlu_fleet`'s plan_night hands each retrain run it triggers (the `fleet` param).
FLEET_NIGHT = {"dag_id": "cognigy_nlu_fleet", "run_id": NIGHT, "source": "test", "trigger": "automated",
               "label": "fleet[0] (support EN)"}  # fmt: skip
SUMMARY_PROCESS = """
import json, logging, sys, types
sys.path.insert(0, "plugins")
from cognigy_airflow import fleet
args = json.loads(sys.argv[1])
ti = types.SimpleNamespace(dag_id=fleet.FLEET_DAG_ID, run_id=args["night"], log=logging.getLogger("morning_summary"))
print("RESULT" + json.dumps(fleet.morning_summary(args["runs"], ti=ti, params={"mlflow_conn_id": "mlflow_default"})))
"""


def morning_summary(env: dict[str, str], runs: list[dict]) -> dict:
    """The fleet DAG's `morning_summary` task body, with the deployment's environment (connections, Variables)."""
    args = json.dumps({"night": NIGHT, "runs": runs})
    out = subprocess.run([sys.executable, "-c", SUMMARY_PROCESS, args], env={**env, "PYTHONPATH": str(ROOT)},
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, out.stderr[-3000:]
    return json.loads(line[6:])


class Inbox:
    def __init__(self) -> None:
        self.mails: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        mail = message_from_bytes(envelope.content)
        parts = [p.get_payload(decode=True) or b"" for p in mail.walk() if not p.is_multipart()]
        self.mails.append(str(mail["Subject"]) + "\n" + b"\n".join(parts).decode(errors="replace"))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slack_server() -> tuple[ThreadingHTTPServer, list[str]]:
    calls: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(self.path + "\n" + self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def test_rejected_challenger_alert_reaches_smtp_and_slack_without_secrets(
    airflow_home, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.reset()
    emulator.knobs(training_seconds=2)
    inbox = Inbox()
    smtp = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), auth_require_tls=False,
        authenticator=lambda *a: AuthResult(success=True),
    )  # fmt: skip
    smtp.start()
    slack, calls = slack_server()
    smtp_conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port, "login": "alerts",
                 "password": SMTP_PASSWORD, "extra": {"disable_tls": True, "disable_ssl": True}}  # fmt: skip
    slack_conn = {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack.server_address[1]}/services",
                  "password": WEBHOOK_TOKEN}  # fmt: skip
    config = {"smtp_conn_id": "alert_smtp", "to": ["ops@example.com"], "slack_webhook_conn_id": "alert_slack"}
    try:
        env = airflow_home(
            AIRFLOW_CONN_ALERT_SMTP=json.dumps(smtp_conn),
            AIRFLOW_CONN_ALERT_SLACK=json.dumps(slack_conn),
            AIRFLOW_VAR_COGNIGY_ALERTS=json.dumps(config),
        )
        with_alerts = lambda: env  # noqa: E731 (run_dag's airflow_home: the env builder and its state folder)
        with_alerts.state_dir = airflow_home.state_dir
        conf = {**REJECTED, "fleet": FLEET_NIGHT}
        run = run_dag(with_alerts, tmp_path, conf)
        alerted = len(inbox.mails), len(calls)
        # The night's fleet DAG run: one retrain run, the one above (run id and conf as plan_night hands them on).
        night = morning_summary(env, [{"trigger_run_id": run.run_id, "conf": conf}])
    finally:
        smtp.stop()
        slack.shutdown()
    assert run.final["outcome"] == "rejected", run.log[-3000:]
    flow = run.final["target"]["flow_id"] if "target" in run.final else run.event("retrain_initiated")["flow_id"]
    alerts = [m for m in inbox.mails if "summary" not in m.split("\n", 1)[0]]
    summaries = [m for m in inbox.mails if "summary" in m.split("\n", 1)[0]]
    slack_texts = [c.split("\n", 1)[1] for c in calls]
    assert alerted == (1, 1), (inbox.mails, calls)  # the retrain run alerted by itself; the summary came after
    assert len(alerts) == 1 and len(summaries) == 1 and len(calls) == 2, (inbox.mails, calls)
    assert night["targets"] == 1 and night["outcomes"] == ["rejected"], night
    for message in (*inbox.mails, *slack_texts):
        assert flow in message and LOCALE in message and "rejected" in message
        assert "/dags/cognigy_nlu_retrain/runs/" in message
        for secret in (SMTP_PASSWORD, WEBHOOK_TOKEN, "webhook-token", emulator.api_key):
            assert secret not in message
    assert "MLflow run" in alerts[0] and "| Bot (flow) |" in summaries[0]
    kept = Path(night["summary_path"])
    assert kept.is_relative_to(airflow_home.state_dir), kept
    text = kept.read_text()
    assert NIGHT in text and flow in text and quote(run.run_id, safe="") in text  # the run's link names it
