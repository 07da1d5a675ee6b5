"""Start and stop the real processes the tests (and `make run`) talk to.

Every server binds 127.0.0.1 on a free port, keeps its state under a directory the caller owns,
and is stopped with its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException as exc:  # not up yet
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


EMULATOR_API_KEY = "emulator-api-key"
EMULATOR_CLIENT_ID = "emulator-client"
EMULATOR_CLIENT_SECRET = "emulator-client-secret"


@dataclass
class Emulator(Server):
    api_key: str = EMULATOR_API_KEY
    client_id: str = EMULATOR_CLIENT_ID
    client_secret: str = EMULATOR_CLIENT_SECRET

    def knobs(self, **changes: object) -> dict:
        """Read the knobs, or change some of them (PATCH) and return the result."""
        if changes:
            resp = requests.patch(f"{self.url}/_emulator/knobs", json=changes, timeout=10)
        else:
            resp = requests.get(f"{self.url}/_emulator/knobs", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict:
        resp = requests.get(f"{self.url}/_emulator/stats", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_emulator/reset", timeout=60).raise_for_status()

    def create_flow(
        self,
        project_id: str,
        flow_id: str,
        name: str,
        locales: dict[str, dict[str, list[str]]],
        *,
        trained: bool | dict[str, bool] = True,
        endpoint: str | None = None,
        endpoint_channel: str = "webchat",
        reference_id: str | None = None,
    ) -> dict:
        """Create (or replace) a flow with {locale name: {intent: [sentences]}}; trained locales serve at once.

        `trained` is one flag for every locale or {locale name: flag}. Returns the ids: {project_id,
        flow_id (also as _id), reference_id (also as referenceId), name, locale_ids: {name: _id},
        locales: {name: {locale_id, reference_id, model_id, version_id, trained}},
        endpoint: {_id, referenceId, name, channel, URLToken} | None}."""
        flags = trained if isinstance(trained, dict) else dict.fromkeys(locales, trained)
        body: dict = {
            "project_id": project_id,
            "flow_id": flow_id,
            "name": name,
            "locales": {loc: {"intents": intents, "trained": flags.get(loc, True)} for loc, intents in locales.items()},
            "endpoint": endpoint,
            "endpoint_channel": endpoint_channel,
        }
        if reference_id is not None:
            body["reference_id"] = reference_id
        resp = requests.post(f"{self.url}/_emulator/flows", json=body, timeout=300)
        if resp.status_code >= 400:
            raise RuntimeError(f"create_flow failed with {resp.status_code}: {resp.text}")
        return resp.json()

    def timeline(self, flow_id: str, locale: str) -> dict:
        """Serving timeline of a flow in a locale (by NAME): {flow_id, locale, endpoint_served, endpoints,
        entries: [{task_id, version_id, since, until}]} (epoch seconds; until None = still serving)."""
        resp = requests.get(f"{self.url}/_emulator/timeline", params={"flowId": flow_id, "locale": locale}, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def _admin(self, method: str, path: str, **kwargs: object) -> dict:
        resp = requests.request(method, f"{self.url}/_emulator{path}", timeout=60, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} /_emulator{path} failed with {resp.status_code}: {resp.text}")
        return resp.json()

    def add_snapshot(self, project_id: str, name: str, description: str = "", created_by: str | None = None) -> dict:
        """A snapshot of the project's current state, at once and without a task (still limited by the
        max_snapshots knob). Returns {_id, name, description, hash, createdAt, createdBy, isPackaged}."""
        body: dict = {"projectId": project_id, "name": name, "description": description}
        if created_by is not None:
            body["created_by"] = created_by
        return self._admin("POST", "/snapshots", json=body)

    def endpoint_serving(self, endpoint_id: str) -> dict:
        """What the endpoint serves now: {endpoint, entrypoint, kind: "project" | "snapshot",
        snapshot: {_id, name, hash} | None, flow_id, locale (NAME), model_id, version_id}."""
        return self._admin("GET", f"/endpoints/{endpoint_id}/serving")

    def endpoint_score(self, endpoint_id: str, sentence: str, locale: str | None = None) -> dict:
        """Scores from the model the endpoint serves (locale NAME, default the endpoint's):
        {scores: [{id, name, score, negated, ..., flow}] (best first), model_id, version_id}."""
        body: dict = {"sentence": sentence}
        if locale is not None:
            body["locale"] = locale
        return self._admin("POST", f"/endpoints/{endpoint_id}/score", json=body)

    def add_endpoint(self, project_id: str, flow_id: str, name: str, channel: str = "webchat") -> dict:
        """Another endpoint serving the flow (on the live project); returns it as `GET /endpoints/{id}` does."""
        body = {"projectId": project_id, "flowId": flow_id, "name": name, "channel": channel}
        return self._admin("POST", "/endpoints", json=body)

    def endpoint_history(self, endpoint_id: str) -> list[dict]:
        """Every change of what the endpoint serves, oldest first: [{at (epoch seconds), old_entrypoint,
        new_entrypoint, old_flow_id, new_flow_id, old_locale_id, new_locale_id}]."""
        return self._admin("GET", f"/endpoints/{endpoint_id}/history")["entries"]


def start_emulator(
    state_dir: Path,
    port: int | None = None,
    *,
    api_key: str = EMULATOR_API_KEY,
    client_id: str = EMULATOR_CLIENT_ID,
    client_secret: str = EMULATOR_CLIENT_SECRET,
    **env: str,
) -> Emulator:
    """An emulator on 127.0.0.1 accepting these credentials. They travel in the environment, not in argv,
    so they never show in a process list."""
    port = port or free_port()
    argv = [
        sys.executable, "-m", "emulator",
        "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state_dir),
    ]  # fmt: skip
    secrets = {
        "COGNIGY_EMULATOR_API_KEY": api_key,
        "COGNIGY_EMULATOR_CLIENT_ID": client_id,
        "COGNIGY_EMULATOR_CLIENT_SECRET": client_secret,
    }
    proc = _spawn(argv, state_dir / "emulator.log", {**secrets, **env})
    url = f"http://127.0.0.1:{port}"
    server = Emulator(
        url=url, proc=proc, log_path=state_dir / "emulator.log", argv=argv,
        api_key=api_key, client_id=client_id, client_secret=client_secret,
    )  # fmt: skip
    try:
        wait_http(f"{url}/_emulator/health", timeout=180, proc=proc)
    except Exception:
        server.stop()
        raise
    return server


def start_mlflow(state_dir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    argv = [
        mlflow_bin, "server",
        "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}",
        "--default-artifact-root", str(state_dir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # Job execution (MLflow's GenAI job runner: a huey pool) is not used here and slows start-up a lot.
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = _spawn(argv, state_dir / "mlflow.log", env)
    url = f"http://127.0.0.1:{port}"
    server = Server(url=url, proc=proc, log_path=state_dir / "mlflow.log", argv=argv)
    try:
        wait_http(f"{url}/health", timeout=240, proc=proc)
    except Exception:
        server.stop()
        raise
    return server
