"""FHIR Bulk Data ``$export``: the request, what the server's answers mean, the manifest, and
a synchronous client for kick-off, status polling and cancellation.

The interpretation of kick-off and status responses is sans-IO (``interpret_kickoff``,
``interpret_status``, ``poll_delay``): plain functions of status code, headers and body,
shared by the synchronous client here and the asynchronous trigger, so both wait, retry and
fail for the same reasons.

This module imports no Airflow.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urljoin

import requests

from airflow_provider_backendauth.core.bulk.http import BulkHttp, display_url, with_query
from airflow_provider_backendauth.core.errors import BulkExportError, ConfigurationError
from airflow_provider_backendauth.core.fhir.outcome import operation_outcome_text
from airflow_provider_backendauth.core.redact import redact
from airflow_provider_backendauth.core.retry import parse_retry_after
from airflow_provider_backendauth.core.urls import join_url

log = logging.getLogger(__name__)

LEVELS = ("system", "patient", "group")
FHIR_JSON = "application/fhir+json"
KICKOFF_HEADERS = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
STATUS_HEADERS = {"Accept": "application/json"}


# --- the request ------------------------------------------------------------------------


def as_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """A parameter value as a tuple: comma-separated text is split, blanks dropped."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(item.strip() for item in items if item and item.strip())


def format_instant(value: str | datetime | None) -> str | None:
    """A FHIR instant from a datetime (naive means UTC) or text (returned stripped)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class BulkExportRequest:
    """What to export. Build it with ``BulkExportRequest.create(...)`` for friendly inputs.

    Attributes:
        level: ``system`` (``[base]/$export``), ``patient`` (``Patient/$export``) or
            ``group`` (``Group/{group_id}/$export``).
        group_id: the Group's id, for ``level="group"``.
        types: ``_type`` resource types.
        since: ``_since`` instant.
        until: ``_until`` instant (Bulk Data 3.0).
        elements: ``_elements``.
        type_filters: ``_typeFilter`` queries (each like ``Observation?category=vital-signs``).
        patients: ``patient`` references (POST only), e.g. ``Patient/123``.
        include_associated_data: ``includeAssociatedData`` values.
        output_format: ``_outputFormat`` (server default: ``application/fhir+ndjson``).
        method: ``GET`` or ``POST`` (a ``Parameters`` body); None picks POST when patients
            are given, else GET.
        extra_params: other (name, value) parameters for vendor extensions.
    """

    level: str = "system"
    group_id: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    elements: tuple[str, ...] = ()
    type_filters: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    include_associated_data: tuple[str, ...] = ()
    output_format: str | None = None
    method: str | None = None
    extra_params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ConfigurationError(
                f"Bulk export level {self.level!r} is not one of {', '.join(LEVELS)}."
            )
        if self.level == "group" and not self.group_id:
            raise ConfigurationError("A group-level export needs group_id (the Group's id).")
        if self.level != "group" and self.group_id:
            raise ConfigurationError(
                f"group_id is only used with level='group', not {self.level!r}."
            )
        if self.method is not None and self.method.upper() not in ("GET", "POST"):
            raise ConfigurationError(
                f"Bulk export method must be GET or POST, not {self.method!r}."
            )
        if self.patients and self.http_method != "POST":
            raise ConfigurationError(
                "The 'patient' parameter can only be sent in a POST kick-off; leave method unset "
                "or set it to 'POST'."
            )
        if self.patients and self.level == "system":
            raise ConfigurationError(
                "The 'patient' parameter applies to patient- and group-level exports only."
            )

    @classmethod
    def create(
        cls,
        level: str = "system",
        *,
        group_id: str | None = None,
        types: str | Iterable[str] | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        elements: str | Iterable[str] | None = None,
        type_filters: str | Iterable[str] | None = None,
        patients: str | Iterable[str] | None = None,
        include_associated_data: str | Iterable[str] | None = None,
        output_format: str | None = None,
        method: str | None = None,
        extra_params: Mapping[str, str | Iterable[str]] | None = None,
    ) -> BulkExportRequest:
        """Build a request from strings (comma lists), sequences or datetimes.

        ``type_filters`` is never split on commas (a filter query may contain them): pass
        several filters as a list.
        """
        if isinstance(type_filters, str):
            filters: tuple[str, ...] = (type_filters.strip(),) if type_filters.strip() else ()
        else:
            filters = tuple(str(f).strip() for f in (type_filters or ()) if str(f).strip())
        extra: list[tuple[str, str]] = []
        for name, value in (extra_params or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            extra.extend((str(name), str(v)) for v in values)
        return cls(
            level=(level or "system").strip().lower(),
            group_id=(group_id or "").strip() or None,
            types=as_list(types),
            since=format_instant(since),
            until=format_instant(until),
            elements=as_list(elements),
            type_filters=filters,
            patients=tuple(_patient_reference(p) for p in as_list(patients)),
            include_associated_data=as_list(include_associated_data),
            output_format=(output_format or "").strip() or None,
            method=method.upper() if method else None,
            extra_params=tuple(extra),
        )

    @property
    def http_method(self) -> str:
        if self.method:
            return self.method.upper()
        return "POST" if self.patients else "GET"

    @property
    def path(self) -> str:
        """The kick-off path relative to the FHIR base URL."""
        if self.level == "patient":
            return "Patient/$export"
        if self.level == "group":
            return f"Group/{quote(str(self.group_id), safe='')}/$export"
        return "$export"

    def url(self, base_url: str) -> str:
        """The kick-off URL (with the query string for GET)."""
        url = join_url(base_url, self.path)
        return with_query(url, self.query()) if self.http_method == "GET" else url

    def query(self) -> list[tuple[str, str]]:
        """The parameters as query pairs (GET kick-off)."""
        pairs: list[tuple[str, str]] = []
        if self.output_format:
            pairs.append(("_outputFormat", self.output_format))
        if self.since:
            pairs.append(("_since", self.since))
        if self.until:
            pairs.append(("_until", self.until))
        if self.types:
            pairs.append(("_type", ",".join(self.types)))
        if self.elements:
            pairs.append(("_elements", ",".join(self.elements)))
        pairs.extend(("_typeFilter", f) for f in self.type_filters)
        if self.include_associated_data:
            pairs.append(("includeAssociatedData", ",".join(self.include_associated_data)))
        pairs.extend(self.extra_params)
        return pairs

    def parameters(self) -> dict[str, Any]:
        """The parameters as a FHIR ``Parameters`` resource (POST kick-off)."""
        parameter: list[dict[str, Any]] = []
        for name, value in self.query():
            if name in ("_since", "_until"):
                parameter.append({"name": name, "valueInstant": value})
            elif name == "includeAssociatedData":
                parameter.extend({"name": name, "valueCode": v} for v in value.split(","))
            else:
                parameter.append({"name": name, "valueString": value})
        parameter.extend(
            {"name": "patient", "valueReference": {"reference": p}} for p in self.patients
        )
        return {"resourceType": "Parameters", "parameter": parameter}

    def describe(self) -> str:
        """One line for logs."""
        what = f"{self.level}-level" + (f" (Group/{self.group_id})" if self.group_id else "")
        details = [f"types={','.join(self.types) or 'all'}"]
        if self.since:
            details.append(f"since={self.since}")
        if self.until:
            details.append(f"until={self.until}")
        if self.patients:
            details.append(f"patients={len(self.patients)}")
        return f"{what} $export via {self.http_method}, {', '.join(details)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "group_id": self.group_id,
            "types": list(self.types),
            "since": self.since,
            "until": self.until,
            "elements": list(self.elements),
            "type_filters": list(self.type_filters),
            "patients": list(self.patients),
            "include_associated_data": list(self.include_associated_data),
            "output_format": self.output_format,
            "method": self.method,
            "extra_params": [list(p) for p in self.extra_params],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BulkExportRequest:
        return cls(
            level=data.get("level", "system"),
            group_id=data.get("group_id"),
            types=tuple(data.get("types") or ()),
            since=data.get("since"),
            until=data.get("until"),
            elements=tuple(data.get("elements") or ()),
            type_filters=tuple(data.get("type_filters") or ()),
            patients=tuple(data.get("patients") or ()),
            include_associated_data=tuple(data.get("include_associated_data") or ()),
            output_format=data.get("output_format"),
            method=data.get("method"),
            extra_params=tuple((str(n), str(v)) for n, v in data.get("extra_params") or ()),
        )


def _patient_reference(value: str) -> str:
    value = value.strip()
    return value if "/" in value else f"Patient/{value}"


# --- what the server's answers mean (sans-IO) -------------------------------------------


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
    """Done: the manifest (a JSON object)."""

    manifest: dict[str, Any] = field(repr=False)


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
        return json.loads(body)
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
        return Pending(retry_after, progress.strip()[:200] if progress else None)
    if status_code == 200:
        manifest = _json_body(body)
        if isinstance(manifest, dict) and isinstance(manifest.get("output"), list):
            return Complete(manifest)
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


# --- the manifest -----------------------------------------------------------------------

FILE_KINDS = ("output", "error", "deleted")


@dataclass(frozen=True)
class ManifestEntry:
    """One file listed in the manifest."""

    kind: str
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class BulkManifest:
    """The completed export's manifest.

    Attributes:
        transaction_time: the server's ``transactionTime`` (the next incremental ``_since``).
        requires_access_token: whether file downloads need the bearer token.
        output, error, deleted: the listed files.
        raw: the manifest as received.
    """

    transaction_time: str | None
    request: str | None
    requires_access_token: bool
    output: tuple[ManifestEntry, ...]
    error: tuple[ManifestEntry, ...]
    deleted: tuple[ManifestEntry, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> BulkManifest:
        """Parse a manifest; raises ``BulkExportError`` when it is unusable."""
        if not isinstance(body, Mapping) or not isinstance(body.get("output"), list):
            raise BulkExportError("The export manifest has no 'output' list.")
        lists: dict[str, tuple[ManifestEntry, ...]] = {}
        for kind in FILE_KINDS:
            items = body.get(kind) or []
            if not isinstance(items, list):
                raise BulkExportError(f"The export manifest's {kind!r} is not a list.")
            entries = []
            for position, item in enumerate(items):
                if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
                    raise BulkExportError(
                        f"The export manifest's {kind}[{position}] has no 'url' string."
                    )
                count = item.get("count")
                entries.append(
                    ManifestEntry(
                        kind=kind,
                        type=str(item.get("type") or ""),
                        url=item["url"],
                        count=count if isinstance(count, int) and count >= 0 else None,
                    )
                )
            lists[kind] = tuple(entries)
        requires = body.get("requiresAccessToken")
        return cls(
            transaction_time=_str_or_none(body.get("transactionTime")),
            request=_str_or_none(body.get("request")),
            # Missing: assume a token is needed (it still goes to allowed origins only).
            requires_access_token=requires if isinstance(requires, bool) else True,
            output=lists["output"],
            error=lists["error"],
            deleted=lists["deleted"],
            raw=dict(body),
        )

    @property
    def entries(self) -> tuple[ManifestEntry, ...]:
        return self.output + self.error + self.deleted


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- the synchronous client -------------------------------------------------------------


class BulkExportClient:
    """Kick-off, status polling and cancellation over ``BulkHttp`` (blocking).

    Args:
        http: the authenticated HTTP helper.
        base_url: the FHIR base URL.
        poll_interval_min: shortest wait between polls (also floors ``Retry-After``).
        poll_interval_max: longest wait between polls (also caps ``Retry-After``).
        kickoff_busy_budget: seconds to keep retrying a kick-off answered 429 (the server
            runs another export of this client) before failing.
        max_transient_errors: consecutive transient failures (5xx, ``transient``
            OperationOutcomes, network errors) tolerated while polling or kicking off.
        stop: set it to make waits end early (``on_kill``).
        clock: a monotonic clock (tests).
    """

    def __init__(
        self,
        http: BulkHttp,
        base_url: str,
        *,
        poll_interval_min: float = 2.0,
        poll_interval_max: float = 3600.0,
        kickoff_busy_budget: float = 300.0,
        max_transient_errors: int = 10,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.poll_interval_min = poll_interval_min
        self.poll_interval_max = poll_interval_max
        self.kickoff_busy_budget = kickoff_busy_budget
        self.max_transient_errors = max_transient_errors
        self.stop = stop or threading.Event()
        self._clock = clock

    def _sleep(self, seconds: float, why: str) -> None:
        if self.stop.wait(max(0.0, seconds)):
            raise BulkExportError(f"Stopped while {why}.")

    def kickoff(self, request: BulkExportRequest) -> str:
        """Start the export; returns the status URL.

        A 429 answer (another export running) is waited out within ``kickoff_busy_budget``;
        5xx/transient answers are retried up to ``max_transient_errors`` times.
        """
        url = request.url(self.base_url)
        started = self._clock()
        transient = 0
        delay: float | None = None
        log.info("Starting a %s at %s", request.describe(), display_url(url))
        while True:
            result = self._kickoff_once(request, url)
            if isinstance(result, KickoffAccepted):
                log.info("Export accepted; status URL %s", display_url(result.status_url))
                return result.status_url
            if isinstance(result, KickoffFailed):
                raise BulkExportError(
                    f"The $export kick-off at {display_url(url)} failed"
                    + (f" with HTTP {result.status_code}" if result.status_code else "")
                    + f": {result.diagnostics}",
                    status_code=result.status_code,
                    diagnostics=result.diagnostics,
                )
            delay = poll_delay(
                result.retry_after,
                previous=delay,
                minimum=self.poll_interval_min,
                maximum=self.poll_interval_max,
            )
            if isinstance(result, KickoffBusy):
                waited = self._clock() - started
                if waited + delay > self.kickoff_busy_budget:
                    raise BulkExportError(
                        f"The server kept answering the $export kick-off with 429 (busy: "
                        f"{result.diagnostics or 'no details'}) for {waited:.0f} s, longer than "
                        f"kickoff_busy_budget={self.kickoff_busy_budget:.0f} s. Another export "
                        "by this client may be running; cancel it or raise the budget.",
                        status_code=429,
                        diagnostics=result.diagnostics,
                        transient=True,
                    )
                log.info("Server busy (429) on kick-off; retrying in %.1f s", delay)
            else:
                transient += 1
                if transient > self.max_transient_errors:
                    raise BulkExportError(
                        f"The $export kick-off at {display_url(url)} kept failing "
                        f"({result.diagnostics}); gave up after {transient} attempts.",
                        status_code=result.status_code,
                        diagnostics=result.diagnostics,
                        transient=True,
                    )
                log.warning(
                    "Kick-off failed transiently (%s); retrying in %.1f s",
                    result.diagnostics,
                    delay,
                )
            self._sleep(delay, "waiting to retry the kick-off")

    def _kickoff_once(self, request: BulkExportRequest, url: str) -> KickoffResult:
        post = request.http_method == "POST"
        headers = dict(KICKOFF_HEADERS)
        if post:
            headers["Content-Type"] = FHIR_JSON
        try:
            response = self.http.send(
                request.http_method,
                url,
                headers=headers,
                json=request.parameters() if post else None,
            )
        except requests.RequestException as exc:
            return KickoffRetry(None, f"no answer ({type(exc).__name__})")
        with response:
            return interpret_kickoff(
                response.status_code, response.headers, response.content, request_url=url
            )

    def poll(self, status_url: str) -> StatusResult:
        """One status request."""
        try:
            response = self.http.send("GET", status_url, headers=STATUS_HEADERS)
        except requests.RequestException as exc:
            return RetryLater(None, f"no answer ({type(exc).__name__})")
        with response:
            return interpret_status(response.status_code, response.headers, response.content)

    def wait(
        self,
        status_url: str,
        *,
        deadline: float | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> BulkManifest:
        """Poll until the export completes; returns its manifest.

        Args:
            status_url: from the kick-off.
            deadline: a ``time.time()`` after which to give up.
            on_progress: called with each new ``X-Progress`` text.
        """
        delay: float | None = None
        transient = 0
        last_progress: str | None = None
        while True:
            result = self.poll(status_url)
            if isinstance(result, Complete):
                return BulkManifest.from_json(result.manifest)
            if isinstance(result, Failed):
                raise BulkExportError(
                    f"The export at {display_url(status_url)} failed: {result.diagnostics}",
                    status_code=result.status_code,
                    diagnostics=result.diagnostics,
                )
            if isinstance(result, RetryLater):
                transient += 1
                if transient > self.max_transient_errors:
                    raise BulkExportError(
                        f"Polling {display_url(status_url)} kept failing ({result.reason}); gave "
                        f"up after {transient} consecutive errors.",
                        status_code=result.status_code,
                        diagnostics=result.reason,
                        transient=True,
                    )
                log.warning("Status poll failed transiently (%s); will retry", result.reason)
            else:
                transient = 0
                if result.throttled:
                    log.info("Status polled too often (429); slowing down")
                elif result.progress and result.progress != last_progress:
                    last_progress = result.progress
                    log.info("Export in progress: %s", result.progress)
                    if on_progress is not None:
                        on_progress(result.progress)
            delay = poll_delay(
                result.retry_after,
                previous=delay,
                minimum=self.poll_interval_min,
                maximum=self.poll_interval_max,
            )
            if deadline is not None and time.time() + delay > deadline:
                raise BulkExportError(
                    f"The export at {display_url(status_url)} did not complete within max_wait.",
                    transient=True,
                )
            self._sleep(delay, "waiting for the export")

    def fetch_manifest(self, status_url: str) -> BulkManifest:
        """The manifest of a completed export (one request; fails if it is not complete)."""
        result = self.poll(status_url)
        if isinstance(result, Complete):
            return BulkManifest.from_json(result.manifest)
        if isinstance(result, Failed):
            raise BulkExportError(
                f"Could not fetch the manifest from {display_url(status_url)}: "
                f"{result.diagnostics}",
                status_code=result.status_code,
                diagnostics=result.diagnostics,
            )
        raise BulkExportError(
            f"The export at {display_url(status_url)} is not complete ({type(result).__name__}).",
            transient=True,
        )

    def cancel(self, status_url: str) -> bool:
        """``DELETE`` the status URL (cancel a running export, or let the server delete a
        finished one's files). Returns whether the server accepted; never raises."""
        try:
            response = self.http.send("DELETE", status_url, headers=STATUS_HEADERS, timeout=30)
        except (requests.RequestException, BulkExportError) as exc:
            log.warning("Could not DELETE %s: %s", display_url(status_url), type(exc).__name__)
            return False
        with response:
            if response.status_code in (200, 202, 204):
                log.info("Deleted the export job at %s", display_url(status_url))
                return True
            if response.status_code == 404:
                log.info("Export job %s was already gone (404)", display_url(status_url))
                return True
            diagnostics, _ = error_details(response.status_code, response.content)
            log.warning(
                "DELETE %s answered HTTP %d: %s",
                display_url(status_url),
                response.status_code,
                diagnostics,
            )
            return False
