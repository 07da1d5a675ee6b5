"""A person triggers a dry run from the Airflow UI's trigger form, in Debian's chromium driven by Playwright: the form
will not trigger until the bot and its locale are named (no demo defaults), then starts the run it was given.

Runs against the session's distributed Airflow stack (tests/fixtures_airflow_stack.py). Screenshots go to
test-artifacts/ (git-ignored): trigger-form.png (the filled form), triggered-run.png (the run in the UI).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.deployment import ADMIN_USER, DAG_ID
from devtools.distributed import AirflowStack
from devtools.servers import ROOT
from include import defaults

pytest_plugins = ["tests.fixtures_airflow_stack"]
pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Debian's browser, never a downloaded one; the network flags keep it from calling home on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "test-artifacts"
NEW_LOCALE = "de-DE"
TARGET_SECTION = "Target (required: the bot and locale to retrain)"
# The emulator's demo bot, named in the form as a person names theirs (the form has no defaults for it).
TARGET = {"project_id": defaults.DEMO_PROJECT_ID, "flow_id": defaults.DEMO_FLOW_ID, "locales": NEW_LOCALE,
          "model_id": defaults.DEMO_MODEL_ID}  # fmt: skip


CHROMIUM_MISSING = f"no {CHROMIUM}: `make browser` installs Debian's chromium (apt, as root; `make test` runs it first)"


def test_chromium_is_installed() -> None:
    """Checked before the stack starts, so a missing browser fails in seconds (never skips)."""
    assert CHROMIUM.exists(), CHROMIUM_MISSING
    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "Chromium" in version.stdout, (version.stdout, version.stderr)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(CHROMIUM_MISSING, pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_trigger_form_starts_a_dry_run(browser, airflow_stack: AirflowStack) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    stack = airflow_stack
    before = {r["dag_run_id"] for r in stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]}
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(30_000)
    try:
        # Sign in as a person would (simple auth manager's login page), landing on the DAG's page.
        page.goto(f"{stack.api_url}/dags/{DAG_ID}")
        page.get_by_label("Username").fill(ADMIN_USER)
        page.get_by_label("Password").fill(stack.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**/dags/{DAG_ID}**")

        page.get_by_role("button", name="Trigger Dag").click()
        form = page.get_by_role("dialog")
        trigger = form.get_by_role("button", name="Trigger", exact=True)
        expect(form.get_by_text(f"Trigger Dag - {DAG_ID}")).to_be_visible()
        # The target has no defaults (nothing of the demo reaches a tenant by accident): Trigger waits for it.
        expect(trigger).to_be_disabled()

        form.get_by_role("button", name="Run", exact=True).click()
        dry_run = form.locator("[name=element_dry_run]")
        form.locator("label:has([name=element_dry_run])").click()
        expect(dry_run).to_be_checked()

        form.get_by_role("button", name=TARGET_SECTION).click()
        for name, value in TARGET.items():
            field = form.locator(f"[name=element_{name}]")
            field.fill(value)
            expect(field).to_have_value(value)
        # Staging promotion (the default) needs the staging flow, which has no default either.
        form.get_by_role("button", name="Training", exact=True).click()
        staging = form.locator("[name=element_staging_flow_id]")
        staging.fill(defaults.DEMO_STAGING_FLOW_ID)
        expect(staging).to_have_value(defaults.DEMO_STAGING_FLOW_ID)
        # A held-out set must be named (the defaults never pick the demo data): the demo's, by name.
        form.get_by_role("button", name="Evaluation and quality gates").click()
        held_out = form.locator("[name=element_held_out_uri]")
        held_out.fill("demo")
        expect(held_out).to_have_value("demo")
        try:
            expect(trigger).to_be_enabled()
        except AssertionError:
            page.screenshot(path=str(ARTIFACTS / "trigger-form-invalid.png"), full_page=True)
            pytest.fail(
                "the filled-in trigger form refuses to trigger. Required fields left empty: "
                f"{_empty_required_fields(form)} (a string param whose default is '' must allow null). "
                "See test-artifacts/trigger-form-invalid.png"
            )
        page.screenshot(path=str(ARTIFACTS / "trigger-form.png"), animations="disabled")

        trigger.click()
        expect(form).to_be_hidden(timeout=30_000)  # the dialog closes when the API answered: slow on a loaded machine
        run = _wait_for_new_run(stack, before)
        assert run["conf"]["dry_run"] is True, run["conf"]
        assert run["conf"]["locales"] == [NEW_LOCALE], run["conf"]
        assert {k: run["conf"][k] for k in ("project_id", "flow_id", "model_id")} == {
            k: v for k, v in TARGET.items() if k != "locales"
        }, run["conf"]
        assert run["conf"]["held_out_uri"] == "demo", run["conf"]

        # The run shows up in the UI's list of runs.
        page.goto(f"{stack.api_url}/dags/{DAG_ID}/runs")
        expect(page.get_by_test_id("table-cell-dag_run_id").get_by_text(run["dag_run_id"])).to_be_visible(
            timeout=30_000
        )
        page.screenshot(path=str(ARTIFACTS / "triggered-run.png"), full_page=True)

        # A dry run validates and stops: it must end well (and free the DAG's single active-run slot).
        assert stack.wait_for_run(run["dag_run_id"], timeout=240)["state"] == "success"
    except Exception as exc:  # an expect() or a Playwright timeout: attach the screen and the process logs
        page.screenshot(path=str(ARTIFACTS / "browser-failure.png"), full_page=True)
        raise AssertionError(f"{exc}\n\n{stack.tails()}") from exc
    finally:
        page.close()


def _empty_required_fields(form) -> list[str]:
    """Params the form marks required but holds empty, found by opening every section of the form."""
    empty: set[str] = set()
    for section in form.locator("[data-part=item-trigger]").all():
        section.click()
        for field in form.locator("input[required]:not([type=checkbox]), textarea[required]").all():
            if field.input_value() == "":
                empty.add((field.get_attribute("name") or "?").removeprefix("element_"))
    return sorted(empty)


def _wait_for_new_run(stack: AirflowStack, before: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        new = [r for r in runs if r["dag_run_id"] not in before]
        if new:
            return new[0]
        time.sleep(0.5)
    raise AssertionError("the form's Trigger created no DAG run")
