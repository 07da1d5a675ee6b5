"""The real Cognigy REST API v2.0: every path and JSON shape the product uses, in one place.

Management paths live under `<base>/new/v2.0`.
There is no model-version rollback: the rollback point is the intents export of the locale, restored by
importing it with mode=overwrite and retraining.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

from include.cognigy.errors import BadRequest, CognigyError, NotFound
from include.cognigy.model import JobState, JobStatus, Target
from include.cognigy.transport import Transport

PREFIX = "/new/v2.0"
MAX_BODY_BYTES = 60 * 1024
MAX_TRAINING_SECONDS = 600

_STATE: dict[str, JobState] = {
    "queued": "queued",
    "active": "running",
    "cancelling": "running",
    "done": "succeeded",
    "cancelled": "cancelled",
    "error": "failed",
}


TRAINING_TASK_TYPE = "trainIntents"
TASK_PAGE = 100  # the largest page the platform serves
MAX_TASK_PAGES = 50  # a window with more tasks than this cannot be read in a reasonable time: fail closed


def is_training_of(task: JobStatus, flow_id: str, locale_id: str) -> bool:
    """An intent training (the task's own `type`, never a filter) of exactly this flow and locale."""
    params = task.extra.get("parameters") or {}
    return (
        task.extra.get("type") == TRAINING_TASK_TYPE
        and params.get("flowId") == flow_id
        and params.get("localeId") == locale_id
    )


def seg(value: str) -> str:
    """Quote one path segment (ids are validated before, this is the second fence)."""
    return quote(str(value), safe="")


def task_path(task_id: str) -> str:
    return f"{PREFIX}/tasks/{seg(task_id)}"


def parse_task(data: dict[str, Any]) -> JobStatus:
    total = data.get("totalStep") or 0
    progress = (data.get("currentStep") or 0) / total if total else None
    raw = str(data.get("status", ""))
    return JobStatus(
        job_id=str(data["_id"]),
        state=_STATE.get(raw, "running"),
        progress=progress,
        reason=data.get("failReason"),
        raw_status=raw,
        created_at=_iso(data.get("createdAt")),
        finished_at=_iso(data.get("lastFinishedAt")),
        extra={
            "type": data.get("type") or data.get("name"),
            "parameters": data.get("parameters") or data.get("data") or {},
        },
    )


def _iso(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return datetime.fromtimestamp(float(value) / 1000).isoformat()  # epoch milliseconds


def _items(page: dict[str, Any]) -> list[dict[str, Any]]:
    return list(page.get("items") or [])


class RestV2Api:
    """Operations on a flow/locale of a real tenant. Each method is one documented API shape."""

    dialect = "rest-v2"

    def __init__(self, transport: Transport) -> None:
        self.t = transport
        self._locales: dict[str, dict[str, Any]] = {}
        self._flows: dict[str, dict[str, Any]] = {}

    # --- lookups -------------------------------------------------------------------------------------
    def locale(self, target: Target) -> dict[str, Any]:
        """The locale object {_id, referenceId, name} of the target, found by name or by id."""
        if target.locale not in self._locales:
            page = self.t.json(
                "GET",
                f"{PREFIX}/locales?projectId={seg(target.project_id)}&limit=100",
                f"GET locales of project {target.project_id}",
                safe=True,
            )
            for item in _items(page):
                self._locales[item["name"]] = item
                self._locales[item["_id"]] = item
        if target.locale not in self._locales:
            names = sorted({i["name"] for i in self._locales.values()})
            raise NotFound(f"locale {target.locale!r} not in project {target.project_id} (has: {names})")
        return self._locales[target.locale]

    def flow(self, target: Target, *, feedback: bool = False) -> dict[str, Any]:
        query = ""
        if feedback:
            query = f"?includeFeedbackReport=true&preferredLocaleId={seg(self.locale(target)['_id'])}"
        try:
            return self.t.json("GET", f"{PREFIX}/flows/{seg(target.flow_id)}{query}", "GET flow", safe=True)
        except NotFound as exc:
            raise NotFound(f"flow {target.flow_id} not found: check flowId and the connection's tenant") from exc

    # --- training ------------------------------------------------------------------------------------
    def start_training(self, target: Target, mode: str) -> JobStatus:
        """POST the training; the task's `extra["server_time"]` is the answer's `Date` (the server's clock)."""
        from include.cognigy.model import server_time_of
        from include.cognigy.problems import decode_json

        body = {"localeId": self.locale(target)["_id"], "mode": mode}
        what = f"POST train intents (flow {target.flow_id}, locale {target.locale})"
        resp = self.t.request(
            "POST", f"{PREFIX}/flows/{seg(target.flow_id)}/intents/train", what, safe=False, json=body
        )
        status = parse_task(decode_json(resp.content, what))
        status.extra["server_time"] = server_time_of(resp.headers)
        return status

    def job_status(self, job_id: str) -> JobStatus:
        return parse_task(self.t.json("GET", task_path(job_id), f"GET task {job_id}", safe=True))

    def cancel(self, job_id: str) -> None:
        # Cancelling twice is harmless, so this call may be retried.
        self.t.json("POST", f"{task_path(job_id)}/cancel", f"POST cancel task {job_id}", safe=True, json={})

    def recent_trainings(self, target: Target, since_epoch: float) -> list[JobStatus]:
        """trainIntents tasks for this flow/locale created at or after `since_epoch` (reconciliation; a server
        time, see `model.SERVER_CLOCK_MARGIN_SECONDS`): a `model.Trainings` carrying the server's clock of the
        first read.

        The task list holds every kind of task (imports, snapshots, ... carry the same `parameters`) and has no
        documented `type` filter: each item's own `type` decides. Pages are read newest first until one reaches
        past the window (a task created before `since_epoch`, margin allowed) or the list ends.
        """
        from include.cognigy.model import Trainings, server_time_of
        from include.cognigy.problems import decode_json

        locale_id = self.locale(target)["_id"]
        what = f"GET tasks of project {target.project_id}"
        found: Trainings | None = None
        skip = 0
        for _ in range(MAX_TASK_PAGES):
            resp = self.t.request(
                "GET",
                f"{PREFIX}/tasks?projectId={seg(target.project_id)}&limit={TASK_PAGE}&skip={skip}&sort=createdAt:desc",
                what,
                safe=True,
            )
            page = decode_json(resp.content, what)
            if found is None:
                found = Trainings(server_time=server_time_of(resp.headers))
            items = _items(page)
            covered = False
            for item in items:
                status = parse_task(item)
                if not status.started_since(since_epoch):
                    covered = True  # newest first: everything after this is older than the window
                    continue
                if is_training_of(status, target.flow_id, locale_id):
                    found.append(status)
            skip += len(items)
            if covered or not items or skip >= int(page.get("total") or 0):
                return found
        raise CognigyError(
            f"the task list of project {target.project_id} has more than {MAX_TASK_PAGES * TASK_PAGE} tasks in the "
            "reconciliation window: cannot prove which trainings exist"
        )

    # --- training data and rollback points -----------------------------------------------------------
    def export_intents(self, target: Target) -> list[dict[str, Any]]:
        body = {"localeId": self.locale(target)["_id"], "format": "json"}
        data = self.t.json(
            "POST",
            f"{PREFIX}/flows/{seg(target.flow_id)}/intents/export",
            f"POST export intents (flow {target.flow_id}, locale {target.locale})",
            safe=True,
            json=body,
        )
        if not isinstance(data, list):
            raise CognigyError("intents export: expected a JSON array of intents")
        return data

    def import_intents(self, target: Target, intents: list[dict[str, Any]], mode: str = "overwrite") -> JobStatus:
        """Import one request's worth of intents (the export's shape) and wait for the import task.

        Overwrite makes a retry harmless. Callers with more than one request's worth use `replace_intents`.
        """
        payload = import_payload(intents)
        if len(payload) > MAX_BODY_BYTES:
            raise BadRequest(
                f"training data for {target.key} is {len(payload)} bytes; "
                f"Cognigy accepts at most {MAX_BODY_BYTES} in one request"
            )
        fields = {"mode": mode, "flowId": target.flow_id, "localeId": self.locale(target)["_id"]}
        task = parse_task(
            self.t.json(
                "POST",
                f"{PREFIX}/flows/{seg(target.flow_id)}/intents/import",
                f"POST import intents (flow {target.flow_id}, locale {target.locale}, mode {mode})",
                safe=mode == "overwrite",
                data=fields,
                files={"file": ("intents.json", payload, "application/json")},
            )
        )
        return self.wait_short(task, what="intents import")

    def replace_intents(self, target: Target, intents: list[dict[str, Any]]) -> str:
        """Make the flow/locale hold exactly `intents`, however large: the first request overwrites, the rest
        merge (an intent's sentences may span requests). Repeatable (it starts over with an overwrite).

        Returns the fingerprint read back from an export; raises when it differs from the intended one, so
        leftovers or duplicates never pass silently.
        """
        wanted = fingerprint(intents)
        for index, chunk in enumerate(import_chunks(intents)):
            self.import_intents(target, chunk, mode="overwrite" if index == 0 else "merge")
        got = fingerprint(self.export_intents(target))
        if got != wanted:
            raise CognigyError(
                f"after importing into {target.key} the flow holds intents {got[:12]}…, not the intended "
                f"{wanted[:12]}… (leftovers or lost sentences)"
            )
        return got

    def wait_short(self, task: JobStatus, what: str, timeout: float = 120.0) -> JobStatus:
        """Wait in place for a task that takes seconds (imports); trainings use the deferrable trigger."""
        deadline = time.monotonic() + timeout
        while not task.terminal:
            if time.monotonic() > deadline:
                raise CognigyError(f"{what} task {task.job_id} still {task.raw_status} after {timeout}s")
            time.sleep(0.5)
            task = self.job_status(task.job_id)
        if task.state != "succeeded":
            raise CognigyError(f"{what} task {task.job_id} ended {task.raw_status}: {task.reason}")
        return task

    def training_state(self, target: Target) -> dict[str, Any]:
        """Whether the flow's model reflects its current intents (`isTrainingOutOfDate`) for this locale."""
        query = f"?preferredLocaleId={seg(self.locale(target)['_id'])}"
        flow = self.t.json("GET", f"{PREFIX}/flows/{seg(target.flow_id)}{query}", "GET flow", safe=True)
        return {"out_of_date": bool(flow.get("isTrainingOutOfDate", True)), "reference_id": flow.get("referenceId")}

    def endpoints_serving(self, target: Target) -> list[str]:
        """Names of the project's endpoints that serve the target's flow.

        An endpoint names its flow in `flowId`; the emulator (and, we believe, Cognigy) uses the flow's
        referenceId there; a flow `_id` is accepted too, so a tenant using either is read correctly.
        """
        flow = self.flow(target)
        ids = {target.flow_id, str(flow.get("referenceId"))}
        names, skip = [], 0
        while True:
            page = self.t.json(
                "GET",
                f"{PREFIX}/endpoints?projectId={seg(target.project_id)}&limit=100&skip={skip}",
                f"GET endpoints of project {target.project_id}",
                safe=True,
            )
            items = _items(page)
            names += [str(i.get("name") or i.get("_id")) for i in items if str(i.get("flowId")) in ids]
            skip += len(items)
            if not items or skip >= int(page.get("total") or 0):
                return names

    # --- quality signals -----------------------------------------------------------------------------
    def score(self, target: Target, sentence: str) -> list[dict[str, Any]]:
        flow = self._flows.get(target.flow_id) or self._flows.setdefault(target.flow_id, self.flow(target))
        body = {
            "flowReferenceId": flow["referenceId"],
            "localeReferenceId": self.locale(target)["referenceId"],
            "sentence": sentence,
        }
        data = self.t.json(
            "POST",
            f"{PREFIX}/projects/{seg(target.project_id)}/nlu/scores",
            f"POST nlu scores (project {target.project_id}, flow {target.flow_id}, locale {target.locale})",
            safe=True,
            json=body,
        )
        return list(data.get("scores") or [])

    def feedback(self, target: Target) -> dict[str, Any]:
        """The platform's own view: flow feedbackReport plus each intent's findings."""
        flow = self.flow(target, feedback=True)
        locale_id = seg(self.locale(target)["_id"])
        page = self.t.json(
            "GET",
            f"{PREFIX}/flows/{seg(target.flow_id)}/intents?includeFeedbackReport=true"
            f"&preferredLocaleId={locale_id}&limit=100",
            f"GET intents (flow {target.flow_id}, locale {target.locale})",
            safe=True,
        )
        report = dict(flow.get("feedbackReport") or {})
        report["isTrainingOutOfDate"] = flow.get("isTrainingOutOfDate")
        report["intents"] = [
            {"name": i.get("name"), "feedbackReport": i.get("feedbackReport") or {}} for i in _items(page)
        ]
        return report


def fingerprint(intents: list[dict[str, Any]]) -> str:
    """Order-independent SHA-256 of an intents export: names and their example sentences."""
    canon = sorted((i["name"], sorted(i.get("exampleSentences") or [])) for i in intents)
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).hexdigest()


def import_payload(intents: list[dict[str, Any]]) -> bytes:
    """The import request's file: the export's JSON array, compact."""
    return json.dumps(intents, ensure_ascii=False, separators=(",", ":")).encode()


IMPORT_CHUNK_BYTES = MAX_BODY_BYTES - 4096  # room for the multipart envelope and form fields


def import_chunks(intents: list[dict[str, Any]], limit: int = IMPORT_CHUNK_BYTES) -> list[list[dict[str, Any]]]:
    """Split intents into import files of at most `limit` bytes each, splitting an intent's sentences across
    files when one intent alone is too large (merge imports join them again). Raises BadRequest when a single
    sentence cannot fit."""

    def item_size(item: dict[str, Any]) -> int:
        return len(import_payload([item])) - 2  # without the array's brackets

    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    used = 2  # "[" and "]"

    def close() -> None:
        nonlocal current, used
        if current:
            chunks.append(current)
        current, used = [], 2

    for intent in intents:
        need = item_size(intent) + (1 if current else 0)
        if used + need > limit:
            close()
            need = item_size(intent)
        if 2 + need <= limit:
            current.append(dict(intent))
            used += need
            continue
        # One intent larger than a request: spread its sentences over several files.
        empty = {**intent, "exampleSentences": []}
        base = item_size(empty)
        piece: list[str] = []
        piece_size = base
        for sentence in intent.get("exampleSentences") or []:
            extra = len(json.dumps(sentence, ensure_ascii=False)) + (1 if piece else 0)
            if 2 + piece_size + extra > limit:
                if not piece:
                    raise BadRequest(f"intent {intent.get('name')!r}: one example sentence exceeds {limit} bytes")
                chunks.append([{**intent, "exampleSentences": piece}])
                piece, piece_size = [], base
                extra = len(json.dumps(sentence, ensure_ascii=False))
            piece.append(sentence)
            piece_size += extra
        current, used = [{**intent, "exampleSentences": piece}], 2 + piece_size
    close()
    return chunks or [[]]


def check_restorable(intents: list[dict[str, Any]]) -> list[str]:
    """Problems that would stop `replace_intents` from restoring this export (shape and size)."""
    problems = []
    for index, intent in enumerate(intents):
        if not isinstance(intent, dict) or not str(intent.get("name") or "").strip():
            problems.append(f"intent [{index}] has no name")
            continue
        sentences = intent.get("exampleSentences") or []
        if not isinstance(sentences, list) or not all(isinstance(s, str) and s.strip() for s in sentences):
            problems.append(f"intent {intent['name']!r}: example sentences are not all non-empty strings")
    if not problems:
        try:
            import_chunks(intents)
        except BadRequest as exc:
            problems.append(str(exc))
    return problems


def intents_file(training: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The export/import shape for intent name -> example sentences."""
    return [
        {"name": name, "exampleSentences": list(sentences), "isDisabled": False, "tags": []}
        for name, sentences in sorted(training.items())
    ]
