"""A real Azure Blob Storage API on 127.0.0.1 for the state store: Azurite (the npm package, pinned here).

Azurite is installed project-locally on first use (:func:`ensure_azurite`: ``npm install --prefix
.venv/npm/azurite-<version>``; needs Node.js and npm, nothing by hand) and runs its blob service only, on a free
loopback port, in its own process group, with its files and log in the caller's folder and one storage account of
test credentials (never the well-known development key). Azurite answers a Put Blob with ``If-None-Match: *`` on
an existing blob with 409 BlobAlreadyExists (the state store's create-exclusive through adlfs). The state store
reaches it the way a deployment reaches Azure: ``COGNIGY_RETRAIN_STATE_URI=abfs://<conn_id>@<container>/<prefix>``
(:func:`abfs_uri`) and the Airflow connection :func:`connection_json` in ``AIRFLOW_CONN_COGNIGY_STATE_AZURE``
(:data:`CONN_ENV`). Used by tests/fixtures_blob_stores.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from devtools.servers import ROOT, Server, free_port, wait_http

# 3.35.0: the newest Azurite that runs on Node 20 (3.36 needs Node 21, 3.37 Node 22)
AZURITE_VERSION = "3.35.0"
INSTALL_DIR = ROOT / ".venv" / "npm" / f"azurite-{AZURITE_VERSION}"
CONN_ID = "cognigy_state_azure"
CONN_ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"
CONTAINER = "cognigy-state"
ACCOUNT = "cognigystate"
ACCOUNT_KEY = base64.b64encode(b"state-test-azure-key-do-not-log!").decode()


class NodeMissing(RuntimeError):
    """Node.js is not installed: Azurite cannot run."""


def abfs_uri(prefix: str = "state", scheme: str = "abfs") -> str:
    """A fresh state root in the container: ``abfs://<conn_id>@<container>/<prefix>-<hex>`` (or ``az://``)."""
    return f"{scheme}://{CONN_ID}@{CONTAINER}/{prefix}-{uuid.uuid4().hex[:10]}"


def connection_string(url: str) -> str:
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={url};"


def connection_json(url: str) -> str:
    """The Airflow connection (conn type `wasb`: account in login, key in password, and the emulator's address as
    a connection string in extra) as AIRFLOW_CONN_* JSON."""
    conn = {
        "conn_type": "wasb",
        "login": ACCOUNT,
        "password": ACCOUNT_KEY,
        "extra": {"connection_string": connection_string(url)},
    }
    return json.dumps(conn)


def ensure_azurite() -> Path:
    """The `azurite-blob` launcher, installed with npm into .venv/npm/ the first time (about 15 s)."""
    if shutil.which("node") is None:
        raise NodeMissing("Azurite (the Azure Blob Storage emulator) needs Node.js: `node` is not on PATH")
    launcher = INSTALL_DIR / "node_modules" / ".bin" / "azurite-blob"
    if launcher.exists():
        return launcher
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("Azurite is installed with npm, which is not on PATH (Node.js is)")
    staging = INSTALL_DIR.with_name(f"{INSTALL_DIR.name}.{uuid.uuid4().hex[:8]}.tmp")  # concurrent installs
    staging.mkdir(parents=True)
    try:
        subprocess.run(
            [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--loglevel=error",
             f"azurite@{AZURITE_VERSION}"],
            check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        try:
            staging.rename(INSTALL_DIR)
        except OSError:  # another process installed it meanwhile
            if not launcher.exists():
                raise
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"npm install azurite@{AZURITE_VERSION} failed: {exc.stderr[-2000:]}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return launcher


def start_azurite(work_dir: Path, timeout: float = 60) -> Server:
    """Azurite's blob service on 127.0.0.1:<free port>, its data in `work_dir`, with the container created."""
    launcher = ensure_azurite()
    port = free_port()
    url = f"http://127.0.0.1:{port}/{ACCOUNT}"
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "azurite.log"
    argv = [
        str(launcher), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(work_dir / "data"),
        "--skipApiVersionCheck", "--disableProductStyleUrl",
    ]  # fmt: skip
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{ACCOUNT_KEY}"}  # the key never shows in argv
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=url, proc=proc, log_path=log_path, argv=argv)
    try:
        wait_http(f"{url}?comp=list", timeout=timeout, proc=proc)
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(connection_string(url)) as client:
            client.create_container(CONTAINER)
    except BaseException:
        server.stop()
        raise
    return server
