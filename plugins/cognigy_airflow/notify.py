"""Alerts through Airflow's notifiers: e-mail with the SMTP provider's `SmtpNotifier`, Slack with the Slack
provider's `SlackWebhookNotifier`, to the connections the deployment names in the Variable `cognigy_alerts`
(``{"smtp_conn_id": ..., "to": [...], "from_email": ..., "slack_webhook_conn_id": ...}``). Nothing configured:
nothing sent, said once in the log. The text is `include/records/alerts.py`'s."""

from __future__ import annotations

import json
import logging
from typing import Any

from include.records import alerts
from include.records.redaction import redact_text

log = logging.getLogger(__name__)
VARIABLE = "cognigy_alerts"
_said_unconfigured = False


def configured() -> dict[str, Any]:
    """The Variable `cognigy_alerts` as a dict, or {} when absent or empty."""
    from airflow.sdk import Variable

    raw = Variable.get(VARIABLE, default=None)
    if not raw:
        return {}
    return raw if isinstance(raw, dict) else json.loads(raw)


def notifiers(subject: str, text: str, html: str) -> list[Any]:
    """One notifier per configured channel."""
    config = configured()
    found: list[Any] = []
    if config.get("smtp_conn_id") and config.get("to"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        found.append(
            SmtpNotifier(
                to=config["to"],
                from_email=config.get("from_email", "cognigy-retrain@localhost"),
                subject=subject,
                html_content=html,
                smtp_conn_id=config["smtp_conn_id"],
            )
        )
    if config.get("slack_webhook_conn_id"):
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        found.append(SlackWebhookNotifier(slack_webhook_conn_id=config["slack_webhook_conn_id"], text=text))
    return found


def send(context: Any, subject: str, text: str, html: str) -> int:
    """Send through every configured notifier; a channel that fails is logged (redacted), never fatal."""
    global _said_unconfigured
    found = notifiers(subject, text, html)
    if not found and not _said_unconfigured:
        _said_unconfigured = True
        log.info("no alert channel configured (Variable %s): nothing sent", VARIABLE)
    sent = 0
    for notifier in found:
        try:
            notifier.notify(context)
            sent += 1
        except Exception as exc:  # an alert must never change the run's outcome
            log.warning("alert via %s not sent: %s", type(notifier).__name__, redact_text(type(exc).__name__))
    return sent


def alert(context: Any, result: dict[str, Any]) -> int:
    """The target's alert, when its outcome calls for one (`alerts.needs_alert`)."""
    if not alerts.needs_alert(result):
        return 0
    return send(context, alerts.subject(result), alerts.as_text(result), alerts.as_html(result))
