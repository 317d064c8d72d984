"""One file being downloaded: its uncommitted output, resume offset and counts.

Owns what a download attempt leaves behind for the next one: the temporary output (a local
temporary sibling, or an object-store upload whose parts are already stored; never a
partial file under a final name), the decoded offset a ``Range`` resume asks from, the line
tally and the ``organizeOutputBy`` header count, and gzip at rest (the deflater lives as long
as the output, so a resume continues the same stream). Apart from ``download.py``, which
decides when to resume, restart or commit, because this state outlives any one attempt.

This module imports no Airflow.
"""

from __future__ import annotations

import re

from airflow_provider_backendauth.core.bulk.compress import is_gzip_name, new_deflater
from airflow_provider_backendauth.core.bulk.line_tally import LineTally
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.atomic import AtomicFile
from airflow_provider_backendauth.core.storage.paths import StoragePath

log = get_logger(__name__)


class HeaderLines:
    """Counts the header lines of an ``organizeOutputBy`` file: lines that start with a
    ``Parameters`` resource (the only lines that do: a header leads each block). Only the
    first bytes of each line are kept, so memory stays flat."""

    PROBE = 64
    LINE = re.compile(rb'\s*\{\s*"resourceType"\s*:\s*"Parameters"')

    def __init__(self) -> None:
        self.headers = 0
        self._start = bytearray()

    def feed(self, data: bytes | bytearray, end: int | None = None) -> None:
        end = len(data) if end is None else end
        position = 0
        while position < end:
            newline = data.find(b"\n", position, end)
            stop = end if newline < 0 else newline
            room = self.PROBE - len(self._start)
            if room > 0:
                self._start += data[position : min(stop, position + room)]
            if newline < 0:
                return
            if self.LINE.match(self._start):
                self.headers += 1
            self._start = bytearray()
            position = newline + 1

    @property
    def total(self) -> int:
        """Header lines, the last one counted even without a final newline."""
        return self.headers + (1 if self.LINE.match(self._start) else 0)


class PartialFile:
    """A file being downloaded. Its uncommitted output (a local temporary file, or an
    object-store upload whose parts are already stored) outlives a failed attempt, so that
    the next attempt can ask for the rest only (``Range``) when the server supports it."""

    def __init__(self, target: StoragePath, skip_headers: bool = False) -> None:
        self.target = target
        self._atomic: AtomicFile | None = None
        # A planned name ending in .gz is stored gzipped (compress.py). The deflater lives
        # as long as the uncommitted output, so a Range resume continues the same stream.
        self._gzip = is_gzip_name(target.name)
        self._deflater = new_deflater() if self._gzip else None
        self.tally = LineTally()
        self._skip_headers = skip_headers
        self.headers = HeaderLines() if skip_headers else None
        self.resumable = False

    @property
    def offset(self) -> int:
        return self.tally.bytes

    def write(self, data: bytes | bytearray, end: int | None = None) -> None:
        """Append ``data[:end]``. A reused buffer is passed with ``end`` and written through
        a view: file objects copy what they are given before ``write`` returns."""
        if self._atomic is None:
            self._atomic = AtomicFile(self.target, "wb")
        if self._deflater is not None:
            self._atomic.handle.write(
                self._deflater.compress(data if end is None else memoryview(data)[:end])
            )
        elif end is None or end == len(data):
            self._atomic.handle.write(data)
        else:
            self._atomic.handle.write(memoryview(data)[:end])
        self.tally.feed(data, end)
        if self.headers is not None:
            self.headers.feed(data, end)

    @property
    def resources(self) -> int:
        """Lines, less ``organizeOutputBy`` header lines."""
        return self.tally.total - (self.headers.total if self.headers is not None else 0)

    def restart(self, why: str = "") -> None:
        if self.offset and why:
            log.warning(
                "Restarting %s from byte 0 (%s); the %d bytes written so far are dropped",
                self.target.name,
                why,
                self.offset,
            )
        self.discard()
        self._deflater = new_deflater() if self._gzip else None
        self.tally = LineTally()
        self.headers = HeaderLines() if self._skip_headers else None
        self.resumable = False

    def commit(self) -> None:
        atomic, self._atomic = self._atomic, None
        atomic = atomic or AtomicFile(self.target, "wb")  # an empty file is a file too
        if self._deflater is not None:
            atomic.handle.write(self._deflater.flush())  # the gzip trailer
        atomic.commit()

    def discard(self) -> None:
        if self._atomic is not None:
            self._atomic.discard()
            self._atomic = None
