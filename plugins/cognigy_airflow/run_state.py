"""Per task-instance memory that survives retries: Airflow 3.3's task_state_store, or a file (an object in the
state store, `include.state.state_store`) as fallback.

XComs are cleared when a task retries, so they cannot carry "I already started training job X".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from include.state import state_store

RETENTION = timedelta(days=7)


class RunState:
    def __init__(self, context: Any, fallback_file: Any) -> None:
        self._store = context.get("task_state_store") if hasattr(context, "get") else None
        self._file = fallback_file

    def get(self, key: str) -> Any:
        """The store's value, else the file's: a try whose store write failed still left the file copy."""
        if self._store is not None:
            try:
                value = self._store.get(key)
            except Exception:  # store not reachable (e.g. `airflow dags test` without API): use the file
                self._store = None
            else:
                if value is not None:
                    return value
        return (state_store.read_json(self._file) or {}).get(key)

    def set(self, key: str, value: Any) -> None:
        # Always keep the file copy too: it is what a person inspects when reconciling by hand.
        data = state_store.read_json(self._file) or {}
        data[key] = value
        state_store.write_json(self._file, data)
        if self._store is not None:
            try:
                self._store.set(key, value, retention=RETENTION)
            except Exception:
                self._store = None
