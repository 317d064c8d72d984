"""core.storage's guarantees on Azure Blob (Azurite) and GCS (fake-gcs-server), through
``ObjectStoragePath`` as users write: nothing visible under the final name before commit
(small files and files past one part), exactly the bytes on commit, nothing after a discard,
an existing object left as it was by a failed write. The same checks as tests/s3."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_backendauth.core.storage import (
    AtomicFile,
    NdjsonFileSet,
    atomic_writer,
    discard_leftovers,
)
from tests.storage.conftest import Container, GcsBucket

pytestmark = pytest.mark.e2e  # real servers (Azurite, fake-gcs-server)

KIB = 2**10
PART = 256 * KIB  # GCS's chunk unit; Azure takes any block size
Store = Container | GcsBucket


class Boom(Exception):
    pass


@pytest.fixture(params=["azure", "gcs"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue("container" if request.param == "azure" else "gcs_bucket")


def seed(store: Store, key: str, data: bytes) -> None:
    store.path(key).write_bytes(data)


def test_small_file_invisible_until_commit(store: Store) -> None:
    with atomic_writer(store.path("out/state.json")) as f:
        f.write(b'{"a": 1}')
        assert store.blobs() == {}
    assert store.blobs() == {"out/state.json": b'{"a": 1}'}


@pytest.mark.parametrize("size", [3 * PART + 100, 4 * PART], ids=["ragged", "whole-parts"])
def test_multipart_file_invisible_until_commit(store: Store, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    atomic = AtomicFile(store.path("out/big.ndjson"), part_size=PART)
    for start in range(0, size, 10_000):
        atomic.handle.write(data[start : start + 10_000])
    assert atomic.bytes_uploaded >= 2 * PART  # parts went out while writing...
    assert store.blobs() == {}  # ...but nothing is visible yet
    atomic.commit()
    assert store.blobs() == {"out/big.ndjson": data}


@pytest.mark.parametrize("size", [100, 3 * PART + 7], ids=["small", "multipart"])
def test_failure_leaves_old_object_and_nothing_new(store: Store, size: int) -> None:
    seed(store, "out/f.ndjson", b"old\n")
    with pytest.raises(Boom), AtomicFile(store.path("out/f.ndjson"), part_size=PART) as f:
        f.write(b"n" * size)
        raise Boom
    assert store.blobs() == {"out/f.ndjson": b"old\n"}
    with pytest.raises(Boom), AtomicFile(store.path("out/new.ndjson"), part_size=PART) as f:
        f.write(b"n" * size)
        raise Boom
    assert store.blobs() == {"out/f.ndjson": b"old\n"}


def test_discard_then_retry_commits_only_the_retry(store: Store) -> None:
    first = AtomicFile(store.path("out/f.ndjson"), part_size=PART)
    first.handle.write(b"a" * (3 * PART))
    first.discard()
    first.discard()  # idempotent
    assert store.blobs() == {}
    assert discard_leftovers(store.path("out/f.ndjson")) is None  # nothing to drop here
    with AtomicFile(store.path("out/f.ndjson"), part_size=PART) as f:
        f.write(b"b" * (2 * PART + 1))
    assert store.blobs() == {"out/f.ndjson": b"b" * (2 * PART + 1)}


def test_text_mode_and_empty_file(store: Store) -> None:
    with atomic_writer(store.path("t.txt"), "w") as f:
        f.write("blåbær\n")
    AtomicFile(store.path("empty.ndjson")).commit()
    assert store.blobs() == {"t.txt": "blåbær\n".encode(), "empty.ndjson": b""}


def test_file_set_all_or_nothing(store: Store) -> None:
    records: list[dict[str, Any]] = [{"resourceType": "Patient", "id": str(i)} for i in range(3)]
    with pytest.raises(Boom), NdjsonFileSet(store.path("set")) as files:
        files.writer("Patient.ndjson").write_many(records)
        files.writer("Observation.ndjson").write({"resourceType": "Observation"})
        raise Boom
    assert store.blobs() == {}
    with NdjsonFileSet(store.path("set"), create=["Empty.ndjson"]) as files:
        files.writer("Patient.ndjson").write_many(records)
    blobs = store.blobs()
    assert sorted(blobs) == ["set/Empty.ndjson", "set/Patient.ndjson"]
    assert blobs["set/Patient.ndjson"].count(b"\n") == 3 and blobs["set/Empty.ndjson"] == b""
