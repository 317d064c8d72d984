"""Bounded reading of API answers: a size limit on the decoded body, per purpose, within the
request's total deadline, for both drivers.

``response.content`` (requests, and aiohttp's ``read()`` alike) decodes a gzip body whole: a
300 KB bomb becomes gigabytes in memory. ``read_body`` (requests) reads the decoded body in
small steps, each a single socket read (urllib3 ``read1``, whose decoder output per call is
bounded); ``BoundedDecoder`` does the same for raw bytes (the triggerer's
``core/http/aiohttp_driver.py``). Both stop with a clear error when the body grows past its
cap, and ``read_body`` when the request's deadline passes (``core/http/deadline.py`` owns the
deadline: it also bounds the status line and headers, which arrive before this reads).

The caps (``docs/security.md`` lists them with their settings):

- ``MAX_TOKEN_RESPONSE_BYTES`` (1 MiB): a token answer;
- ``MAX_DISCOVERY_BYTES`` (1 MiB): a SMART discovery document;
- ``MAX_ERROR_BODY_BYTES`` (64 KiB): the body of any answer that is not a 2xx, read only to
  quote the server's explanation: cut at the cap (``cap_for``), never an error of its own;
- ``MAX_STATUS_BYTES`` (64 MiB): a Bulk Data status answer (the manifest page);
- ``DEFAULT_MAX_RESPONSE_BYTES`` (256 MiB): REST/FHIR answers (``RestClient``'s
  ``max_response_bytes``), FHIR search pages (``max_page_bytes``) and any unstreamed answer
  read through our sessions. Bulk file downloads have their own streaming limits
  (``core/bulk/download.py``).

JSON from servers is parsed by ``parse_json``: a document nested too deeply is a clear
``ValueError``, not a ``RecursionError``.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import requests

from airflow_provider_backendauth.core.errors import ResponseTooLargeError
from airflow_provider_backendauth.core.http.deadline import Deadline, deadline_of
from airflow_provider_backendauth.core.urls import display_url

DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
MAX_DISCOVERY_BYTES = 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_STATUS_BYTES = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024
FIXED_LIMIT = "(a fixed limit: no legitimate answer of this kind is this large)"


def cap_for(status: int, max_bytes: int) -> tuple[int, bool]:
    """``(cap, truncate)`` for an answer with ``status``: a 2xx is read up to ``max_bytes``
    (past it: ``ResponseTooLargeError``); any other answer's body is only quoted in an error,
    so it is cut at ``MAX_ERROR_BODY_BYTES`` (or ``max_bytes`` if smaller)."""
    if 200 <= status < 300:
        return max_bytes, False
    return min(max_bytes, MAX_ERROR_BODY_BYTES), True


def too_large(
    what: str, url: str, max_bytes: int, setting: str, status: int
) -> ResponseTooLargeError:
    """The error for a body past its cap (both drivers raise this one)."""
    return ResponseTooLargeError(
        f"{what}: the answer from {display_url(url)} is larger than {max_bytes} bytes "
        f"(decoded). If that is legitimate, raise '{setting}'; a much smaller compressed body "
        "means a decompression bomb.",
        status_code=status,
    )


def read_body(
    response: requests.Response,
    *,
    max_bytes: int,
    deadline: Deadline | None,
    what: str,
    setting: str,
    truncate: bool = False,
) -> bytes:
    """Read ``response``'s decoded body (opened with ``stream=True``) within the limits, and
    store it so ``response.content``/``.json()`` work as usual.

    Args:
        response: a streamed response.
        max_bytes: the largest decoded body accepted.
        deadline: the request's deadline when it was sent through a session without
            ``DeadlineAdapter`` (one that has it gives the response its own, used instead).
        what: names the call in errors ("Patient search (page 2)").
        setting: the setting that raises ``max_bytes``, named in the error.
        truncate: keep the first ``max_bytes`` and close the connection instead of failing
            (an error answer's body, only ever quoted).

    Raises:
        ResponseTooLargeError: the decoded body passed ``max_bytes`` (not ``truncate``).
        DeadlineExceededError: the deadline passed before the body was complete.
    """
    deadline = deadline_of(response) or deadline
    raw = response.raw
    reader = getattr(raw, "read1", None)
    body = bytearray()
    complete = True
    try:
        while True:
            if deadline is not None and deadline.passed():
                raise deadline.error(f"{what}: {display_url(response.url)}")
            chunk = _read(reader or raw.read)
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                if not truncate:
                    raise too_large(what, response.url, max_bytes, setting, response.status_code)
                del body[max_bytes:]
                complete = False
                break
    except BaseException:
        response.close()
        raise
    if not complete:
        response.raw.close()  # the rest is never read: the connection cannot be reused
    content = bytes(body)
    response._content = content
    response._content_consumed = True  # type: ignore[attr-defined]
    if not complete:
        return content
    release = getattr(raw, "release_conn", None)
    if release is not None:
        release()
    return content


def read_answer(
    response: requests.Response,
    *,
    max_bytes: int,
    what: str,
    setting: str,
    deadline: Deadline | None = None,
) -> bytes:
    """``read_body`` with the cap ``cap_for`` gives the answer's status."""
    cap, truncate = cap_for(response.status_code, max_bytes)
    return read_body(
        response, max_bytes=cap, deadline=deadline, what=what, setting=setting, truncate=truncate
    )


def discard_body(response: requests.Response) -> None:
    """Never read this answer's body (a redirect's, or one to be dropped): close it and leave
    it empty, so ``response.content`` cannot read it later."""
    response.raw.close()  # unread: the connection is not reused
    response._content = b""
    response._content_consumed = True  # type: ignore[attr-defined]


class BoundedDecoder:
    """Decodes a raw body (``Content-Encoding`` gzip, deflate or none) chunk by chunk without
    ever holding more than the cap: each inflate step is limited (``max_length``), so a bomb
    stops at the cap, not after a whole chunk has expanded.

    Args:
        encoding: the answer's ``Content-Encoding`` header (None: identity).
        max_bytes: the cap on the decoded body.
        truncate: stop quietly at the cap (``full`` becomes true) instead of raising.
        error: builds the exception raised past the cap.
    """

    def __init__(
        self,
        encoding: str | None,
        max_bytes: int,
        *,
        truncate: bool = False,
        error: Any = None,
    ) -> None:
        codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
        # wbits 47: a gzip or zlib header, detected; raw deflate is tried if that fails.
        self._inflater = zlib.decompressobj(47) if codings else None
        self._raw_deflate = codings == ["deflate"]
        self.max_bytes = max_bytes
        self.truncate = truncate
        self._error = error
        self.body = bytearray()
        self.full = False

    def feed(self, data: bytes) -> None:
        """Decode ``data`` into ``body`` (nothing once ``full``)."""
        if self.full or not data:
            return
        if self._inflater is None:
            self._append(data)
            return
        pending = data
        while pending and not self.full:
            # Small steps: one step's output is all that exists beside the body so far.
            room = min(self.max_bytes + 1 - len(self.body), _READ_SIZE)
            try:
                out = self._inflater.decompress(pending, room)
            except zlib.error:
                if self._raw_deflate and not self.body:  # deflate without the zlib header
                    self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._raw_deflate = False
                    continue
                raise
            pending = self._inflater.unconsumed_tail
            self._append(out)
            if self._inflater.eof:
                break

    def _append(self, data: bytes) -> None:
        self.body += data
        if len(self.body) > self.max_bytes:
            if not self.truncate:
                raise self._error() if self._error else ValueError("body too large")
            del self.body[self.max_bytes :]
            self.full = True


def body_of(response: requests.Response) -> bytes:
    """The body the transport read for ``response`` (within its cap). Modules outside
    ``core/http/`` take a body through here, never from the response itself, so no body is
    read without a cap (``tests/architecture`` checks it).

    Raises:
        RuntimeError: the body was streamed and not read by the transport (a bug).
    """
    if not getattr(response, "_content_consumed", False) and response.raw is not None:
        raise RuntimeError(
            "the answer's body was not read by the transport: read it with read_body/"
            "read_answer (a cap) before using it"
        )
    return response.content


def error_body_of(response: requests.Response) -> bytes:
    """An error answer's body for quoting: the one the transport read, or (a streamed
    answer) its first ``MAX_ERROR_BODY_BYTES``, read now."""
    if not getattr(response, "_content_consumed", False) and response.raw is not None:
        read_body(
            response,
            max_bytes=MAX_ERROR_BODY_BYTES,
            deadline=None,
            what="The error answer",
            setting=FIXED_LIMIT,
            truncate=True,
        )
    return body_of(response)


def text_of(response: requests.Response) -> str:
    """``body_of`` as text (the answer's charset, else UTF-8; undecodable bytes replaced)."""
    body = body_of(response)
    return body.decode(response.encoding or "utf-8", "replace")


def json_of(response: requests.Response) -> Any:
    """``body_of`` parsed as JSON (``parse_json``: deep nesting is a clear ``ValueError``)."""
    return parse_json(body_of(response))


def parse_json(body: bytes | str) -> Any:
    """``json.loads``, with a document nested too deeply for the parser (Python's recurses per
    level) refused with a clear ``ValueError`` instead of a ``RecursionError`` that breaks
    whatever is running."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("a JSON document nested too deeply to parse; refused") from None


def _read(read: Any) -> bytes:
    """One read, with urllib3's exceptions turned into the ones requests raises for them
    (what the retry logic knows)."""
    from urllib3 import exceptions as u3

    try:
        chunk: bytes = read(_READ_SIZE, decode_content=True)
    except u3.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except u3.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except u3.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except u3.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    return chunk
