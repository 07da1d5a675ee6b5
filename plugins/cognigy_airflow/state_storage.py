"""The state store on the Airflow side: ``COGNIGY_RETRAIN_STATE_URI`` opened as an ``ObjectStoragePath``.

`include.state.state_store` does every read and write (it imports no Airflow); this module only tells it how a
non-file URI becomes a path: ``ObjectStoragePath(uri, conn_id=...)``, the connection being the one named in the
URI (``s3://conn_id@bucket/prefix``), else ``COGNIGY_RETRAIN_STATE_CONN_ID``, else the store's default credential
chain (an instance role on MWAA, a workload identity on Astronomer, a managed identity on Azure).

Which file system serves a scheme: Airflow's, when a provider registers one (s3:// comes from
apache-airflow-providers-amazon + s3fs). ``gs://`` and ``abfs://`` / ``az://`` need no provider: when none is
installed for them, the file system is built here from the connection, straight from gcsfs
(``gcsfs.core.GCSFileSystem``, the JSON API) or adlfs (``AzureBlobFileSystem``), and attached to Airflow's store
cache, so every ``ObjectStoragePath`` of that scheme and connection uses it (:func:`_fallback_fs` lists the
connection fields read). With apache-airflow-providers-google / -microsoft-azure installed, their file systems
are used instead. `include.state.state_store.create_exclusive` checks which package serves the scheme.

Imported by ``cognigy_airflow/__init__.py``: any task that imports the plugins can open the store.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from include import settings
from include.state import state_store

GCS_SCHEMES = frozenset({"gs", "gcs"})
AZURE_SCHEMES = frozenset({"abfs", "abfss", "az"})
# the connection's extra keys handed to the file system as they are (secrets stay in the connection)
_GCS_EXTRA = ("project", "endpoint_url", "token", "requester_pays")
_AZURE_EXTRA = ("account_name", "account_key", "connection_string", "sas_token", "tenant_id", "client_id",
                "client_secret", "account_host")  # fmt: skip


def open_uri(uri: str) -> Any:
    """An ObjectStoragePath for a store URI (a connection id in the URI wins over the setting)."""
    from airflow.sdk import ObjectStoragePath

    parts = urlsplit(uri)
    conn_id = None if parts.username else settings.state_conn_id()
    _attach_fallback(parts.scheme, parts.username or conn_id)  # before the path: it looks up the store at once
    return ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)


def _attach_fallback(scheme: str, conn_id: str | None) -> None:
    """For gs:// and abfs:// / az:// without an Airflow provider: give Airflow's store (protocol, connection)
    the gcsfs / adlfs file system built from the connection."""
    if scheme not in GCS_SCHEMES | AZURE_SCHEMES:
        return
    from airflow.sdk.io import attach, has_fs

    if has_fs(scheme):
        return  # a provider serves it
    store = attach(scheme, conn_id)
    if "fs" not in vars(store):  # not built yet (fs is a cached property of the store)
        store.fs = _fallback_fs(scheme, conn_id)


def _fallback_fs(scheme: str, conn_id: str | None) -> Any:
    """The file system for a connection (None: the default credentials).

    gs:// (conn type ``google_cloud_platform``): extra ``keyfile_dict`` (the service-account JSON) or
    ``key_path`` (a file), else extra ``token`` (gcsfs: ``google_default``, ``cloud``, ``anon``), else the
    default credentials; extra ``project``, ``endpoint_url`` (another endpoint than Google's), ``requester_pays``.

    abfs:// / az:// (conn type ``wasb``): login = storage account name, password = account key; or extra
    ``connection_string``, ``sas_token``, or ``tenant_id`` + ``client_id`` + ``client_secret`` (a service
    principal); none of them = DefaultAzureCredential (managed identity, workload identity); extra
    ``account_host`` for another endpoint."""
    options: dict[str, Any] = {}
    conn = None
    if conn_id:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    extra = (conn.extra_dejson if conn else {}) or {}
    if scheme in GCS_SCHEMES:
        GCSFileSystem = _import(scheme, "gcsfs.core", "GCSFileSystem")  # the JSON API one, not gcsfs's default

        options.update({k: extra[k] for k in _GCS_EXTRA if extra.get(k) not in (None, "")})
        keyfile = extra.get("keyfile_dict")
        if keyfile:
            options["token"] = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
        elif extra.get("key_path"):
            options["token"] = extra["key_path"]
        return GCSFileSystem(**options)
    AzureBlobFileSystem = _import(scheme, "adlfs", "AzureBlobFileSystem")
    # the Azure SDK logs every request's and answer's headers at INFO (about 25 lines a state file): keep task
    # logs readable; its warnings and errors still show
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    options.update({k: extra[k] for k in _AZURE_EXTRA if extra.get(k) not in (None, "")})
    if conn is not None and conn.login and "connection_string" not in options:
        options.setdefault("account_name", conn.login)
    if conn is not None and conn.password and "connection_string" not in options:
        options.setdefault("account_key", conn.password)
    return AzureBlobFileSystem(**options)


def _import(scheme: str, module: str, name: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        package = module.split(".")[0]
        raise state_store.StateStoreUnsupported(
            f"COGNIGY_RETRAIN_STATE_URI={scheme}://…: needs the package {package} (see the README, "
            f'"Deploy: state in object storage", for the pinned version)'
        ) from exc


state_store.register_opener(open_uri)
