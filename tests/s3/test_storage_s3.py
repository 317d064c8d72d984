"""core.storage against a real S3 endpoint: one upload per file, no copy, nothing left behind."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_backendauth.core.storage.atomic import AtomicFile, atomic_writer
from airflow_provider_backendauth.core.storage.leftovers import discard_leftovers
from airflow_provider_backendauth.core.storage.ndjson import NdjsonFileSet
from tests.s3.conftest import Bucket

MIB = 2**20


class Boom(Exception):
    pass


def test_small_file_is_one_put_and_no_copy(bucket: Bucket) -> None:
    with atomic_writer(bucket.path("out/state.json")) as f:
        f.write(b'{"a": 1}')
        assert bucket.server.objects(bucket.name) == {}  # nothing visible while writing
    assert bucket.server.objects(bucket.name) == {"out/state.json": b'{"a": 1}'}
    ops = bucket.server.operations(bucket.name, ["out/state.json"])
    assert ops == {"PutObject": 1}


def test_large_file_is_one_multipart_upload_completed_on_commit(bucket: Bucket) -> None:
    atomic = AtomicFile(bucket.path("out/big.ndjson"), part_size=5 * MIB)
    line = b"x" * 1023 + b"\n"
    for _ in range(12 * 1024):  # 12 MiB: two full parts and a last one
        atomic.handle.write(line)
    upload: Any = atomic._upload
    for part in upload._s3._parts:  # parts went out while writing...
        assert part.settled.wait(60)
    assert atomic.bytes_uploaded == 10 * MIB
    assert bucket.server.objects(bucket.name) == {}  # ...but no object exists yet
    atomic.commit()
    data = bucket.server.objects(bucket.name)["out/big.ndjson"]
    assert len(data) == 12 * MIB
    ops = bucket.server.operations(bucket.name, ["out/big.ndjson"])
    assert ops == {"CreateMultipartUpload": 1, "UploadPart": 3, "CompleteMultipartUpload": 1}
    uploaded = sum(r.bytes for r in bucket.server.requests if r.operation == "UploadPart")
    assert uploaded == 12 * MIB  # every byte sent once
    assert bucket.server.incomplete_uploads(bucket.name) == []


@pytest.mark.parametrize("size", [100, 7 * MIB], ids=["small", "multipart"])
def test_failure_leaves_no_object_and_no_upload(bucket: Bucket, size: int) -> None:
    bucket.server.client().put_object(Bucket=bucket.name, Key="out/f.ndjson", Body=b"old\n")
    with pytest.raises(Boom), AtomicFile(bucket.path("out/f.ndjson"), part_size=5 * MIB) as f:
        f.write(b"n" * size)
        raise Boom
    assert bucket.server.objects(bucket.name) == {"out/f.ndjson": b"old\n"}
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert "CopyObject" not in bucket.server.operations(bucket.name)


def test_text_mode_and_empty_file(bucket: Bucket) -> None:
    with atomic_writer(bucket.path("t.txt"), "w") as f:
        f.write("blåbær\n")
    AtomicFile(bucket.path("empty.ndjson")).commit()
    assert bucket.server.objects(bucket.name) == {
        "t.txt": "blåbær\n".encode(),
        "empty.ndjson": b"",
    }


def test_file_set_commits_all_or_none(bucket: Bucket) -> None:
    with pytest.raises(Boom), NdjsonFileSet(bucket.path("run1")) as files:
        files.writer("Patient.ndjson").write({"id": "1"})
        raise Boom
    with NdjsonFileSet(bucket.path("run2"), create=["Empty.ndjson"]) as files:
        files.writer("Patient.ndjson").write({"id": "1"})
    assert sorted(bucket.server.objects(bucket.name)) == [
        "run2/Empty.ndjson",
        "run2/Patient.ndjson",
    ]


def test_discard_leftovers_aborts_a_killed_writers_upload(bucket: Bucket) -> None:
    killed: Any = AtomicFile(bucket.path("out/cut.ndjson"), part_size=5 * MIB)
    killed.handle.write(b"y" * 6 * MIB)  # one part uploaded, then the process "dies"
    assert bucket.server.incomplete_uploads(bucket.name) == ["out/cut.ndjson"]
    assert discard_leftovers(bucket.path("out/cut.ndjson")) == "1 incomplete multipart upload(s)"
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert discard_leftovers(bucket.path("out/cut.ndjson")) is None
    assert bucket.server.objects(bucket.name) == {}
