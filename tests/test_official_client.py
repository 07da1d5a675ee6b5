"""Cognigy's official REST client (@cognigy/rest-api-client, pinned in tests/official_client/package.json) drives
the emulator through every call the product makes; a call the client cannot complete, or whose answer lacks what
its consumer needs, fails here under the call's own name.

The script is tests/official_client/drive.mjs: one JSON line per call, kept in test-artifacts/official-client-run.jsonl.
Node and npm are required: without them these tests FAIL (a test whose tool is missing fails). `npm ci` runs once
per session, from the committed package-lock.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import Emulator
from emulator.seed import FLOW_ID, FLOW_REFERENCE_ID, LOCALE_IDS, PROJECT_ID, STAGING_FLOW_ID

CLIENT_DIR = Path(__file__).resolve().parent / "official_client"
# The run's JSON lines, kept for reading (git-ignored): each line's `notes` lists the fields the client's types declare
# that the emulator's answer lacks or types differently (tolerated by the client at run time).
RUN_LOG = CLIENT_DIR.parents[1] / "test-artifacts" / "official-client-run.jsonl"
# Every call drive.mjs makes, in its order (readTask.notFound: an error answer decodes into the client's class).
CALLS = [
    "readFlow",
    "indexLocales",
    "indexIntents",
    "exportIntents",
    "importIntents",
    "readTask",
    "trainIntents",
    "cancelTask",
    "indexTasks",
    "indexEndpoints",
    "readEndpoint",
    "createSnapshot",
    "indexSnapshots",
    "readSnapshot",
    "updateEndpoint",
    "deleteSnapshot",
    "generateNluScores",
    "readTask.notFound",
]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: tests/test_official_client.py needs Node.js (>= 18.17.1) and npm to run "
            "Cognigy's official client against the emulator (Debian: apt-get install nodejs npm)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def official_client() -> Path:
    """tests/official_client with its node_modules installed exactly as package-lock.json pins them."""
    npm = _tool("npm")
    _tool("node")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci in {CLIENT_DIR} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    return CLIENT_DIR


@dataclass(repr=False)
class Drive:
    lines: dict[str, dict[str, Any]]  # call name -> its JSON line
    run: subprocess.CompletedProcess

    def __repr__(self) -> str:  # what a failing test shows for the fixture
        failed = [call for call, line in self.lines.items() if not line["ok"]]
        return f"<drive.mjs exit {self.run.returncode}, {len(self.lines)} calls, failed: {failed}>"


@pytest.fixture(scope="module")
def drive(official_client: Path, emulator: Emulator) -> Iterator[Drive]:
    """One run of drive.mjs against the session emulator at its seed state."""
    emulator.reset()
    argv = [
        _tool("node"),
        "drive.mjs",
        "--base-url", emulator.url,
        "--api-key", emulator.api_key,
        "--project-id", PROJECT_ID,
        "--flow-id", FLOW_ID,
        "--staging-flow-id", STAGING_FLOW_ID,
        "--locale-id", LOCALE_IDS["en-US"],
        "--second-locale-id", LOCALE_IDS["de-DE"],
        "--flow-reference-id", FLOW_REFERENCE_ID,
    ]  # fmt: skip
    try:
        run = subprocess.run(argv, cwd=official_client, capture_output=True, text=True, timeout=900)
    finally:
        emulator.reset()  # the run trained and imported into the staging flow: leave the seed state behind
    RUN_LOG.parent.mkdir(exist_ok=True)
    RUN_LOG.write_text(run.stdout, encoding="utf-8")
    lines: dict[str, dict[str, Any]] = {}
    for raw in run.stdout.splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            lines[line["call"]] = line
    yield Drive(lines, run)


@pytest.mark.parametrize("call", CALLS)
def test_official_client_call(drive: Drive, call: str) -> None:
    line = drive.lines.get(call)
    run = drive.run
    assert line is not None, f"drive.mjs printed no line for {call} (exit {run.returncode}); stderr:\n{run.stderr}"
    http = f" (HTTP {line['status']}; statuses of the step's requests: {line['statuses']})" if "status" in line else ""
    assert line["ok"], f"{call} through @cognigy/rest-api-client failed: {line.get('error')}{http}"


def test_driver_exit_status(drive: Drive) -> None:
    """The script's own contract: a line for every call and no other, exit 1 exactly when a call failed."""
    lines, run = drive.lines, drive.run
    assert sorted(lines) == sorted(CALLS), f"calls printed: {sorted(lines)}; stderr:\n{run.stderr}"
    failed = [call for call, line in lines.items() if not line["ok"]]
    assert run.returncode == (1 if failed else 0), f"exit {run.returncode} with failed calls {failed}:\n{run.stderr}"
