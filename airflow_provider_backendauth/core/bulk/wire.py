"""The bytes of one export-file response as they arrive: raw-body reads, under limits.

Owns the one place outside ``core/http/`` that reads a response body itself (the exception
named in ``tests/architecture/test_transport_boundary.py``): an export file's body is
streamed raw, without urllib3's decoding, into one reusable buffer, and checked against its
``Content-Length``; an error answer is read up to ``ERROR_BODY_LIMIT`` and decoded within
bounds (``decode.py``). It also owns what such a read can report to the retry loop of
``download.py``: ``Retryable`` (a failed attempt worth another) and ``range_start`` (where a
``206`` answer starts).

This module imports no Airflow.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator

import requests
import urllib3

from airflow_provider_backendauth.core.bulk.decode import BodyDecoder, DecodeLimits
from airflow_provider_backendauth.core.errors import BulkExportError

ERROR_BODY_LIMIT = 64 * 1024


class Retryable(Exception):
    """One download attempt failed in a way another attempt may cure (the retry loop's
    signal; never raised out of ``download.py``)."""

    def __init__(self, message: str, retry_after: float | None = None, throttled: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


def range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


class Wire:
    """The bytes received for one streamed response, as they came (no urllib3 decoding),
    read into one reusable buffer; checks the body against ``Content-Length``."""

    def __init__(self, response: requests.Response, size: int) -> None:
        self.buffer = bytearray(size)
        self.received = 0
        self.complete = False
        self._response = response
        raw = response.raw
        fp = getattr(raw, "_fp", None)
        # Reading the standard library's response directly saves urllib3's copy per chunk;
        # anything else (or a body urllib3 already started) goes through urllib3.
        self._direct = isinstance(fp, http.client.HTTPResponse) and not getattr(
            raw, "_fp_bytes_read", 0
        )
        self._fp = fp
        headers = response.headers
        length = headers.get("Content-Length")
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.length = int(length) if length and length.strip().isdigit() and not chunked else None

    def __iter__(self) -> Iterator[tuple[bytes | bytearray, int]]:
        """``(data, n)``: ``data[:n]`` are the next bytes; ``data`` may be the shared buffer."""
        if self._direct:
            assert self._fp is not None
            readinto = self._fp.readinto
            buffer = self.buffer
            while n := readinto(buffer):
                self.received += n
                yield buffer, n
        else:
            read = self._response.raw.read
            while chunk := read(len(self.buffer), decode_content=False):
                self.received += len(chunk)
                yield chunk, len(chunk)
        if self.length is not None and self.received < self.length:
            raise Retryable(
                f"the body ended after {self.received} of the {self.length} bytes its "
                "Content-Length announced"
            )
        self.complete = True

    def release(self) -> None:
        """Give the connection back to the pool (the body was read to its end)."""
        if self.complete and self._direct:
            release = getattr(self._response.raw, "release_conn", None)
            if release is not None:
                release()


def error_body(response: requests.Response, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """At most ``limit`` bytes of an error answer, decoded within bounds: enough for an
    OperationOutcome, never a hostile server's gigabyte."""
    decoder = BodyDecoder(
        response.headers.get("Content-Encoding"),
        sniff_gzip=False,
        limits=DecodeLimits(max_file_bytes=limit, ratio_floor=limit),
        what="the error answer",
        out_size=limit,
    )
    out = bytearray()
    try:
        raw = response.raw.read(limit, decode_content=False) or b""
        for piece in decoder.feed(raw):
            out += piece
    except (BulkExportError, OSError, http.client.HTTPException):  # CorruptBodyError too
        pass  # a broken error answer: what arrived is still worth quoting
    except (requests.RequestException, urllib3.exceptions.HTTPError):
        pass
    return bytes(out[:limit])
