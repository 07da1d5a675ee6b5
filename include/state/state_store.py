"""The one home of the pipeline's durable state: run folders, leases, the target memory and the MLflow outbox.

Where it lives is one setting, ``COGNIGY_RETRAIN_STATE_URI`` (see :func:`include.settings.state_uri`): a local
folder (``file://``, the default: ``COGNIGY_RETRAIN_STATE_DIR`` or ``<project>/.state``) or an object store
(``s3://bucket/prefix``), so that workers sharing no disk (MWAA, Astronomer, Celery on several hosts) run one
pipeline. Code here takes a *path-like* handed in and never imports Airflow:

- a local path is a :class:`pathlib.Path` and is written as before: temp file + fsync + ``os.replace`` (+ the
  directory's fsync), create-exclusive with ``os.link``;
- anything else is a universal-pathlib path with ``.fs`` (an fsspec file system) and ``.path``: Airflow's
  ``ObjectStoragePath``, opened by ``cognigy_airflow.state_storage`` (which registers :func:`register_opener`).
  A write is one PUT (whole object or nothing); a create-exclusive is one conditional request that the store
  itself decides, so nothing assumes a POSIX file system there (:data:`ATOMIC_CREATE`):

  - S3 (s3fs): a PUT with ``If-None-Match: *``; 412 = already there;
  - Google Cloud Storage (gcsfs): a multipart upload with ``ifGenerationMatch=0``; 412 = already there;
  - Azure Blob Storage (adlfs): ``upload_blob(overwrite=False)``, a Put Blob with ``If-None-Match: *``;
    409 ``BlobAlreadyExists`` = already there.

  Any other store (or one of these schemes served by another file system class) is refused.

Listings and existence checks bypass fsspec's listing cache: another worker may have written meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from include import settings
from include.state.durable import fsync_dir

StatePath = Any  # pathlib.Path (local) or a universal-pathlib path (ObjectStoragePath): see the module docstring

# fsspec protocol -> the package whose file system's atomic create-if-absent this module uses (and that
# tests/test_state_store.py runs against a real server of that API): s3fs (moto), gcsfs (fake-gcs-server),
# adlfs (Azurite). A protocol served by a file system from another package is refused.
ATOMIC_CREATE = {
    "s3": "s3fs", "s3a": "s3fs", "s3n": "s3fs",
    "gs": "gcsfs", "gcs": "gcsfs",
    "abfs": "adlfs", "abfss": "adlfs", "az": "adlfs",
}  # fmt: skip


class StateNotIntact(RuntimeError):
    """What was read back is not what was written (checksum mismatch)."""


class StateStoreUnsupported(RuntimeError):
    """The configured store cannot give a guarantee the pipeline relies on."""


_opener: Callable[[str], StatePath] | None = None


def register_opener(opener: Callable[[str], StatePath]) -> None:
    """How a non-file URI becomes a path (set by ``cognigy_airflow.state_storage``: an ObjectStoragePath)."""
    global _opener
    _opener = opener


def path_of(location: str | os.PathLike[str] | StatePath) -> StatePath:
    """A path for a location kept as text (XCom, an outbox entry): local path, ``file://`` URI or store URI."""
    if not isinstance(location, str | PurePath):
        return location  # already a store path
    text = str(location)
    if "://" not in text:
        return Path(text)
    if text.startswith("file://"):
        return Path(unquote(urlsplit(text).path) or "/")
    if _opener is None:
        raise StateStoreUnsupported(
            f"{_scheme(text)}:// state needs the Airflow plugins (cognigy_airflow.state_storage) to open it"
        )
    return _opener(text)


def root() -> StatePath:
    """The state root configured by ``COGNIGY_RETRAIN_STATE_URI`` (a Path for the local default)."""
    if not os.environ.get("COGNIGY_RETRAIN_STATE_URI", "").strip():
        return settings.state_dir()  # as before: COGNIGY_RETRAIN_STATE_DIR, else <project>/.state
    return path_of(settings.state_uri())


def is_local(path: StatePath) -> bool:
    return isinstance(path, PurePath)


def describe(path: StatePath) -> str:
    """For logs and errors: the path or URI (an ObjectStoragePath shows its connection id, never a secret)."""
    return str(path)


# --- reads ---------------------------------------------------------------------------------------------
def _fresh(path: StatePath) -> None:
    """Drop fsspec's cached listings of `path` and its parents: another worker may have changed them."""
    with contextlib.suppress(Exception):
        path.fs.invalidate_cache(path.path)


def exists(path: StatePath) -> bool:
    if is_local(path):
        return path.exists()
    _fresh(path)
    return bool(path.fs.exists(path.path))


def read_bytes(path: StatePath) -> bytes:
    """The object's bytes; FileNotFoundError when there is none."""
    if is_local(path):
        return path.read_bytes()
    _fresh(path)
    return path.fs.cat_file(path.path)


def read_text(path: StatePath) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: StatePath, default: Any = None) -> Any:
    """Parsed JSON, or `default` when the object does not exist."""
    try:
        return json.loads(read_bytes(path))
    except FileNotFoundError:
        return default


def list_names(folder: StatePath) -> list[str]:
    """Names directly under `folder` (files and sub-folders); empty when it does not exist."""
    if is_local(folder):
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    _fresh(folder)
    try:
        entries = folder.fs.ls(folder.path, detail=False)
    except FileNotFoundError:
        return []
    finally:
        _fresh(folder)  # never leave a listing cached: the next look must see other workers' writes
    base = folder.path.rstrip("/")
    return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base})


def modified(path: StatePath) -> float:
    """Last-modified time (epoch seconds), 0.0 when unknown or gone."""
    try:
        if is_local(path):
            return path.stat().st_mtime_ns / 1e9
        _fresh(path)
        return path.fs.modified(path.path).timestamp()
    except (OSError, NotImplementedError, AttributeError):
        return 0.0


# --- writes --------------------------------------------------------------------------------------------
def ensure_dir(folder: StatePath) -> None:
    """A local folder is created; an object store has no folders (keys carry the prefix)."""
    if is_local(folder):
        folder.mkdir(parents=True, exist_ok=True)


def write_bytes(path: StatePath, data: bytes, *, durable: bool = True) -> None:
    """Replace the object atomically: a reader sees the old or the new content, never a part of one."""
    if is_local(path):
        tmp = _local_temp(path, data, durable, "tmp")
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            fsync_dir(path.parent)
        return
    path.fs.pipe_file(path.path, data)  # one PUT (objects below the multipart size): all or nothing
    _fresh(path)


def write_text(path: StatePath, text: str, *, durable: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: StatePath, value: Any, **dumps: Any) -> None:
    write_text(path, json.dumps(value, **dumps))


def create_exclusive(path: StatePath, data: bytes, *, durable: bool = True) -> bool:
    """Create the object with `data` if there is none; False (nothing written) if it exists. Atomic: of two
    writers racing, exactly one gets True, and a reader never sees the object without its content. Locally,
    `durable` also fsyncs the file and its folder (an object store's PUT is durable when it answers)."""
    if is_local(path):
        tmp = _local_temp(path, data, durable, "new")
        try:
            os.link(tmp, path)  # fails if it exists, and the content is in place when the name appears
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            fsync_dir(path.parent)
        return True
    protocol = _protocol(path)
    package = ATOMIC_CREATE.get(protocol)
    if package is None:
        raise StateStoreUnsupported(
            f"COGNIGY_RETRAIN_STATE_URI={protocol}://…: {protocol}:// has no atomic create-if-absent known to this "
            f"pipeline (leases and rollback points need one); use s3://, gs://, abfs:// / az:// or a local folder"
        )
    fs = path.fs
    served_by = type(fs).__module__.split(".")[0]
    if served_by != package:
        raise StateStoreUnsupported(
            f"COGNIGY_RETRAIN_STATE_URI={protocol}://…: served by {type(fs).__module__}.{type(fs).__name__}, whose "
            f"atomic create-if-absent is not verified here (leases and rollback points need one); only {package}'s is"
        )
    try:
        if package == "gcsfs":
            _gcs_create(fs, path.path, data)  # an upload with ifGenerationMatch=0
        else:
            fs.pipe_file(path.path, data, mode="create")  # s3fs: If-None-Match: *; adlfs: upload_blob(overwrite=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if _precondition_failed(exc):
            return False
        raise
    finally:
        _fresh(path)
    return True


def create_or_read_verified(path: StatePath, data: bytes) -> tuple[bytes, bool]:
    """Write `data` once (never over an existing object) and read the object back.

    Returns (the bytes that are there, whether this call created them). When this call created the object, what
    reads back must have the SHA-256 of `data`, else :class:`StateNotIntact` (nothing may act on a copy that is
    not what was captured)."""
    created = create_exclusive(path, data)
    stored = read_bytes(path)
    if created and sha256(stored) != sha256(data):
        raise StateNotIntact(
            f"{describe(path)} did not read back intact (sha256 {sha256(stored)[:16]}… != written {sha256(data)[:16]}…)"
        )
    return stored, created


def delete(path: StatePath) -> None:
    """Remove the object (no error when it is gone)."""
    if is_local(path):
        path.unlink(missing_ok=True)
        return
    try:
        path.fs.rm_file(path.path)
    except FileNotFoundError:
        pass
    finally:
        _fresh(path)


def delete_tree(folder: StatePath) -> None:
    if is_local(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        folder.fs.rm(folder.path, recursive=True)
    _fresh(folder)


def copy(source: StatePath, target: StatePath) -> None:
    """Copy one object (any store to any store) atomically at the target."""
    if is_local(source) and is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return
    write_bytes(target, read_bytes(source))


# --- local files for tools that need them (matplotlib, MLflow's log_artifact) ---------------------------
def write_with(path: StatePath, write: Callable[[Path], object]) -> None:
    """Let `write(local_file)` produce the content (a writer that wants a local file), then store it atomically
    at `path` (a reader never sees a part of it)."""
    with tempfile.TemporaryDirectory(prefix="cognigy-state-") as tmp:
        local = Path(tmp) / path.name
        write(local)
        write_bytes(path, local.read_bytes())


@contextlib.contextmanager
def local_dir(folder: StatePath) -> Iterator[Path]:
    """A local folder to write into that ends up as `folder`: `folder` itself when it is local, else a temp
    folder whose files are uploaded to `folder` when the block ends without an error."""
    if is_local(folder):
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="cognigy-state-") as tmp:
        yield Path(tmp)
        for file in sorted(Path(tmp).iterdir()):
            if file.is_file():
                write_bytes(folder / file.name, file.read_bytes())


@contextlib.contextmanager
def local_files(files: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """`{name: location}` with every location a local file: local ones as they are, store objects downloaded
    to a temp folder for the block's duration."""
    remote = {name: loc for name, loc in files.items() if not is_local(path_of(loc))}
    if not remote:
        yield dict(files)
        return
    with tempfile.TemporaryDirectory(prefix="cognigy-artifacts-") as tmp:
        local = dict(files)
        for index, (name, location) in enumerate(sorted(remote.items())):
            source = path_of(location)
            target = Path(tmp) / f"{index:03d}-{source.name}"
            target.write_bytes(read_bytes(source))
            local[name] = str(target)
        yield local


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- internals -----------------------------------------------------------------------------------------
def _local_temp(path: Path, data: bytes, durable: bool, suffix: str) -> Path:
    """`data` in a new hidden file beside `path` (fsynced when `durable`), for an atomic rename or link onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.{suffix}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _protocol(path: StatePath) -> str:
    protocol = getattr(path, "protocol", "") or ""
    return protocol[0] if isinstance(protocol, tuple | list) else str(protocol)


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0]


def _gcs_create(fs: Any, path: str, data: bytes) -> None:
    """Create a GCS object only if none exists: one multipart upload through gcsfs's session with
    ``ifGenerationMatch=0`` (GCS answers 412 when the object exists; gcsfs raises FileExistsError for it).

    Done here rather than with ``pipe_file(mode="create")``: gcsfs's default (experimental "extended") file system
    ignores the create mode on zonal buckets and overwrites; this request is always the JSON API upload, whose
    precondition the server evaluates (zonal buckets are not supported for state: README)."""
    bucket, key, _ = fs.split_path(path)
    metadata = json.dumps({"name": key}).encode()
    boundary = f"cognigy-{uuid.uuid4().hex}"
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            metadata,
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    answer = fs.call(
        "POST",
        f"{fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
        uploadType="multipart",
        ifGenerationMatch="0",
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        data=body,
        json_out=True,
    )
    if int(answer.get("size", -1)) != len(data):
        raise StateNotIntact(f"gs://{bucket}/{key}: the store took {answer.get('size')} bytes of {len(data)}")


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs maps a 412 to FileExistsError only when the answer names the If-None-Match condition."""
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return error.get("Code") in ("PreconditionFailed", "412") or status == 412
