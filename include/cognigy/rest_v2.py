"""The real Cognigy REST API v2.0: every path and JSON shape the product uses, in one place.

Management paths live under `<base>/new/v2.0`.
There is no model-version rollback: the rollback point is the intents export of the locale, restored by
importing it with mode=overwrite and retraining.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from include.cognigy.errors import BadRequest, CognigyError, NotFound
from include.cognigy.model import JobState, JobStatus, Target, Trainings, server_time_of
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


MILLISECONDS_FROM = 1e11  # a larger epoch number is milliseconds (1e11 s is the year 5138)
TRAINING_TASK_TYPE = "trainIntents"
TASK_PAGE = 100  # the largest page the platform serves
MAX_TASK_PAGES = 50  # a window with more tasks than this cannot be read in a reasonable time: fail closed


IMPORT_TASK_TYPE = "importIntents"


def is_task_of(task: JobStatus, task_type: str, flow_id: str, locale_id: str) -> bool:
    """A task of this type (the task's own `type`, never a list filter) for exactly this flow and locale."""
    params = task.extra.get("parameters") or {}
    return (
        task.extra.get("type") == task_type and params.get("flowId") == flow_id and params.get("localeId") == locale_id
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
    """A task or snapshot time as ISO text. The official client types numbers as Unix seconds (`TTimestamp`); some
    answers carry milliseconds: a number beyond the year 5138 in seconds is read as milliseconds."""
    if value is None or isinstance(value, str):
        return value
    number = float(value)
    return datetime.fromtimestamp(number / 1000 if number > MILLISECONDS_FROM else number).isoformat()


def _items(page: dict[str, Any]) -> list[dict[str, Any]]:
    return list(page.get("items") or [])


class RestV2Api:
    """Operations on a flow/locale of a real tenant. Each method is one documented API shape."""

    dialect = "rest-v2"

    def __init__(self, transport: Transport) -> None:
        self.t = transport
        self._locales: dict[str, dict[str, Any]] = {}
        self._flows: dict[str, dict[str, Any]] = {}
        self._endpoint_lists: dict[str, list[dict[str, Any]]] = {}

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

    def tasks_since(self, project_id: str, since_epoch: float) -> Trainings:
        """Every task of the project (any type) created at or after `since_epoch` (server clock, margin
        `model.SERVER_CLOCK_MARGIN_SECONDS`), newest first, with the server's clock of the first read.

        The task list has no documented `type` filter, so callers check each task's own `type`. Pages are read
        newest first until one reaches past the window or the list ends; a window too large to read fails closed.
        """
        from include.cognigy.problems import decode_json

        what = f"GET tasks of project {project_id}"
        found: Trainings | None = None
        skip = 0
        for _ in range(MAX_TASK_PAGES):
            resp = self.t.request(
                "GET",
                f"{PREFIX}/tasks?projectId={seg(project_id)}&limit={TASK_PAGE}&skip={skip}&sort=createdAt:desc",
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
                if status.started_since(since_epoch):
                    found.append(status)
                else:
                    covered = True  # newest first: everything after this one is older than the window
            skip += len(items)
            if covered or not items or skip >= int(page.get("total") or 0):
                return found
        raise CognigyError(
            f"the task list of project {project_id} has more than {MAX_TASK_PAGES * TASK_PAGE} tasks in the "
            "window: cannot prove which trainings exist"
        )

    def recent_trainings(self, target: Target, since_epoch: float) -> Trainings:
        """trainIntents tasks of this flow/locale created at or after `since_epoch` (reconciliation; a server time):
        a `model.Trainings` carrying the server's clock of the read. Import and snapshot tasks carry the same
        parameters, so each task's own `type` decides."""
        locale_id = self.locale(target)["_id"]
        tasks = self.tasks_since(target.project_id, since_epoch)
        return Trainings([t for t in tasks if is_task_of(t, TRAINING_TASK_TYPE, target.flow_id, locale_id)],
                         server_time=tasks.server_time)  # fmt: skip

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
        if flow.get("referenceId"):
            self._flows.setdefault(target.flow_id, flow)
        return {"out_of_date": bool(flow.get("isTrainingOutOfDate", True)), "reference_id": flow.get("referenceId")}

    def _all_pages(self, path: str, what: str) -> list[dict[str, Any]]:
        """Every item of a paged list (`skip` until `total`); `path` has its query started with `?`."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.t.json("GET", f"{path}&limit={TASK_PAGE}&skip={len(items)}", what, safe=True)
            got = _items(page)
            items += got
            if not got or len(items) >= int(page.get("total") or 0):
                return items

    # --- what serves customers: endpoints ------------------------------------------------------------
    def serving_endpoints(self, target: Target) -> list[Endpoint]:
        """The project's endpoints whose flow is the target's flow (its `_id` or its `referenceId`), each read on its
        own for what it serves (`entrypoint`: the project or a snapshot; the list does not carry it). An endpoint
        without a readable `flowId` or `entrypoint` raises: nobody may conclude from a missing field that an endpoint
        serves nothing."""
        ids = {target.flow_id, self.flow_reference(target)}
        listed = self._endpoint_items(target.project_id)
        return [self.endpoint(str(item["_id"])) for item in listed if str(item["flowId"]) in ids]

    def endpoints(self, project_id: str) -> list[Endpoint]:
        """Every endpoint of the project with what it serves (one read each)."""
        return [self.endpoint(str(item["_id"])) for item in self._endpoint_items(project_id)]

    def _endpoint_items(self, project_id: str) -> list[dict[str, Any]]:
        """The project's endpoint list (read once per client: a task's view; what each serves is read fresh)."""
        if project_id in self._endpoint_lists:
            return self._endpoint_lists[project_id]
        items = self._all_pages(f"{PREFIX}/endpoints?projectId={seg(project_id)}", f"GET endpoints of {project_id}")
        for item in items:
            if missing := [key for key in ("_id", "flowId") if key not in item]:
                name = item.get("name") or item.get("_id") or "?"
                raise CognigyError(
                    f"endpoint {name!r} of project {project_id} is listed without {', '.join(missing)}: cannot tell "
                    "which flow it serves"
                )
        self._endpoint_lists[project_id] = items
        return items

    def endpoints_serving(self, target: Target) -> list[str]:
        """Names of the project's endpoints that serve the target's flow."""
        return [e.name for e in self.serving_endpoints(target)]

    def endpoint(self, endpoint_id: str) -> Endpoint:
        data = self.t.json("GET", f"{PREFIX}/endpoints/{seg(endpoint_id)}", f"GET endpoint {endpoint_id}", safe=True)
        if missing := [key for key in ("_id", "flowId", "entrypoint") if key not in data]:
            raise CognigyError(
                f"endpoint {endpoint_id} answered without {', '.join(missing)}: cannot tell what it serves"
            )
        return endpoint_of(data)

    def point_endpoint(self, endpoint_id: str, entrypoint: str) -> None:
        """Make the endpoint serve `entrypoint` (a snapshot id, or the project id) at once. Repeatable."""
        self.t.json(
            "PATCH",
            f"{PREFIX}/endpoints/{seg(endpoint_id)}",
            f"PATCH endpoint {endpoint_id} entrypoint",
            safe=True,
            json={"entrypoint": entrypoint},
        )

    # --- snapshots -----------------------------------------------------------------------------------
    def create_snapshot(self, project_id: str, name: str, description: str) -> JobStatus:
        """Start a snapshot of the project (a Task; the answer has no snapshot id: find it by name)."""
        body = {"projectId": project_id, "name": name, "description": description}
        what = f"POST snapshot {name!r} of project {project_id}"
        return parse_task(self.t.json("POST", f"{PREFIX}/snapshots", what, safe=False, json=body))

    def snapshots(self, project_id: str) -> list[Snapshot]:
        what = f"GET snapshots of project {project_id}"
        return [snapshot_of(i) for i in self._all_pages(f"{PREFIX}/snapshots?projectId={seg(project_id)}", what)]

    def snapshot(self, snapshot_id: str) -> Snapshot:
        what = f"GET snapshot {snapshot_id}"
        return snapshot_of(self.t.json("GET", f"{PREFIX}/snapshots/{seg(snapshot_id)}", what, safe=True))

    def delete_snapshot(self, snapshot_id: str) -> JobStatus:
        """Start deleting a snapshot (a Task). Repeatable: a snapshot already gone answers 404 (NotFound)."""
        what = f"DELETE snapshot {snapshot_id}"
        return parse_task(self.t.json("DELETE", f"{PREFIX}/snapshots/{seg(snapshot_id)}", what, safe=True))

    # --- quality signals -----------------------------------------------------------------------------
    def flow_reference(self, target: Target) -> str:
        """The flow's `referenceId` (it never changes: read once per client)."""
        flow = self._flows.get(target.flow_id) or self._flows.setdefault(target.flow_id, self.flow(target))
        return str(flow["referenceId"])

    def score(self, target: Target, sentence: str) -> list[dict[str, Any]]:
        body = {
            "flowReferenceId": self.flow_reference(target),
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


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as far as releases go: what it serves (`entrypoint`: the project id or a snapshot id)."""

    id: str
    name: str
    entrypoint: str
    flow_id: str


def endpoint_of(item: dict[str, Any]) -> Endpoint:
    return Endpoint(
        id=str(item["_id"]),
        name=str(item.get("name") or item["_id"]),
        entrypoint=str(item["entrypoint"] or ""),
        flow_id=str(item.get("flowId") or ""),
    )


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy of the agent, trained NLU models included; `hash` identifies its contents."""

    id: str
    name: str
    hash: str | None
    created_at: str | None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "hash": self.hash, "created_at": self.created_at}


def snapshot_of(item: dict[str, Any]) -> Snapshot:
    return Snapshot(
        id=str(item["_id"]),
        name=str(item.get("name") or ""),
        hash=item.get("hash") or None,
        created_at=_iso(item.get("createdAt")),
        description=str(item.get("description") or ""),
    )


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
