"""Provider metadata: Airflow reads `get_provider_info()` through the `apache_airflow_provider` entry point
(`cognigy_provider.get_provider_info:get_provider_info`) and registers from it, without importing the classes up
front: the `cognigy` connection type and its form, the hook, the trigger, the sensor, the two extra links. The
sensor is generic (a connection id, a job id, a deadline); the retraining DAG's `wait_for_training` step subclasses it
in the plugins folder, which nothing here imports.

The one definition of the connection type and its form: `CognigyHook` takes its `conn_type` and `hook_name` from
here. Field names below are the keys `CognigyHook` reads from the connection's extra JSON.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "airflow-provider-cognigy"
VERSION = "0.2.0"
CONN_TYPE = "cognigy"
HOOK_NAME = "Cognigy.AI"
INTEGRATION = "Cognigy.AI"
HOOK_CLASS = "cognigy_provider.hooks.cognigy.CognigyHook"
EXTRA_LINKS = ["cognigy_provider.links.cognigy.CognigyTaskLink", "cognigy_provider.links.cognigy.MlflowRunLink"]

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "api": {
        "label": "API dialect",
        "description": "rest-v2: the real Cognigy.AI REST API (/new/v2.0). training-jobs: the specification's "
        "training-jobs API (OAuth2 client credentials only).",
        "schema": {"type": "string", "enum": ["rest-v2", "training-jobs"], "default": "rest-v2"},
    },
    "token_url": {
        "label": "OAuth2 token URL",
        "description": "Client-credentials token endpoint. Empty: <Base URL>/auth/oauth2/token (rest-v2) or "
        "<Base URL>/oauth/token (training-jobs). Not used with an API key.",
        "schema": {"type": ["string", "null"]},
    },
    "scopes": {
        "label": "OAuth2 scopes",
        "description": "Space-separated scopes asked for with the client-credentials grant. Empty: none "
        "(rest-v2) or the training-jobs scopes.",
        "schema": {"type": ["string", "null"]},
    },
    "verify": {
        "label": "Verify TLS certificates",
        "description": "Leave on. Turn off only for a lab tenant with a self-signed certificate; prefer a CA bundle.",
        "schema": {"type": "boolean", "default": True},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "PEM file with the CA certificates that sign the tenant's certificate (a corporate TLS "
        "proxy, a private tenant). Used instead of the system store when set.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Request timeout (s)",
        "description": "Seconds to wait for one HTTP answer before the call counts as failed (and, for reads, "
        "is retried).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 300, "default": 30},
    },
    "console_url": {
        "label": "Console URL",
        "description": "Cognigy.AI UI address for the task pages' links (e.g. https://app.cognigy.ai). "
        "Empty: the Base URL.",
        "schema": {"type": ["string", "null"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "host": "Base URL",
        "login": "OAuth2 client id",
        "password": "API key or OAuth2 client secret",
    },
    "placeholders": {
        "host": "https://api-app.cognigy.ai",
        "login": "empty: the password field holds an API key (sent as X-API-Key)",
        "password": "API key, or the client secret when a client id is set",
        "token_url": "https://api-app.cognigy.ai/oauth/token",
        "ca_bundle": "/etc/ssl/certs/corp-ca.pem",
        "console_url": "https://app.cognigy.ai",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE_NAME,
        "name": HOOK_NAME,
        "description": "Hook, trigger, sensor, extra links and connection type for NICE Cognigy.AI tenants, used by "
        "the NLU retraining DAG.",
        "versions": [VERSION],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.cognigy.com/ai/",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["cognigy_provider.hooks.cognigy"]}],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": ["cognigy_provider.triggers.cognigy"]}],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["cognigy_provider.sensors.cognigy"]}],
        "extra-links": EXTRA_LINKS,
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": HOOK_NAME,
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
