"""The task engine: one background thread that drives every task from persisted state.

A task's progress is a pure function of its stored times (created_at, started_at, duration), so a
restarted emulator resumes tasks where the clock says they are. Both dialects share this engine; the
training-jobs dialect only renames statuses. Model versions and the serving pointer live in the store.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from sklearn.pipeline import Pipeline

from emulator import classifier, seed
from emulator.ids import intent_id, object_id
from emulator.knobs import KnobState
from emulator.store import SnapshotLimitError, Store, snapshot_in_use_detail
from include.data import dataset

log = logging.getLogger("emulator.engine")

QUEUE_SECONDS = 0.3  # queued -> active
IMPORT_SECONDS = 0.1  # active import -> done
SNAPSHOT_SECONDS = 1.0  # active createSnapshot / deleteSnapshot -> done
TICK_SECONDS = 0.05
TRAINING_LIMIT_SECONDS = 600.0  # Cognigy: an intent training runs at most 10 minutes
TRAINING_LIMIT_REASON = "Intent training exceeded the 10 minute limit"
MAX_SENTENCES_PER_INTENT = 200
MAX_INTENTS_PER_FLOW = 2500
TERMINAL_STATUSES = ("done", "cancelled", "error", "rolled_back")
IMPORT_MODES = ("skip", "overwrite", "merge")
INJECTED_IMPORT_FAILURE = "Import failed: the uploaded file could not be processed"


class TaskFinishedError(Exception):
    """The task is already in a terminal status."""


def merge_intents(
    current: Mapping[str, Sequence[str]], incoming: Mapping[str, Sequence[str]], mode: str
) -> dict[str, list[str]]:
    """Cognigy import semantics: overwrite = exactly the file; merge = union of sentences; skip = only new."""
    if mode == "overwrite":
        return {name: list(sentences) for name, sentences in incoming.items()}
    result = {name: list(sentences) for name, sentences in current.items()}
    for name, sentences in incoming.items():
        if name not in result:
            result[name] = list(sentences)
        elif mode == "merge":
            known = set(result[name])
            result[name] += [s for s in sentences if s not in known and not known.add(s)]
    return result


def limit_violation(intents: Mapping[str, Sequence[str]]) -> str | None:
    """The first platform limit the intents break, as a message naming the intent, else None."""
    if len(intents) > MAX_INTENTS_PER_FLOW:
        names = list(intents)
        return (
            f"Too many intents: {len(intents)} > {MAX_INTENTS_PER_FLOW} per flow "
            f"(first intent over the limit: '{names[MAX_INTENTS_PER_FLOW]}')"
        )
    for name, sentences in intents.items():
        if len(sentences) > MAX_SENTENCES_PER_INTENT:
            return (
                f"Intent '{name}' has {len(sentences)} example sentences; "
                f"the limit is {MAX_SENTENCES_PER_INTENT} per intent"
            )
    return None


class Engine:
    def __init__(self, store: Store, knobs: KnobState, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.knobs = knobs
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], Pipeline] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="emulator-tasks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:
                log.exception("task engine tick failed")

    def reset(self) -> None:
        """Back to the seed tenant (issued tokens stay valid)."""
        with self.store.transaction():
            self.store.wipe_tenant_state()
            seed.seed(self.store)
        with self._cache_lock:
            self._cache.clear()

    # --- creating and cancelling ----------------------------------------------------------------------
    def create_task(
        self,
        *,
        dialect: str,
        task_type: str,
        model: Mapping[str, Any] | None,
        project_id: str,
        parameters: dict[str, Any],
        payload: dict[str, Any] | None,
        duration: float,
        deadline: float | None = None,
        deadline_reason: str | None = None,
        task_id: str | None = None,
        version_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock()
        task_id = task_id or object_id(now)
        self.store.add_task(
            {
                "id": task_id,
                "dialect": dialect,
                "type": task_type,
                "project_id": project_id,
                "flow_id": model["flow_id"] if model else "",  # '': a project-wide task (snapshots)
                "locale_id": model["locale_id"] if model else "",
                "model_id": model["id"] if model else "",
                "status": "queued",
                "parameters": parameters,
                "payload": payload,
                "created_at": now,
                "last_changed": now,
                "duration": duration,
                "deadline": deadline,
                "deadline_reason": deadline_reason,
                "version_id": version_id or (str(uuid.uuid4()) if task_type == "trainIntents" else None),
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "created_by": seed.API_USER_ID,
            }
        )
        task = self.store.get_task(task_id)
        assert task is not None
        if task_type == "trainIntents":
            log.info("training task %s started for model %s (%s)", task_id, model["id"], dialect)
        return task

    def cancel(self, task_id: str) -> dict[str, Any]:
        with self.store.transaction():
            task = self.store.get_task(task_id)
            if task is None:
                raise KeyError(task_id)
            if task["status"] in TERMINAL_STATUSES:
                raise TaskFinishedError(task["status"])
            if task["status"] != "cancelling":
                self.store.update_task(task_id, status="cancelling", last_changed=self.clock())
            return self.store.get_task(task_id) or task

    # --- views ----------------------------------------------------------------------------------------
    def current_step(self, task: Mapping[str, Any], now: float | None = None) -> int:
        """0..100, growing linearly over the task's duration while it is active."""
        status = task["status"]
        if status == "done":
            return 100
        if status in TERMINAL_STATUSES or task["started_at"] is None:
            return int(task["current_step"])
        now = self.clock() if now is None else now
        duration = task["duration"]
        if duration <= 0:
            return 99
        return max(0, min(99, int(100 * (now - task["started_at"]) / duration)))

    # --- the engine -----------------------------------------------------------------------------------
    def tick(self) -> None:
        for task in self.store.open_tasks():
            self._advance(task, self.clock())

    def _advance(self, task: dict[str, Any], now: float) -> None:
        if task["status"] == "cancelling":
            self.store.update_task(
                task["id"],
                only_if_status=("cancelling",),
                status="cancelled",
                finished_at=now,
                last_changed=now,
                current_step=self.current_step({**task, "status": "active"}, now),
            )
            return
        if task["status"] == "queued":
            if now < task["created_at"] + QUEUE_SECONDS:
                return
            started = task["created_at"] + QUEUE_SECONDS
            if not self.store.update_task(
                task["id"], only_if_status=("queued",), status="active", started_at=started, last_changed=now
            ):
                return
            task = {**task, "status": "active", "started_at": started}
        started, duration, deadline = task["started_at"], task["duration"], task["deadline"]
        if deadline is not None and duration > deadline:
            if now >= started + deadline:
                self._fail(task, task["deadline_reason"] or "Task exceeded its time limit", now)
            return
        if now < started + duration:
            return
        finishers = {
            "importIntents": self._finish_import,
            "createSnapshot": self._finish_create_snapshot,
            "deleteSnapshot": self._finish_delete_snapshot,
        }
        finishers.get(task["type"], self._finish_training)(task, now)

    def _mark_done(self, task: Mapping[str, Any], now: float) -> bool:
        """active -> done; False when the task is no longer active (cancelled, or the emulator was reset)."""
        return self.store.update_task(
            task["id"], only_if_status=("active",), status="done", finished_at=now, last_changed=now, current_step=100
        )

    def _fail(self, task: Mapping[str, Any], reason: str, now: float) -> None:
        step = self.current_step(task, now)
        if self.store.update_task(
            task["id"],
            only_if_status=("queued", "active"),
            status="error",
            fail_reason=reason,
            finished_at=now,
            last_changed=now,
            current_step=step,
        ):
            log.info("task %s (%s) ended in error: %s", task["id"], task["type"], reason)

    def _training_examples(self, task: Mapping[str, Any]) -> tuple[dict[str, list[str]], int | None]:
        if task["dialect"] == "cognigy":
            with self.store.lock:
                examples = self.store.intents(task["flow_id"], task["locale_id"])
                model = self.store.get_model(task["model_id"])
            revision = None if model is None else model["intents_revision"]
            return {name: s for name, s in examples.items() if s}, revision
        locale = self.store.get_locale(task["locale_id"])
        if locale is None:
            raise ValueError(f"locale {task['locale_id']} no longer exists")
        return dataset.sample_training(locale["name"], (task["payload"] or {}).get("matrix")), None

    def _finish_training(self, task: Mapping[str, Any], now: float) -> None:
        if self.knobs.take_counter("fail_next_trainings"):
            self._fail(task, self.knobs.get().fail_reason, now)
            return
        flow = self.store.get_flow(task["flow_id"])
        try:
            examples, revision = self._training_examples(task)
            ids = partial(intent_id, task["flow_id"], task["locale_id"])
            blob, report, counts = classifier.build_artifacts(
                examples, ids, task["flow_id"], flow["name"] if flow else ""
            )
        except (classifier.TrainingDataError, ValueError) as exc:
            self._fail(task, f"Intent training failed: {exc}", now)
            return
        finished = self.clock()
        with self.store.transaction():
            if not self._mark_done(task, finished):
                return  # cancelled (or the emulator was reset) while fitting: discard the model
            self.store.add_version(
                task["model_id"], task["version_id"], task["id"], finished, blob, report, counts, revision
            )
            self.store.set_active_version(task["model_id"], task["version_id"], at=finished)
        log.info(
            "training task %s done: model %s now serves version %s", task["id"], task["model_id"], task["version_id"]
        )

    def _finish_import(self, task: Mapping[str, Any], now: float) -> None:
        if self.knobs.take_counter("fail_next_imports"):
            self._fail(task, INJECTED_IMPORT_FAILURE, now)
            return
        payload = task["payload"] or {}
        incoming = {name: sentences for name, sentences in payload.get("intents", [])}
        with self.store.transaction():
            current = self.store.intents(task["flow_id"], task["locale_id"])
            result = merge_intents(current, incoming, payload.get("mode", "skip"))
            if (violation := limit_violation(result)) is not None:
                self._fail(task, violation, now)
                return
            if self._mark_done(task, now):
                self.store.replace_intents(task["flow_id"], task["locale_id"], result)

    def _finish_create_snapshot(self, task: Mapping[str, Any], now: float) -> None:
        """The snapshot freezes the project as it is when the task finishes; the limit is checked again here."""
        parameters = task["parameters"]
        try:
            with self.store.transaction():
                if self._mark_done(task, now):
                    self.store.create_snapshot(
                        object_id(now),
                        project_id=task["project_id"],
                        name=parameters["name"],
                        description=parameters["description"],
                        created_by=task["created_by"],
                        created_at=now,
                        limit=self.knobs.get().max_snapshots,
                        task_id=task["id"],
                    )
        except SnapshotLimitError as exc:  # the transaction (and the done) rolled back
            self._fail(task, str(exc), now)

    def _finish_delete_snapshot(self, task: Mapping[str, Any], now: float) -> None:
        snapshot_id = task["parameters"]["snapshotId"]
        with self.store.transaction():
            pointing = self.store.list_endpoints(entrypoint=snapshot_id)
            if self.store.get_snapshot(snapshot_id) is None:
                self._fail(task, f"Snapshot '{snapshot_id}' not found", now)
            elif pointing:  # an endpoint was switched to it after the DELETE was accepted
                self._fail(task, snapshot_in_use_detail(snapshot_id, pointing), now)
            elif self._mark_done(task, now):
                self.store.delete_snapshot(snapshot_id)

    # --- models ---------------------------------------------------------------------------------------
    def pipeline(self, model_id: str, version_id: str) -> Pipeline | None:
        key = (model_id, version_id)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        version = self.store.get_version(model_id, version_id, with_blob=True)
        if version is None:
            return None
        loaded = classifier.loads(version["blob"])
        with self._cache_lock:
            self._cache[key] = loaded
            while len(self._cache) > 16:
                self._cache.popitem(last=False)
        return loaded

    def metrics(self, model_id: str, version_id: str) -> dict[str, Any] | None:
        """Held-out metrics of a version, measured once and then kept with the version."""
        version = self.store.get_version(model_id, version_id)
        model = self.store.get_model(model_id)
        if version is None or model is None:
            return None
        if version["metrics"] is not None:
            return version["metrics"]
        locale = self.store.get_locale(model["locale_id"])
        pipeline = self.pipeline(model_id, version_id)
        assert locale is not None and pipeline is not None
        utterances = dataset.held_out(locale["name"])
        measured = classifier.evaluate(
            pipeline,
            [u.text for u in utterances],
            [u.intent for u in utterances],
            [u.slice_dict().get("channel") for u in utterances],
        )
        measured["intentDistribution"] = version["training_counts"]
        self.store.set_version_metrics(model_id, version_id, measured)
        return measured

    def stats(self) -> dict[str, Any]:
        started: dict[str, int] = {}
        by_flow_locale: dict[str, int] = {}  # both dialects, keyed by the locale's NAME
        for task in self.store.training_tasks():
            key = task["model_id"] if task["dialect"] == "jobs" else f"{task['flow_id']}/{task['locale_id']}"
            started[key] = started.get(key, 0) + 1
            named = f"{task['flow_id']}/{task['locale_name'] or task['locale_id']}"
            by_flow_locale[named] = by_flow_locale.get(named, 0) + 1
        return {
            "trainings_started": started,
            "trainings_by_flow_locale": by_flow_locale,
            "trainings_total": sum(started.values()),
            "tasks": self.store.task_status_counts(),
        }
