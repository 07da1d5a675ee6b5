"""Issue 26, item 2: a trigger form cannot make the worker read its own files or exhaust its memory.

Data URIs must fall under an allowed root (COGNIGY_RETRAIN_DATA_ROOTS; by default the project's data folder and
object storage), symlinks are resolved before that check, only regular files are read, and reads stop at the size
limit whatever `stat` says. Errors name the file, never its content. Real files, FIFOs and devices throughout; the
object-storage case uses fsspec's in-memory file system through Airflow's ObjectStoragePath.
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from cognigy_airflow.data_files import read_data_file
from devtools.s3 import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, s3_client
from include import settings
from include.data.data_uris import DataRoots, DataUriRefused, TooLarge, locate, read_bounded
from include.data.labelled_data import DataFileInvalid

pytest_plugins = ["tests.fixtures_s3"]
SHIPPED = settings.PROJECT_ROOT / "include" / "data" / "intents.jsonl"


def refusal(uri: str, **kwargs) -> str:
    with pytest.raises(DataFileInvalid) as caught:
        read_data_file(uri, **kwargs)
    (error,) = caught.value.errors
    return error


@pytest.fixture
def roots(monkeypatch: pytest.MonkeyPatch):
    def set_roots(*entries: str | Path) -> None:
        monkeypatch.setenv("COGNIGY_RETRAIN_DATA_ROOTS", ",".join(str(e) for e in entries))

    monkeypatch.delenv("COGNIGY_RETRAIN_DATA_ROOTS", raising=False)
    return set_roots


# --- the default: the project's data folder and object storage ----------------------------------------------
def test_the_default_roots_are_the_data_folder_and_object_storage(roots) -> None:
    assert settings.data_roots() == [str(SHIPPED.parent), "s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://"]
    assert read_data_file(str(SHIPPED)) == SHIPPED.read_bytes()
    default = DataRoots.parse(settings.data_roots())
    assert locate("s3://any-bucket/nlu/held_out.csv", default) == "s3://any-bucket/nlu/held_out.csv"
    for uri in ("https://host.example/held.csv", "memory://held.csv", "ftp://host/held.csv"):
        with pytest.raises(DataUriRefused, match="not under an allowed data root"):
            locate(uri, default)


@pytest.mark.parametrize(
    "uri", ["/dev/zero", "file:///dev/zero", "/etc/passwd", "file:///etc/passwd", "/proc/self/environ"]
)
def test_files_of_the_worker_outside_the_roots_are_refused(roots, uri: str) -> None:
    """/dev/zero once grew a worker to 2.4 GB: now it is not even opened."""
    error = refusal(uri)
    assert error.startswith(f"{uri}: file: is not under an allowed data root (COGNIGY_RETRAIN_DATA_ROOTS: ")
    assert "root:" not in error  # nothing of /etc/passwd


def test_relative_paths_and_dot_dot_are_resolved_before_the_check(roots, tmp_path: Path) -> None:
    roots(tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "secrets.csv").write_text("AWS_SECRET_ACCESS_KEY,DB_PASSWORD\nx,y\n")
    assert "not under an allowed data root" in refusal(f"{tmp_path}/data/../secrets.csv")


def test_a_symlink_inside_a_root_to_a_file_outside_is_refused(roots, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secrets.csv").write_text("AWS_SECRET_ACCESS_KEY,DB_PASSWORD\nx,y\n")
    (root / "held.csv").symlink_to(outside / "secrets.csv")
    (root / "inside.csv").write_text("text,intent\nhi,greet\n")
    (root / "alias.csv").symlink_to(root / "inside.csv")
    roots(root)
    error = refusal(str(root / "held.csv"))
    assert "not under an allowed data root" in error and "AWS_SECRET" not in error
    assert read_data_file(str(root / "alias.csv")) == b"text,intent\nhi,greet\n"  # a symlink within the root is fine
    assert read_data_file((root / "inside.csv").as_uri()) == b"text,intent\nhi,greet\n"


def test_only_regular_files_are_read(roots, tmp_path: Path) -> None:
    """A FIFO would block the worker, a device never ends, a directory is not data: refused without reading."""
    fifo = tmp_path / "held.csv"
    os.mkfifo(fifo)
    (tmp_path / "folder.csv").mkdir()
    roots(tmp_path, "/dev")
    outcome: dict[str, str] = {}
    reader = threading.Thread(target=lambda: outcome.setdefault("fifo", refusal(str(fifo))), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked the worker"
    assert outcome["fifo"] == f"{fifo}: file: is a FIFO (named pipe), not a regular file"
    assert refusal(str(tmp_path / "folder.csv")).endswith("file: is a directory, not a regular file")
    assert refusal("/dev/zero") == "/dev/zero: file: is a character device, not a regular file"


def test_a_missing_file_under_a_root_is_not_found(roots, tmp_path: Path) -> None:
    roots(tmp_path)
    assert refusal(str(tmp_path / "nope.csv")) == f"{tmp_path}/nope.csv: file: not found"


# --- bounded reads --------------------------------------------------------------------------------------------
class Endless(io.RawIOBase):
    """A stream that never ends (like /dev/zero), counting what was read from it."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size > 0, "an unbounded read"
        self.given += size
        return b"\0" * size


def test_reading_stops_at_the_limit_on_an_endless_stream() -> None:
    stream = Endless()
    with pytest.raises(TooLarge, match="larger than the 5,000,000 bytes allowed"):
        read_bounded(stream, 5_000_000)
    assert stream.given == 5_000_001


def test_a_local_file_over_the_limit_is_refused_by_name(roots, tmp_path: Path) -> None:
    roots(tmp_path)
    big = tmp_path / "held.csv"
    big.write_bytes(b"text,intent\n" + b"x,y\n" * 300)
    assert refusal(str(big), max_bytes=1000) == (
        f"{big}: file: is larger than the 1,000 bytes allowed (0.0 MiB); reading stopped there"
    )


def test_object_storage_reads_stop_at_the_limit_whatever_stat_says(
    roots, s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real S3 API (moto server); the storage's credentials never come from the URI."""
    # No connection id in a data URI: boto3's own credential chain (here its environment variables) reaches S3.
    for name, value in (("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                        ("AWS_ENDPOINT_URL", s3_server["url"]), ("AWS_DEFAULT_REGION", REGION)):  # fmt: skip
        monkeypatch.setenv(name, value)
    prefix = f"nlu-{uuid.uuid4().hex[:8]}"
    uri = f"s3://{BUCKET}/{prefix}/held_out.csv"
    s3_client(s3_server["url"]).put_object(
        Bucket=BUCKET, Key=f"{prefix}/held_out.csv", Body=b"text,intent\n" + b"hello,greet\n" * 1000
    )
    roots(f"s3://{BUCKET}/{prefix}/")
    assert read_data_file(uri).startswith(b"text,intent\nhello,greet\n")
    assert refusal(uri, max_bytes=2000) == (
        f"{uri}: file: is larger than the 2,000 bytes allowed (0.0 MiB); reading stopped there"
    )
    monkeypatch.setattr(ObjectStoragePath, "stat", lambda self: {"size": 10, "type": "file"})  # a lying size
    assert refusal(uri, max_bytes=2000).endswith("reading stopped there")
    assert "not under an allowed data root" in refusal(f"s3://{BUCKET}/elsewhere/held_out.csv")


def test_object_storage_prefixes_are_matched_by_path_segment() -> None:
    allowed = DataRoots.parse(["s3://bot-data/nlu/", "gs://other"])
    assert locate("s3://bot-data/nlu/held_en-US.csv", allowed) == "s3://bot-data/nlu/held_en-US.csv"
    assert locate("gs://other/any/held.csv", allowed) == "gs://other/any/held.csv"
    refused = ["s3://bot-data/nlu-secrets/x.csv", "s3://bot-data/x.csv", "s3://bot-data2/nlu/x.csv"]
    refused += ["gs://bot-data/nlu/x.csv", "s3://bot-data/nlu/../config/x.csv", "s3://bot-data/nlu/%2e%2e/x.csv"]
    for uri in refused:
        with pytest.raises(DataUriRefused):
            locate(uri, allowed)


def test_unresolvable_paths_are_refused_by_name(roots, tmp_path: Path) -> None:
    roots(tmp_path)
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    assert refusal("~no-such-user-here/held.csv").endswith(
        "file: cannot be resolved (unknown ~user or a symbolic link loop)"
    )
    assert refusal(str(tmp_path / "loop.csv")).endswith("cannot be resolved (unknown ~user or a symbolic link loop)")
