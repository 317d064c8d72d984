"""core.storage's guarantees on Azure Blob (Azurite) and GCS (fake-gcs-server), through
``ObjectStoragePath`` as users write: nothing visible under the final name before commit
(small files and files past one part), exactly the bytes on commit, nothing after a discard,
an existing object left as it was by a failed write. The same checks as tests/s3."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_backendauth.core.storage.atomic import AtomicFile, atomic_writer
from airflow_provider_backendauth.core.storage.leftovers import discard_leftovers
from airflow_provider_backendauth.core.storage.ndjson import NdjsonFileSet
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


KILLED_WRITER = """
import json, os, signal, sys
from upath import UPath
from airflow_provider_backendauth.core.storage.atomic import AtomicFile
url, options, size, part = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
atomic = AtomicFile(UPath(url, **options), part_size=part)
atomic.handle.write(b"k" * size)
assert atomic.bytes_uploaded >= 2 * part, atomic.bytes_uploaded  # parts are on the server
os.kill(os.getpid(), signal.SIGKILL)  # as a lost worker: no cleanup runs
"""


def test_killed_writer_leaves_nothing_visible_and_the_retry_completes(store: Store) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    if isinstance(store, Container):
        url = f"az://{store.name}/out/killed.ndjson"
        options: dict[str, Any] = {"connection_string": store.server.connection_string}
    else:
        url = f"gs://{store.name}/out/killed.ndjson"
        options = {"endpoint_url": store.server.endpoint, "token": "anon", "project": "p"}
    env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_WRITER,
            url,
            json.dumps(options),
            str(3 * PART + 9),
            str(PART),
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert store.blobs() == {}
    assert not store.path("out/killed.ndjson").exists()
    if isinstance(store, Container):
        (blocks,) = store.uncommitted().values()  # invisible, not yet dropped
        assert blocks >= 3
    assert discard_leftovers(store.path("out/killed.ndjson")) is None
    with AtomicFile(store.path("out/killed.ndjson"), part_size=PART) as f:
        f.write(b"r" * (PART + 1))
    assert store.blobs() == {"out/killed.ndjson": b"r" * (PART + 1)}
    if isinstance(store, Container):
        assert store.uncommitted() == {}  # the retry's commit dropped the killed blocks
