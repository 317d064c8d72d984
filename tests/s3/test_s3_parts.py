"""S3 multipart parts upload while the file is written, against the real moto server.

The server holds or fails requests itself (``S3Server.hold``/``fail``, on the HTTP
exchange), so every test waits on events, never on the clock: the parts in flight are
counted at the server and in the writer.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from airflow_provider_backendauth.core.errors import StorageError
from airflow_provider_backendauth.core.storage.atomic import AtomicFile
from airflow_provider_backendauth.core.storage.s3_parts import S3Parts
from airflow_provider_backendauth.core.storage.uploads import UncommittedUpload
from tests.s3.conftest import Bucket
from tests.support.s3 import Gate

MIB = 2**20
PART = 5 * MIB  # S3's smallest part


def part_data(number: int, size: int = PART) -> bytes:
    """Bytes that differ from part to part, so a part out of place changes the object."""
    return (f"part {number:03d} ".encode() * (size // 9 + 1))[:size]


def upload_of(atomic: AtomicFile) -> UncommittedUpload:
    upload = atomic._upload
    assert upload is not None
    return upload


def parts_of(atomic: AtomicFile) -> S3Parts:
    parts = upload_of(atomic)._s3
    assert parts is not None
    return parts


def our_tasks(atomic: AtomicFile) -> int:
    """Part uploads still on s3fs's event loop."""
    loop = atomic.path.fs.loop

    async def count() -> int:
        return sum(1 for t in asyncio.all_tasks() if "S3Parts._upload" in t.get_coro().__qualname__)

    return asyncio.run_coroutine_threadsafe(count(), loop).result(30)


class Writer(threading.Thread):
    """Writes ``chunks`` to an AtomicFile in its own thread (the test plays the store),
    recording the most parts in flight and the most bytes the upload held after any write."""

    def __init__(self, atomic: AtomicFile, chunks: list[bytes], then: str = "commit") -> None:
        super().__init__(daemon=True)
        self.atomic, self.chunks, self.then = atomic, chunks, then
        self.error: BaseException | None = None
        self.most_in_flight = 0
        self.most_held = 0
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                self.atomic.handle.write(chunk)
                upload = upload_of(self.atomic)
                if upload._s3 is not None:
                    in_flight = upload._s3.in_flight
                    self.most_in_flight = max(self.most_in_flight, in_flight)
                    held = in_flight * PART + len(upload._buffer or b"")
                    self.most_held = max(self.most_held, held)
            getattr(self.atomic, self.then)()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()

    def done(self) -> None:
        assert self.finished.wait(60), "the writer never finished"
        self.join(30)
        if self.error is not None:
            raise self.error


def threads(bucket: Bucket) -> set[threading.Thread]:
    """The threads now, less the test server's request threads (the server's business).
    Touches S3 through s3fs first, so its event loop thread already exists."""
    bucket.path("").fs.ls(bucket.name)
    return {t for t in threading.enumerate() if "process_request_thread" not in t.name}


def test_parts_upload_together_and_complete_in_order(bucket: Bucket) -> None:
    threads_before = threads(bucket)
    gate = bucket.server.hold("UploadPart")
    atomic = AtomicFile(bucket.path("out/big.ndjson"), part_size=PART, parts_in_flight=3)
    chunks = [part_data(n) for n in (1, 2, 3, 4)] + [b"tail\n"]
    writer = Writer(atomic, chunks)
    writer.start()
    # Three parts at the server at once, while the writer fills the fourth.
    gate.wait_for(lambda g: sorted(g.held) == [1, 2, 3])
    assert bucket.server.max_in_flight["UploadPart"] == 3
    # They finish in reverse order; the object must still be in part-number order.
    for number in (3, 2, 1):
        gate.release(number)
        gate.wait_for(lambda g, n=number: n in g.passed)
    assert bucket.server.objects(bucket.name) == {}  # stored parts are no object
    gate.open()
    writer.done()
    assert bucket.server.objects(bucket.name) == {"out/big.ndjson": b"".join(chunks)}
    ops = bucket.server.operations(bucket.name, ["out/big.ndjson"])
    assert ops == {"CreateMultipartUpload": 1, "UploadPart": 5, "CompleteMultipartUpload": 1}
    sent = [r for r in bucket.server.requests if r.operation == "UploadPart"]
    assert sum(r.bytes for r in sent) == len(b"".join(chunks))  # every byte sent once
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert writer.most_in_flight <= 3
    assert our_tasks(atomic) == 0
    assert threads(bucket) <= threads_before  # no thread of ours left


def test_commit_completes_only_after_the_last_part_is_stored(bucket: Bucket) -> None:
    gate = bucket.server.hold("UploadPart", part=3)  # the last part, sent by commit
    atomic = AtomicFile(bucket.path("out/f.ndjson"), part_size=PART, parts_in_flight=3)
    writer = Writer(atomic, [part_data(1), part_data(2), b"last\n"])
    writer.start()
    gate.wait_for(lambda g: g.held == [3])
    assert "CompleteMultipartUpload" not in bucket.server.operations(bucket.name)
    gate.open()
    writer.done()
    log = [r for r in bucket.server.requests if r.key == "out/f.ndjson"]
    assert log[-1].operation == "CompleteMultipartUpload"
    assert log[-1].overlapping == 0  # no part of the file was still being answered
    assert bucket.server.objects(bucket.name)["out/f.ndjson"].endswith(b"last\n")


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_at_most_limit_parts_in_flight_and_the_writer_waits(bucket: Bucket, limit: int) -> None:
    gate = bucket.server.hold("UploadPart")
    atomic = AtomicFile(bucket.path("out/f.ndjson"), part_size=PART, parts_in_flight=limit)
    writer = Writer(atomic, [part_data(n) for n in range(1, 8)])
    writer.start()
    # The writer has sent `limit` parts and waits with the next one full in its buffer:
    # (limit + 1) parts in memory, never more.
    gate.wait_for(lambda g: len(g.held) >= 1)  # the upload has begun
    parts = parts_of(atomic)
    for released in range(1, 8 - limit):
        assert parts.waiting.wait(60), "the writer never waited for a free slot"
        gate.wait_for(lambda g: len(g.held) == limit)
        assert parts.in_flight == limit
        assert len(parts._parts) == released + limit - 1  # nothing sent past the limit
        gate.release(released)  # one part stored: the writer may send one more
        gate.wait_for(lambda g, n=released: n in g.passed)
    gate.open()
    writer.done()
    assert bucket.server.max_in_flight["UploadPart"] == limit
    assert writer.most_in_flight <= limit
    assert writer.most_held <= (limit + 1) * PART
    assert parts.waits == 7 - limit
    data = bucket.server.objects(bucket.name)["out/f.ndjson"]
    assert data == b"".join(part_data(n) for n in range(1, 8))


def test_a_failed_part_fails_the_next_write_retryably_and_leaves_nothing(
    fragile_bucket: Bucket,
) -> None:
    bucket = fragile_bucket
    bucket.server.client().put_object(Bucket=bucket.name, Key="out/f.ndjson", Body=b"old\n")
    bucket.server.fail("UploadPart", part=1, status=503, code="ServiceUnavailable")
    atomic = AtomicFile(bucket.path("out/f.ndjson"), part_size=PART)
    atomic.handle.write(part_data(1))  # part 1 is sent...
    parts = parts_of(atomic)
    assert parts._parts[0].settled.wait(60)  # ...and refused
    with pytest.raises(StorageError, match="part 1") as failure:
        atomic.handle.write(b"more\n")
    assert failure.value.retryable and not failure.value.retry_cannot_help
    assert isinstance(failure.value, OSError)  # what storage problems are elsewhere too
    with pytest.raises(StorageError):  # never lost: every later write says so too
        atomic.handle.write(b"more\n")
    atomic.discard()
    assert bucket.server.objects(bucket.name) == {"out/f.ndjson": b"old\n"}
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert our_tasks(atomic) == 0


def test_a_failed_part_fails_the_commit_and_the_upload_is_aborted(
    fragile_bucket: Bucket,
) -> None:
    bucket = fragile_bucket
    bucket.server.fail("UploadPart", part=1)
    with (
        pytest.raises(StorageError, match="part 1") as failure,
        AtomicFile(bucket.path("out/f.ndjson"), part_size=PART) as f,
    ):
        f.write(part_data(1) + b"tail\n")  # part 1 is sent, and the write returns
    assert failure.value.retryable
    assert bucket.server.objects(bucket.name) == {}
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert bucket.server.operations(bucket.name)["AbortMultipartUpload"] == 1
    assert "CompleteMultipartUpload" not in bucket.server.operations(bucket.name)


def test_a_denied_part_is_not_retryable(fragile_bucket: Bucket) -> None:
    bucket = fragile_bucket
    bucket.server.fail("UploadPart", status=403, code="AccessDenied")
    atomic = AtomicFile(bucket.path("out/f.ndjson"), part_size=PART)
    with pytest.raises(StorageError) as failure:
        atomic.handle.write(part_data(1))
        atomic.commit()
    assert failure.value.retry_cannot_help  # credentials or bucket policy: a person's job
    assert bucket.server.incomplete_uploads(bucket.name) == []


def test_one_server_error_is_retried_by_the_client(bucket: Bucket) -> None:
    bucket.server.fail("UploadPart", part=1, times=1)  # the default connection retries
    with AtomicFile(bucket.path("out/f.ndjson"), part_size=PART) as f:
        f.write(part_data(1) + b"end\n")
    assert bucket.server.objects(bucket.name)["out/f.ndjson"] == part_data(1) + b"end\n"
    assert bucket.server.operations(bucket.name)["UploadPart"] == 3  # 1 refused, 1 again, end


def test_discard_cancels_parts_in_flight_then_aborts(bucket: Bucket) -> None:
    threads_before = threads(bucket)
    gate: Gate = bucket.server.hold("UploadPart")
    atomic = AtomicFile(bucket.path("out/f.ndjson"), part_size=PART, parts_in_flight=2)
    atomic.handle.write(part_data(1) + part_data(2))
    gate.wait_for(lambda g: sorted(g.held) == [1, 2])
    atomic.discard()  # returns once both parts have ended and the upload is aborted
    parts: Any = atomic._upload and atomic._upload._s3
    assert parts is None  # the upload let go of its parts
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert our_tasks(atomic) == 0
    gate.open()  # the held requests reach moto after the abort: they cannot store anything
    gate.wait_for(lambda g: len(g.passed) == 2)
    assert bucket.server.incomplete_uploads(bucket.name) == []
    assert bucket.server.objects(bucket.name) == {}
    atomic.discard()  # idempotent
    assert bucket.server.operations(bucket.name)["AbortMultipartUpload"] == 1
    assert threads(bucket) <= threads_before
