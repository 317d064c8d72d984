"""What the server's kick-off and status answers mean (sans-IO): plain functions of status
code, headers and body, shared by the synchronous client and the asynchronous trigger, so
both wait, retry and fail for the same reasons.

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from airflow_provider_backendauth.core.fhir.outcome import operation_outcome_text
from airflow_provider_backendauth.core.http.bodies import parse_json
from airflow_provider_backendauth.core.redact import redact
from airflow_provider_backendauth.core.retry import parse_retry_after


@dataclass(frozen=True)
class KickoffAccepted:
    """202: the export started; poll ``status_url``."""

    status_url: str


@dataclass(frozen=True)
class KickoffBusy:
    """429: the server is busy (often: another export of this client is running)."""

    retry_after: float | None
    diagnostics: str | None = None


@dataclass(frozen=True)
class KickoffRetry:
    """5xx or a ``transient`` OperationOutcome: try again later."""

    retry_after: float | None
    diagnostics: str | None = None
    status_code: int | None = None


@dataclass(frozen=True)
class KickoffFailed:
    """Any other answer: the request is wrong or not allowed."""

    diagnostics: str
    status_code: int | None = None


KickoffResult = KickoffAccepted | KickoffBusy | KickoffRetry | KickoffFailed


@dataclass(frozen=True)
class Pending:
    """Still running (202), or polled too often (429: wait, not an error)."""

    retry_after: float | None = None
    progress: str | None = None
    throttled: bool = False


@dataclass(frozen=True)
class Complete:
    """Done: the manifest (a JSON object) and the answer's ``Expires`` header."""

    manifest: dict[str, Any] = field(repr=False)
    expires: str | None = None


@dataclass(frozen=True)
class RetryLater:
    """A 5xx or a ``transient`` OperationOutcome (or no answer): poll again later."""

    retry_after: float | None = None
    reason: str = ""
    status_code: int | None = None


@dataclass(frozen=True)
class Failed:
    """The export failed for good; ``diagnostics`` quotes the server."""

    diagnostics: str
    status_code: int | None = None


StatusResult = Pending | Complete | RetryLater | Failed


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value from any mapping (case-insensitive ones or plain dicts)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def _json_body(body: bytes | str | None) -> Any:
    if not body:
        return None
    try:
        return parse_json(body)
    except (ValueError, UnicodeDecodeError):
        return None


def error_details(status_code: int, body: bytes | str | None) -> tuple[str, bool]:
    """(what the server said, transient?) for an error answer: the OperationOutcome's issues,
    else the start of the body (token-shaped text redacted), else the status."""
    diagnostics, transient = operation_outcome_text(_json_body(body))
    if diagnostics:
        return diagnostics, transient
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    text = redact(" ".join(text.split()))[:300]
    return (text or f"HTTP {status_code} without details"), False


GATEWAY_STATUSES = frozenset({502, 503, 504})


def is_retryable_error(status_code: int, body: bytes | str | None) -> bool:
    """Whether an error answer means "try again later".

    An OperationOutcome decides when there is one: ``transient`` issues are retryable, any
    other outcome is a real failure (Bulk Data IG), except from 502/503/504, which gateways
    and overloaded servers send. A 5xx without an OperationOutcome is retryable.
    """
    outcome, transient = operation_outcome_text(_json_body(body))
    if transient or status_code in GATEWAY_STATUSES:
        return True
    return status_code >= 500 and outcome is None


def interpret_kickoff(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes | str | None,
    *,
    request_url: str,
    now: float | None = None,
) -> KickoffResult:
    """What a kick-off answer means."""
    retry_after = parse_retry_after(header(headers, "Retry-After"), now)
    if status_code == 202:
        location = header(headers, "Content-Location")
        if not location:
            return KickoffFailed(
                "The server accepted the export (202) but sent no Content-Location header, "
                "so there is no status URL to poll.",
                status_code,
            )
        return KickoffAccepted(urljoin(request_url, location.strip()))
    diagnostics, _ = error_details(status_code, body)
    if status_code == 429:
        return KickoffBusy(retry_after, diagnostics)
    if is_retryable_error(status_code, body):
        return KickoffRetry(retry_after, diagnostics, status_code)
    if 200 <= status_code < 300:
        return KickoffFailed(
            f"The server answered the kick-off with HTTP {status_code} instead of 202 "
            "Accepted; it does not seem to run exports asynchronously.",
            status_code,
        )
    return KickoffFailed(diagnostics, status_code)


def interpret_status(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes | str | None,
    *,
    now: float | None = None,
) -> StatusResult:
    """What a status-poll answer means: Pending, Complete, RetryLater or Failed."""
    retry_after = parse_retry_after(header(headers, "Retry-After"), now)
    if status_code == 202:
        progress = header(headers, "X-Progress")
        # Server text bound for logs, events and XCom: redacted, control characters escaped.
        return Pending(retry_after, redact(progress.strip()[:200]) if progress else None)
    if status_code == 200:
        manifest = _json_body(body)
        if isinstance(manifest, dict) and isinstance(manifest.get("output"), list):
            expires = header(headers, "Expires")
            return Complete(manifest, expires.strip()[:100] if expires else None)
        diagnostics, _ = error_details(status_code, body)
        return Failed(
            f"The export finished but its manifest is not a JSON object with an 'output' "
            f"list: {diagnostics}",
            status_code,
        )
    if status_code == 429:
        return Pending(retry_after, None, throttled=True)
    diagnostics, _ = error_details(status_code, body)
    if is_retryable_error(status_code, body):
        return RetryLater(retry_after, f"HTTP {status_code}: {diagnostics}", status_code)
    if status_code == 404:
        return Failed(
            f"The export's status URL answered 404 ({diagnostics}): the export was cancelled, "
            "has expired, or the URL is wrong.",
            status_code,
        )
    if status_code in (401, 403):
        return Failed(
            f"The server refused the status request with HTTP {status_code} ({diagnostics}); "
            "check the client's scopes.",
            status_code,
        )
    return Failed(f"HTTP {status_code}: {diagnostics}", status_code)


def poll_delay(
    retry_after: float | None,
    *,
    previous: float | None,
    minimum: float,
    maximum: float,
    growth: float = 1.5,
) -> float:
    """Seconds until the next poll.

    The server's ``Retry-After`` wins, clamped to [minimum, maximum]. Without one, the delay
    starts at ``minimum`` and grows by ``growth`` each poll up to ``maximum``.
    """
    maximum = max(maximum, minimum)
    if retry_after is not None:
        return min(max(retry_after, minimum), maximum)
    if previous is None:
        return minimum
    return min(max(previous * growth, minimum), maximum)
