"""Bounded reading of API answers: a size limit on the decoded body, within the request's
total deadline.

``response.content`` decodes a gzip body whole: a 1 MB bomb becomes gigabytes in memory.
``read_body`` reads the (decoded) body in small steps, each a single socket read (urllib3
``read1``, whose decoder output per call is bounded), and stops with a clear error when the
body grows past ``max_bytes`` or the request's deadline passes (``core/http/deadline.py`` owns the
deadline: it also bounds the status line and headers, which arrive before this reads).

Token answers (``MAX_TOKEN_RESPONSE_BYTES``), REST/FHIR answers (``RestClient``'s
``max_response_bytes``) and FHIR search pages (``max_page_bytes``) are read through it. Bulk
file downloads have their own streaming limits (``core/bulk/download.py``).
"""

from __future__ import annotations

from typing import Any

import requests

from airflow_provider_backendauth.core.errors import ResponseTooLargeError
from airflow_provider_backendauth.core.http.deadline import Deadline, deadline_of
from airflow_provider_backendauth.core.urls import display_url

DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
_READ_SIZE = 64 * 1024


def read_body(
    response: requests.Response,
    *,
    max_bytes: int,
    deadline: Deadline | None,
    what: str,
    setting: str,
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

    Raises:
        ResponseTooLargeError: the decoded body passed ``max_bytes``.
        DeadlineExceededError: the deadline passed before the body was complete.
    """
    deadline = deadline_of(response) or deadline
    raw = response.raw
    reader = getattr(raw, "read1", None)
    body = bytearray()
    try:
        while True:
            if deadline is not None and deadline.passed():
                raise deadline.error(f"{what}: {display_url(response.url)}")
            chunk = _read(reader or raw.read)
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                raise ResponseTooLargeError(
                    f"{what}: the answer from {display_url(response.url)} is larger than "
                    f"{max_bytes} bytes (decoded). If that is legitimate, raise '{setting}'; a "
                    "much smaller compressed body means a decompression bomb.",
                    status_code=response.status_code,
                )
    except BaseException:
        response.close()
        raise
    content = bytes(body)
    response._content = content
    response._content_consumed = True  # type: ignore[attr-defined]
    release = getattr(raw, "release_conn", None)
    if release is not None:
        release()
    return content


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
