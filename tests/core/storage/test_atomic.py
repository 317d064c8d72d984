"""Atomic writers and NDJSON output over pathlib, ObjectStoragePath (file://) and fsspec memory."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.storage.atomic import AtomicFile, atomic_writer
from airflow_provider_backendauth.core.storage.leftovers import discard_leftovers, remove_partials
from airflow_provider_backendauth.core.storage.ndjson import NdjsonFileSet, NdjsonWriter
from airflow_provider_backendauth.core.storage.paths import is_local, is_partial_name


class Boom(Exception):
    pass


def _object_storage(tmp_path: Path) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(f"file://{tmp_path}")


def _memory(tmp_path: Path) -> Any:
    from upath import UPath

    # fsspec's memory filesystem stands in for an object store: files are uncommitted
    # writes under the final name (tests/s3/ runs the same code against a real S3 endpoint).
    return UPath(f"memory://bucket-{uuid.uuid4().hex}/out")


def _plain(tmp_path: Path) -> Any:
    return tmp_path


@pytest.fixture(params=[_plain, _object_storage, _memory], ids=["pathlib", "osp-file", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return request.param(tmp_path)


def names(directory: Any) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def test_success_moves_to_final_name(root: Any) -> None:
    target = root / "sub" / "data.bin"
    with atomic_writer(target) as f:
        f.write(b"hello")
        if is_local(target):
            # While writing, only the hidden temporary name exists...
            assert names(target.parent)
            assert all(is_partial_name(n) for n in names(target.parent))
        else:
            # ...and on an object store nothing at all: the upload is not committed yet.
            assert names(target.parent) == []
    assert target.read_bytes() == b"hello"
    assert names(target.parent) == ["data.bin"]


def test_failure_leaves_nothing(root: Any) -> None:
    target = root / "data.bin"
    with pytest.raises(Boom), atomic_writer(target) as f:
        f.write(b"half")
        raise Boom
    assert not target.exists()
    assert names(root) == []


def test_failure_keeps_previous_file(root: Any) -> None:
    target = root / "data.bin"
    with atomic_writer(target) as f:
        f.write(b"v1")
    with pytest.raises(Boom), atomic_writer(target) as f:
        f.write(b"v2-partial")
        raise Boom
    assert target.read_bytes() == b"v1"
    assert names(root) == ["data.bin"]


def test_success_replaces_previous_file(root: Any) -> None:
    target = root / "data.bin"
    for payload in (b"first", b"second"):
        with atomic_writer(target) as f:
            f.write(payload)
    assert target.read_bytes() == b"second"
    assert names(root) == ["data.bin"]


def test_text_mode(tmp_path: Path) -> None:
    target = tmp_path / "note.txt"
    with atomic_writer(target, "w") as f:
        f.write("grüße\n")
    assert target.read_text(encoding="utf-8") == "grüße\n"


def test_string_paths(tmp_path: Path) -> None:
    with atomic_writer(str(tmp_path / "a.bin")) as f:
        f.write(b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x"


def test_rejects_read_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        AtomicFile(tmp_path / "x", "rb")


def test_atomic_file_manual_commit_and_double_use(tmp_path: Path) -> None:
    atomic = AtomicFile(tmp_path / "x.bin")
    atomic.handle.write(b"1")
    assert atomic.commit() == tmp_path / "x.bin"
    with pytest.raises(ValueError, match="already"):
        atomic.commit()
    atomic.discard()  # no-op after commit
    assert (tmp_path / "x.bin").read_bytes() == b"1"


def test_unopened_atomic_file_commits_empty(tmp_path: Path) -> None:
    AtomicFile(tmp_path / "empty.ndjson").commit()
    assert (tmp_path / "empty.ndjson").read_bytes() == b""


def test_ndjson_writer_counts() -> None:
    import io

    buffer = io.BytesIO()
    writer = NdjsonWriter(buffer)
    writer.write({"resourceType": "Patient", "name": "Zoë"})
    writer.write_many([{"a": 1}, {"b": [1, 2]}])
    data = buffer.getvalue()
    assert writer.records == 3
    assert writer.bytes == len(data)
    lines = data.decode("utf-8").splitlines()
    assert json.loads(lines[0])["name"] == "Zoë"
    assert lines[1] == '{"a":1}'


def test_file_set_commits_all_on_success(root: Any) -> None:
    with NdjsonFileSet(root, create=["Patient.ndjson"]) as files:
        files.writer("Patient.ndjson").write({"id": "1"})
        files.writer("Observation.ndjson").write({"id": "o1"})
        files.writer("Observation.ndjson").write({"id": "o2"})
        files.writer("Empty.ndjson")
    assert files.written is not None
    summary = {Path(w.path).name: (w.records, w.bytes) for w in files.written}
    assert summary["Patient.ndjson"][0] == 1
    assert summary["Observation.ndjson"][0] == 2
    assert summary["Empty.ndjson"] == (0, 0)
    assert files.records == 3
    assert names(root) == ["Empty.ndjson", "Observation.ndjson", "Patient.ndjson"]
    assert (root / "Observation.ndjson").read_text().count("\n") == 2


def test_file_set_discards_all_on_failure(root: Any) -> None:
    with pytest.raises(Boom), NdjsonFileSet(root, create=["Patient.ndjson"]) as files:
        files.writer("Patient.ndjson").write({"id": "1"})
        files.writer("Observation.ndjson").write({"id": "o1"})
        raise Boom
    assert names(root) == []


def test_remove_partials(tmp_path: Path) -> None:
    keep = tmp_path / "done.ndjson"
    keep.write_bytes(b"{}\n")
    leftover = AtomicFile(tmp_path / "killed.ndjson")
    leftover.handle.write(b"half")
    leftover.handle.flush()  # simulate a process killed before commit/discard
    assert remove_partials(tmp_path) == [leftover.temp_path.name]
    assert names(tmp_path) == ["done.ndjson"]
    assert remove_partials(tmp_path / "missing") == []


def test_object_store_writes_never_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    from upath import UPath

    root = UPath(f"memory://bucket-{uuid.uuid4().hex}/out")

    def no_copy(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an object-store commit must not copy")

    monkeypatch.setattr(type(root.fs), "mv", no_copy)
    monkeypatch.setattr(type(root.fs), "copy", no_copy)
    with atomic_writer(root / "a.ndjson") as f:
        f.write(b"{}\n")
    big = AtomicFile(root / "big.ndjson", part_size=8)
    big.handle.write(b"0123456789" * 3)  # past the part size: an fsspec uncommitted file
    assert not (root / "big.ndjson").exists()
    big.commit()
    assert (root / "big.ndjson").read_bytes() == b"0123456789" * 3
    assert names(root) == ["a.ndjson", "big.ndjson"]


def test_discard_leftovers_local(tmp_path: Path) -> None:
    killed = AtomicFile(tmp_path / "cut.ndjson")
    killed.handle.write(b"half")
    killed.handle.flush()  # the process dies here
    other = AtomicFile(tmp_path / "other.ndjson")
    other.handle.write(b"x")
    other.handle.flush()
    assert discard_leftovers(tmp_path / "cut.ndjson") == "1 temporary file(s), 4 bytes"
    assert discard_leftovers(tmp_path / "cut.ndjson") is None
    assert names(tmp_path) == [other.temp_path.name]  # another file's writer is left alone
