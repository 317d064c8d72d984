"""One object-store file written under its final key that appears only on ``commit()``.

Guarantee: nothing is visible under the name before ``commit()``, nothing after
``discard()``, and nothing is ever copied server-side. Bytes are buffered in memory up to
one part; a file that stays smaller than one part is stored by one ``PUT`` at commit (what
s3fs does for small files too). Past that the upload starts: S3 through ``s3_parts``
(several parts in flight), every other store through an fsspec file
(``fsspec_uploads``).

Limits: memory per file is at most ``(parts_in_flight + 1) * part_size`` on S3 and about
one part elsewhere; fsspec's memory filesystem keeps the whole file buffered (it is in
memory anyway, and publishes on open).

This module imports no Airflow.
"""

from __future__ import annotations

import io
from typing import Any

from airflow_provider_backendauth.core.storage import s3_parts
from airflow_provider_backendauth.core.storage.fsspec_uploads import (
    close_unflushed,
    open_uncommitted,
)
from airflow_provider_backendauth.core.storage.s3_parts import S3Parts, is_s3

# Bytes kept in memory before an object-store upload starts; also the multipart part size.
# S3's 10,000-part limit allows files up to 160 GB with 16 MiB parts (its minimum is 5 MiB).
DEFAULT_PART_SIZE = 16 * 2**20


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class UncommittedUpload(io.RawIOBase):
    """A binary writer for one object-store file that becomes visible only on ``commit()``.

    Bytes are buffered in memory up to ``part_size``; past that the upload starts. On S3 it
    is a multipart upload fed part by part, up to ``parts_in_flight`` parts uploading while
    the next one fills (``s3_parts.S3Parts``); on other stores an fsspec file opened with
    ``autocommit=False`` receives the buffer and everything after it. ``commit()``
    completes the upload (or, for a small file, stores the buffer with one ``pipe_file``);
    ``discard()`` aborts it. Nothing is ever copied server-side.
    """

    def __init__(
        self, fs: Any, path: str, part_size: int, parts_in_flight: int | None = None
    ) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self.part_size = part_size
        # The default is read when a file opens, so benchmarks/s3.py can set it.
        self.parts_in_flight = (
            s3_parts.DEFAULT_PARTS_IN_FLIGHT if parts_in_flight is None else parts_in_flight
        )
        self._buffer: bytearray | None = bytearray()
        self._file: Any = None  # the fsspec file, once the data outgrew the buffer
        self._s3: S3Parts | None = None  # S3's multipart upload, likewise
        # fsspec's memory filesystem publishes a file as soon as it is opened, whatever
        # ``autocommit`` says; since it keeps everything in memory anyway, buffer it all.
        self._buffer_only = "memory" in _protocols(fs)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"write to a closed upload of {self.path}")
        view = memoryview(data).cast("B")
        if self._file is not None:
            self._file.write(view)
        else:
            buffer = self._buffer
            assert buffer is not None
            if self._s3 is not None:
                self._s3.check()  # a part that failed meanwhile fails this write
            buffer += view
            if len(buffer) >= self.part_size and not self._buffer_only:
                if self._s3 is None and self._file is None:
                    self._start_upload()
                if self._s3 is not None:
                    self._send_full_parts()
        self.size += len(view)
        return len(view)

    def _start_upload(self) -> None:
        if is_s3(self.fs):
            self._s3 = S3Parts(self.fs, self.path, self.parts_in_flight)
            return
        file = self._file = open_uncommitted(self.fs, self.path, self.part_size)
        buffer, self._buffer = self._buffer, None
        file.write(bytes(buffer or b""))

    def _send_full_parts(self) -> None:
        assert self._s3 is not None and self._buffer is not None
        buffer = self._buffer
        while len(buffer) >= self.part_size:
            # Parts of exactly part_size (some S3-compatible stores require equal parts).
            # send() copies the part (its own memory while it uploads); deleting a
            # bytearray's head only moves its start, so the buffer keeps its allocation.
            part = memoryview(buffer)[: self.part_size]
            try:
                self._s3.send(part)
            finally:
                part.release()  # the buffer cannot shrink while a view of it exists
            del buffer[: self.part_size]

    def commit(self) -> None:
        """Make the file visible under its name (complete the upload)."""
        if self.closed:
            raise ValueError(f"the upload of {self.path} was already finished")
        try:
            if self._s3 is not None:
                if self._buffer:  # the last part (the only one allowed below 5 MiB)
                    self._s3.send(self._buffer)
                self._buffer = None
                self._s3.complete()
            elif self._file is None:
                self.fs.pipe_file(self.path, bytes(self._buffer or b""))
            else:
                self._file.close()  # uploads the last part; the object is still invisible
                self._file.commit()
            self._s3 = self._file = None  # committed: nothing left to abort
        finally:
            self._buffer = None
            super().close()

    def discard(self) -> None:
        """Abort the upload: no object appears. Idempotent."""
        if self.closed and self._s3 is None and self._file is None:
            return
        file, self._file, self._buffer = self._file, None, None
        s3, self._s3 = self._s3, None
        super().close()
        if s3 is not None:
            s3.abort()  # also after a failed commit: the upload may still be open
        if file is not None:
            try:
                file.discard()  # GCS: cancels the resumable upload; Azure: nothing
            finally:
                close_unflushed(file)

    def __del__(self) -> None:
        # Dropped unfinished (neither committed nor discarded): the store's file must not
        # publish itself from its own finalizer (adlfs's closes an unclosed file, and that
        # commits its blocks). No request: what was sent stays uncommitted, as after a kill.
        if not self.closed and self._file is not None:
            close_unflushed(self._file)

    def close(self) -> None:
        # Closing is not committing: an AtomicFile decides which of the two happens.
        # (io.TextIOWrapper closes its buffer when it is closed; that must not upload.)
        pass

    @property
    def bytes_uploaded(self) -> int:
        """Bytes in parts the store has acknowledged."""
        if self._s3 is not None:
            return sum(p.size for p in self._s3.stored)
        return int(getattr(self._file, "offset", 0) or 0)
