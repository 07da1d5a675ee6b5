"""The run's labelled data: read the user's files through Airflow object storage, check them, freeze a copy.

`validate` calls `freeze_request_data` before anything is sent to Cognigy: every held-out and training file of
every locale is read (a local path or file:// URI under an allowed data root, or s3://, gs://, … under an allowed
object-storage prefix, read by `ObjectStoragePath` with the installed providers; `include.data.data_uris`),
parsed and checked; a malformed file stops the run with errors naming file, line and
field. The exact bytes are copied into the run's folder, so every later task (and every retry) judges with the
same data, whatever happens to the source afterwards. The demo set is used only when a source says `demo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from include import settings
from include.data import data_uris, dataset
from include.data.labelled_data import MAX_FILE_BYTES, DataFileInvalid, LabelledSet, display_name, parse_labelled
from include.request.retrain_request import RetrainRequest
from include.state import state_store

HELD_OUT, TRAINING = "held_out", "training"


def read_data_file(uri: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, when ``uri`` falls under an allowed data root (`include.settings.data_roots`, symlinks
    resolved first) and names a regular file; read in chunks that stop at ``max_bytes`` whatever the file system
    says its size is. Anything else is a DataFileInvalid naming the file (never its content)."""
    shown = display_name(uri)

    def refused(why: str) -> DataFileInvalid:
        return DataFileInvalid(shown, [f"{shown}: file: {why}"])

    try:
        where = data_uris.locate(uri, data_uris.DataRoots.parse(settings.data_roots()))
        if isinstance(where, Path):
            return data_uris.read_local(where, max_bytes)
        path = ObjectStoragePath(where)
        if (path.stat() or {}).get("type") == "directory":
            raise data_uris.DataUriRefused("is a directory, not a file")
        with path.open("rb") as handle:
            return data_uris.read_bounded(handle, max_bytes)
    except data_uris.DataUriRefused as exc:
        raise refused(str(exc)) from None
    except FileNotFoundError:
        raise refused("not found") from None
    except Exception as exc:  # unknown scheme / provider not installed / access denied: say which
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise refused(f"cannot be read ({type(exc).__name__}: {detail})") from None


def _source_bytes(request: RetrainRequest, kind: str, locale: str) -> tuple[str, bytes, str | None] | None:
    """(display name, bytes, format) of one data file of a locale, or None when the source has no file."""
    if kind == HELD_OUT:
        if request.heldOut.source == "demo":
            return (
                f"{dataset.DEMO_NAME}#test/{locale}",
                dataset.demo_held_out_file(locale, request.heldOut.perIntent),
                "jsonl",
            )
        uri = request.data_uri("heldOut", locale)
    else:
        if request.trainingData.source == "demo":
            data = dataset.demo_training_file(locale, request.trainingDataSliceMatrix)
            return f"{dataset.DEMO_NAME}#train/{locale}", data, "jsonl"
        uri = request.data_uri("trainingData", locale)
    if uri is None:
        return None
    return uri, read_data_file(uri), None


def freeze_request_data(request: RetrainRequest, folder: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Read, check and copy every data file of the request; returns (per-locale data entries, errors).

    An entry is `{"held_out": {"path", "name", "format", "summary"}, "training": {...} | None}`; `summary` is the
    XCom-sized description (no intent names). Errors name the field, file and line; nothing is sent anywhere.
    """
    data: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    state_store.ensure_dir(folder)  # the run's folder in the state store (include.state.state_store)
    for locale in request.locales:
        entry: dict[str, Any] = {HELD_OUT: None, TRAINING: None}
        for kind, field in ((HELD_OUT, "heldOut"), (TRAINING, "trainingData")):
            try:
                found = _source_bytes(request, kind, locale)
                if found is None:
                    continue
                name, raw, fmt = found
                labelled = parse_labelled(raw, name, fmt=fmt)
                if kind == TRAINING:
                    labelled_errors = _training_errors(request, labelled)
                    if labelled_errors:
                        raise DataFileInvalid(name, labelled_errors)
            except DataFileInvalid as exc:
                errors.extend(f"{field} ({locale}): {e}" for e in exc.errors)
                continue
            except ValueError as exc:  # the demo set does not have this locale or intent
                errors.append(f"{field} ({locale}): {exc}")
                continue
            copy = folder / f"{kind}-{locale}-{labelled.sha256[:16]}.{fmt or _format_of(name)}"
            state_store.write_bytes(copy, raw)
            summary = {k: v for k, v in labelled.summary().items() if k != "intent_names"}
            entry[kind] = {"path": str(copy), "name": name, "format": fmt or _format_of(name), "summary": summary}
        data[locale] = entry
    return data, errors


def _format_of(name: str) -> str:
    return "csv" if name.split("?", 1)[0].lower().endswith(".csv") else "jsonl"


def _training_errors(request: RetrainRequest, labelled: LabelledSet) -> list[str]:
    """A training file must fit one Cognigy flow: ≤ 200 sentences per intent, ≤ 2,500 intents, matrix ⊆ file."""
    from include.request.retrain_request import COGNIGY_MAX_INTENTS_PER_FLOW, COGNIGY_MAX_SENTENCES_PER_INTENT

    problems = []
    by_intent = labelled.by_intent()
    if len(by_intent) > COGNIGY_MAX_INTENTS_PER_FLOW:
        problems.append(f"{labelled.name}: {len(by_intent)} intents; a Cognigy flow holds at most 2,500")
    first_line = {}
    for u in labelled.utterances:
        first_line.setdefault(u.intent, u.line)
    for intent, texts in by_intent.items():
        distinct = len(dict.fromkeys(texts))
        if distinct > COGNIGY_MAX_SENTENCES_PER_INTENT:
            problems.append(
                f"{labelled.name}:{first_line[intent]}: intent: {intent[:60]!r} has {distinct} example sentences; "
                f"Cognigy allows at most {COGNIGY_MAX_SENTENCES_PER_INTENT} per intent"
            )
    if request.trainingData.source == "uri":
        total = sum(len(texts) for texts in training_intents(request, labelled).values() if texts)
        if total > request.maxDatasetSize:
            problems.append(
                f"{labelled.name}: file: {total:,} example sentences exceed maxDatasetSize {request.maxDatasetSize:,} "
                "(raise max_dataset_size, and the training deadline with it, or trim the file)"
            )
        for intent, n in request.trainingDataSliceMatrix.items():
            have = len(dict.fromkeys(by_intent.get(intent, [])))
            if n > have:
                problems.append(
                    f"trainingDataSliceMatrix.{intent[:60]}: asks for {n} sentences; {labelled.name} has {have}"
                )
    return problems


def load_frozen(entry: dict[str, Any] | None) -> LabelledSet | None:
    """The run's frozen copy of a data file (as checked by `validate`)."""
    if not entry:
        return None
    raw = state_store.read_bytes(state_store.path_of(entry["path"]))
    return parse_labelled(raw, entry["name"], fmt=entry["format"])


def training_intents(request: RetrainRequest, labelled: LabelledSet) -> dict[str, list[str]]:
    """Intent -> distinct example sentences to import; the matrix (source uri) takes the first n per intent."""
    by_intent = {intent: list(dict.fromkeys(texts)) for intent, texts in labelled.by_intent().items()}
    matrix = request.trainingDataSliceMatrix if request.trainingData.source == "uri" else {}
    if matrix:
        return {intent: by_intent.get(intent, [])[:n] for intent, n in matrix.items()}
    return by_intent
