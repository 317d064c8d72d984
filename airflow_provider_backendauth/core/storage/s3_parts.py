"""S3 multipart uploads whose parts go up while the next part is being written.

Guarantee: the object appears only on ``S3Parts.complete`` (``CompleteMultipartUpload``),
with its parts in the order they were written whatever order their uploads finished in;
``abort`` leaves no part request still arriving after the upload is aborted. Memory is
bounded: at most ``limit`` parts in flight plus the one filling.

Limits: S3's 10,000 parts per upload (160 GB with the default 16 MiB parts), and parts of
equal size except the last (some S3-compatible stores require it). Works on s3fs's
filesystem only (``is_s3``): the parts are tasks on the event loop s3fs already runs.

This module imports no Airflow.
"""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_backendauth.core.errors import StorageError
from airflow_provider_backendauth.core.redact import short_error

# S3: parts of one file uploading while the next one fills. The writer waits when this many
# are in flight, so a file being written holds at most (DEFAULT_PARTS_IN_FLIGHT + 1) *
# DEFAULT_PART_SIZE bytes: 48 MiB, and a download of `parallel` files at once (4 by
# default) that many times, 192 MiB. Measured with benchmarks/s3.py (docs/deployment.md):
# 2 overlaps the part uploads with the download; 3 and 4 were no faster, and 4 files times
# 2 parts stay within s3fs's pool of 10 connections (botocore's max_pool_connections),
# where more would only queue. Other stores upload one part at a time (fsspec's file).
DEFAULT_PARTS_IN_FLIGHT = 2


def is_s3(fs: Any) -> bool:
    """Whether ``fs`` is s3fs's (or a subclass): async S3 calls on fsspec's event loop."""
    return callable(getattr(fs, "_call_s3", None)) and getattr(fs, "loop", None) is not None


@dataclass(eq=False)
class _Part:
    """One S3 part on its way; ``settled`` is set once its upload has really ended."""

    number: int
    size: int
    settled: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[dict[str, Any]] | None = None
    entry: dict[str, Any] | None = None  # for CompleteMultipartUpload, once stored


class S3Parts:
    """One S3 multipart upload whose parts go up while the next part is being written.

    s3fs's own file sends its parts one after the other from the writing thread (the
    download waits for each), and its concurrent part upload exists only for local files
    (``put_file``). Here each part is a task on the event loop s3fs already runs every call
    on (``fs._call_s3``, so its credentials, retries, endpoint and extra arguments apply):
    no thread is started, so none can outlive the upload.

    - At most ``limit`` parts are in flight; ``send`` waits for a free slot (backpressure:
      the memory bound).
    - Parts are numbered in the order they are sent and listed in that order on completion,
      whatever order their uploads finish in.
    - The first failure is kept and raised by every later ``send`` and by ``complete``.
    - ``abort`` cancels the parts in flight, waits until they have ended, then aborts the
      upload, so no part request can still be arriving after the abort.
    """

    def __init__(self, fs: Any, path: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"parts in flight must be at least 1, not {limit}")
        self.fs = fs
        self.path = path
        self.bucket, self.key, _ = fs.split_path(path)
        self._loop: asyncio.AbstractEventLoop = fs.loop
        self._slots = threading.BoundedSemaphore(limit)
        self._parts: list[_Part] = []
        self._failure: StorageError | None = None
        # Set while the writer waits for a free slot: storage, not the download, is slower.
        self.waiting = threading.Event()
        self.waits = 0
        answer = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key)
        self.upload_id: str = answer["UploadId"]

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self.fs.call_s3(method, **kwargs)
        except Exception as exc:
            raise self._error(method, exc) from exc

    def _error(self, what: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"S3 {what} of s3://{self.bucket}/{self.key} failed: {short_error(exc)}",
            # A denial needs a person (credentials, bucket policy); anything else may pass.
            retryable=not isinstance(exc, PermissionError),
        )

    @property
    def stored(self) -> list[_Part]:
        """The parts the store has acknowledged so far."""
        return [p for p in self._parts if p.entry is not None]

    @property
    def in_flight(self) -> int:
        return sum(1 for p in self._parts if not p.settled.is_set())

    def check(self) -> None:
        """Raise the failure of any part sent so far (again on every call)."""
        if self._failure is not None:
            raise self._failure

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Upload ``data`` as the next part, waiting first while ``limit`` parts are in flight.

        The part's copy is made after the wait, so a waiting writer holds no extra part.
        """
        self.check()
        # Released by _settle, on the loop, when a part has ended.
        if not self._slots.acquire(blocking=False):
            self.waits += 1
            self.waiting.set()
            self._slots.acquire()
            self.waiting.clear()
        if self._failure is not None:  # the part we waited for failed
            self._slots.release()
            raise self._failure
        # botocore wraps bytes in a BytesIO that shares them, and aiohttp's getbuffer() then
        # unshares it: a second copy of every part, made on the event loop that every
        # upload shares. A BytesIO filled by write() owns its memory: one copy, made here.
        body = io.BytesIO()
        size = body.write(data)
        body.seek(0)
        part = _Part(len(self._parts) + 1, size)
        self._parts.append(part)
        self._loop.call_soon_threadsafe(self._start, part, body)

    def _start(self, part: _Part, body: io.BytesIO) -> None:  # on the loop
        part.task = asyncio.ensure_future(self._upload(part.number, body))
        part.task.add_done_callback(lambda task: self._settle(part, task))

    async def _upload(self, number: int, body: io.BytesIO) -> dict[str, Any]:
        answer = await self.fs._call_s3(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
        )
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if "ChecksumSHA256" in answer:  # what s3fs's own file lists, too
            entry["ChecksumSHA256"] = answer["ChecksumSHA256"]
        return entry

    def _settle(self, part: _Part, task: asyncio.Task[dict[str, Any]]) -> None:  # on the loop
        # A done callback runs even for a task cancelled before it started, so every slot
        # taken by ``send`` is given back exactly once.
        try:
            if not task.cancelled():
                if (exc := task.exception()) is not None:
                    if self._failure is None:
                        self._failure = self._error(f"upload of part {part.number}", exc)
                else:
                    part.entry = task.result()
        finally:
            part.settled.set()
            self._slots.release()

    @staticmethod
    def _cancel(part: _Part) -> None:  # on the loop
        if part.task is not None:
            part.task.cancel()

    def _wait(self) -> None:
        for part in self._parts:
            part.settled.wait()

    def complete(self) -> None:
        """Wait for every part, then make the object visible (``CompleteMultipartUpload``)."""
        self._wait()
        self.check()
        parts = [p.entry for p in self._parts]
        self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        self.fs.invalidate_cache(self.path)  # listings cached before now lack the object

    def abort(self) -> None:
        """Cancel the parts in flight, wait until they have ended, abort the upload."""
        for part in self._parts:
            if not part.settled.is_set():
                # Runs after the part's _start (the loop takes callbacks in order).
                self._loop.call_soon_threadsafe(self._cancel, part)
        self._wait()
        self._call(
            "abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
        )
