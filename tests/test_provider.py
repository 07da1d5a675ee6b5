"""The `cognigy` connection type: the in-repo provider package gives Airflow's connection form its fields.

Runs in a child process with a throwaway Airflow home (Airflow reads its configuration at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devtools.servers import ROOT

PROBE = textwrap.dedent(
    """
    import json, os
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    hook = pm.hooks.get("cognigy")
    form = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "cognigy"]
    from cognigy_provider.hooks.cognigy import CognigyHook  # the class the form's Test button instantiates
    config = CognigyHook("from_form").get_config()
    facts = {
        "providers": sorted(pm.providers),
        "hook": hook and {"class": hook.hook_class_name, "name": hook.hook_name, "package": hook.package_name},
        "form": form[0].model_dump(mode="json") if form else None,
        "triggers": sorted(t.trigger_class_name for t in pm.trigger if t.package_name == "airflow-provider-cognigy"),
        "extra_links": sorted(name for name in pm.extra_links_class_names if name.startswith("cognigy_provider.")),
        "info": pm.providers["airflow-provider-cognigy"].data if "airflow-provider-cognigy" in pm.providers else None,
        "config": {"base_url": config.base_url, "dialect": config.dialect, "oauth": config.uses_oauth,
                   "token_url": config.effective_token_url, "scopes": config.scopes, "verify": config.verify,
                   "timeout": config.timeout_seconds},
    }
    print("FACTS" + json.dumps(facts))
    """
)

# What the connection form saves: the extra fields under their own names, empty optional fields as null.
FORM_SAVED = {
    "conn_type": "cognigy",
    "host": "https://api-app.cognigy.ai",
    "login": "client-id-1",
    "password": "not-a-real-secret",
    "extra": {"api": "rest-v2", "token_url": "https://login.example/oauth/token", "scopes": "nlu:train nlu:read",
              "verify": True, "ca_bundle": None, "timeout": 45, "console_url": None},
}  # fmt: skip


def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/a.db",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    env = _airflow_env(tmp_path_factory.mktemp("airflow-home"), AIRFLOW_CONN_FROM_FORM=json.dumps(FORM_SAVED))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("FACTS")), None)
    assert line, (out.stdout + out.stderr)[-3000:]
    return json.loads(line[5:])


def test_the_provider_registers_the_cognigy_connection_type(facts: dict) -> None:
    assert "airflow-provider-cognigy" in facts["providers"]
    assert facts["hook"] == {
        "class": "cognigy_provider.hooks.cognigy.CognigyHook",
        "name": "Cognigy.AI",
        "package": "airflow-provider-cognigy",
    }


def test_the_provider_registers_its_hook_trigger_sensor_and_links(facts: dict) -> None:
    """Registered from `get_provider_info` (what `airflow providers hooks|triggers|links` list)."""
    assert facts["triggers"] == ["cognigy_provider.triggers.cognigy"]
    assert facts["extra_links"] == [
        "cognigy_provider.links.cognigy.CognigyTaskLink",
        "cognigy_provider.links.cognigy.MlflowRunLink",
    ]
    info = facts["info"]
    assert info["integrations"][0]["integration-name"] == "Cognigy.AI"
    assert info["hooks"] == [{"integration-name": "Cognigy.AI", "python-modules": ["cognigy_provider.hooks.cognigy"]}]
    assert info["sensors"][0]["python-modules"] == ["cognigy_provider.sensors.cognigy"]


def test_the_form_relabels_and_hides_the_standard_fields(facts: dict) -> None:
    form = facts["form"]
    assert form and form["hook_name"] == "Cognigy.AI"
    std = form["standard_fields"]
    assert std["host"]["title"] == "Base URL"
    assert std["login"]["title"] == "OAuth2 client id"
    assert "API key" in std["password"]["title"] and "client secret" in std["password"]["title"]
    assert std["port"]["hidden"] and std["url_schema"]["hidden"]


def test_the_form_has_the_cognigy_fields_with_help_text(facts: dict) -> None:
    extra = facts["form"]["extra_fields"]
    assert {"api", "token_url", "scopes", "verify", "ca_bundle", "timeout", "console_url"} <= set(extra)
    assert extra["api"]["schema"]["enum"] == ["rest-v2", "training-jobs"]
    assert extra["api"]["value"] == "rest-v2"
    assert extra["verify"]["value"] is True  # TLS verification is on unless someone turns it off
    assert extra["timeout"]["schema"]["minimum"] >= 1
    for name, field in extra.items():
        assert field["schema"].get("title"), name
        assert field["description"], name


def test_what_the_form_saves_is_what_the_hook_reads(facts: dict) -> None:
    config = facts["config"]
    assert config["base_url"] == FORM_SAVED["host"]
    assert config["dialect"] == "rest-v2"
    assert config["oauth"] is True  # a client id is set, so the password is the client secret
    assert config["token_url"] == FORM_SAVED["extra"]["token_url"]
    assert config["scopes"] == "nlu:train nlu:read"
    assert config["verify"] is True and config["timeout"] == 45


def test_airflow_providers_list_shows_the_package(tmp_path: Path) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    out = subprocess.run([airflow, "providers", "list", "-o", "json"], env=_airflow_env(tmp_path), cwd=ROOT,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    listed = {p["package_name"]: p for p in json.loads(out.stdout[out.stdout.index("[") :])}
    assert listed["airflow-provider-cognigy"]["version"] == "0.2.0"


def test_the_hook_refuses_a_connection_of_another_type(monkeypatch) -> None:
    """An `http` connection named like the Cognigy one is refused, naming both types, before any request."""
    from cognigy_provider.hooks.cognigy import CognigyHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_COGNIGY_WRONG_TYPE",
        json.dumps({"conn_type": "http", "host": "https://api-app.cognigy.ai", "password": "k"}),
    )
    with pytest.raises(ValueError, match=r"'cognigy_wrong_type' is of type 'http'.*type 'cognigy'"):
        CognigyHook("cognigy_wrong_type").get_config()
