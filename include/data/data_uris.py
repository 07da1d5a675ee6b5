"""Where a run's own data files may come from, and how they are read (plain Python, no Airflow).

A trigger form can name any path or URI, and the worker reads it. So a data URI must
- carry no credentials (`credential_problem`: user-info, or a signing/token query parameter; checked when the
  request is validated),
- fall under an allowed root (`locate`: a local directory, or an object-storage prefix; the setting
  ``COGNIGY_RETRAIN_DATA_ROOTS``, see `include.settings.data_roots`), after symlinks are resolved,
- name a regular file (`read_local`: no device, FIFO, socket or directory),
and it is read in chunks that stop at the size limit, whatever the file system says its size is (`read_bounded`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit
from urllib.request import url2pathname

from include.records.redaction import is_credential_param

CHUNK_BYTES = 1024 * 1024
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


class DataUriRefused(ValueError):
    """The data URI may not be read (outside the allowed roots, not a regular file, too large); the message says
    why and never quotes the file's content."""


class TooLarge(DataUriRefused):
    pass


def credential_problem(uri: str) -> str | None:
    """What in ``uri`` is a credential (``user-info``, ``'sig' query parameter``), or None. Values are never shown."""
    try:
        parts = urlsplit(uri)
        has_user = parts.username is not None or parts.password is not None
    except ValueError:
        return "it cannot be parsed as a URI"
    if parts.netloc and has_user:
        return "user-info before '@' in the host part"
    for part in (parts.query, parts.fragment):
        for key, _value in parse_qsl(part, keep_blank_values=True):
            if is_credential_param(key.strip()):  # the one list of credential parameters: redaction's
                return f"{key.strip()[:40]!r} query parameter"
    return None


@dataclass(frozen=True, slots=True)
class DataRoots:
    """The allowed roots: resolved local directories and object-storage prefixes (scheme, bucket, key prefix;
    an empty bucket or prefix allows every one)."""

    local: tuple[Path, ...]
    remote: tuple[tuple[str, str, str], ...]
    shown: tuple[str, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DataRoots:
        local: list[Path] = []
        remote: list[tuple[str, str, str]] = []
        shown: list[str] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            shown.append(entry)
            if "://" not in entry:
                local.append(Path(entry).expanduser().resolve())
                continue
            parts = urlsplit(entry)
            scheme = parts.scheme.lower()
            if scheme == "file":
                if parts.netloc not in ("", "localhost"):
                    raise ValueError(f"data root {entry!r}: a file:// root names a folder of this machine (no host)")
                local.append(Path(url2pathname(parts.path)).resolve())
            else:
                remote.append((scheme, parts.netloc, unquote(parts.path).strip("/")))
        return cls(tuple(local), tuple(remote), tuple(shown))

    def describe(self) -> str:
        return ", ".join(self.shown) if self.shown else "none"


def locate(uri: str, roots: DataRoots) -> Path | str:
    """The resolved local path (symlinks followed) or the object-storage URI that ``uri`` names, when it falls under
    an allowed root; otherwise DataUriRefused."""
    outside = f"is not under an allowed data root (COGNIGY_RETRAIN_DATA_ROOTS: {roots.describe()})"
    if "://" in uri:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme != "file":
            key = unquote(parts.path).lstrip("/")
            if any(segment in (".", "..") for segment in key.split("/")):
                raise DataUriRefused("a path with '.' or '..' segments is not allowed in an object-storage URI")
            for root_scheme, bucket, prefix in roots.remote:
                if scheme == root_scheme and bucket in ("", parts.netloc) and _under(key, prefix):
                    return uri
            raise DataUriRefused(outside)
        if parts.netloc not in ("", "localhost"):
            raise DataUriRefused("a file:// URI names a file of this machine (no host)")
        path = Path(url2pathname(parts.path))
    else:
        path = Path(uri)
    try:
        resolved = path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop, an unknown ~user
        raise DataUriRefused("cannot be resolved (unknown ~user or a symbolic link loop)") from None
    if any(resolved.is_relative_to(root) for root in roots.local):
        return resolved
    raise DataUriRefused(outside)


def _under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + "/")


def read_bounded(handle: BinaryIO, max_bytes: int) -> bytes:
    """Everything ``handle`` yields, read in chunks; TooLarge as soon as more than ``max_bytes`` arrived."""
    data = bytearray()
    while True:
        chunk = handle.read(min(CHUNK_BYTES, max_bytes + 1 - len(data)))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > max_bytes:
            raise TooLarge(
                f"is larger than the {max_bytes:,} bytes allowed ({max_bytes / (1024 * 1024):.1f} MiB); "
                "reading stopped there"
            )


def read_local(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes (opened without following a last-moment symlink, without blocking on a FIFO); a
    device, FIFO, socket or directory is DataUriRefused. FileNotFoundError when it does not exist."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise DataUriRefused("is a directory, not a regular file") from None
    except OSError as exc:
        raise DataUriRefused(f"cannot be opened ({exc.strerror or type(exc).__name__})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        raise DataUriRefused(f"is {kind}, not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        return read_bounded(handle, max_bytes)
