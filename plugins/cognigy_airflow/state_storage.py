"""The state store on the Airflow side: ``COGNIGY_RETRAIN_STATE_URI`` opened as an ``ObjectStoragePath``.

`include.state.state_store` does every read and write (it imports no Airflow); this module only tells it how a
non-file URI becomes a path: ``ObjectStoragePath(uri, conn_id=...)``, the connection being the one named in the
URI (``s3://conn_id@bucket/prefix``), else ``COGNIGY_RETRAIN_STATE_CONN_ID``, else the provider's default
credential chain (an instance role on MWAA, a workload identity on Astronomer). The S3 file system comes from
apache-airflow-providers-amazon + s3fs; gs:// and abfs:// read and write through their providers, but their
create-if-absent is not known to be atomic here, so `include.state.state_store.create_exclusive` refuses them.

Imported by ``cognigy_airflow/__init__.py``: any task that imports the plugins can open the store.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from include import settings
from include.state import state_store


def open_uri(uri: str) -> Any:
    """An ObjectStoragePath for a store URI (a connection id in the URI wins over the setting)."""
    from airflow.sdk import ObjectStoragePath

    conn_id = None if urlsplit(uri).username else settings.state_conn_id()
    return ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)


state_store.register_opener(open_uri)
