"""A synchronous client for the Bulk Data ``$export`` flow: kick-off, status polling,
manifest fetch and cancellation, over ``AuthorizedSessions``.

This module imports no Airflow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from airflow_provider_backendauth.core.bulk.events import wait_error
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.bulk.poller import (
    Action,
    Done,
    Observed,
    Poll,
    Sleep,
    StatusPoller,
    describe_seconds,
)
from airflow_provider_backendauth.core.bulk.protocol import (
    Complete,
    Failed,
    KickoffAccepted,
    KickoffBusy,
    KickoffFailed,
    KickoffResult,
    KickoffRetry,
    RetryLater,
    StatusResult,
    error_details,
    interpret_kickoff,
    interpret_status,
    poll_delay,
)
from airflow_provider_backendauth.core.bulk.request import (
    FHIR_JSON,
    KICKOFF_HEADERS,
    STATUS_HEADERS,
    BulkExportRequest,
)
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions
from airflow_provider_backendauth.core.http.bodies import (
    MAX_ERROR_BODY_BYTES,
    MAX_STATUS_BYTES,
    body_of,
)
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.urls import display_url

log = get_logger(__name__)

# Called with each 202 status answer and when it came (``time.time()``): the export log's
# ``status_progress`` events on the worker path.
ProgressHook = Callable[[Observed, float], None]


class BulkExportClient:
    """Kick-off, status polling and cancellation over ``AuthorizedSessions`` (blocking).

    Args:
        http: the authenticated HTTP helper.
        base_url: the FHIR base URL.
        poll_settings: intervals, the kick-off's busy budget and the errors tolerated while
            polling or kicking off (``PollSettings``; its defaults when None). A status
            ``Retry-After`` is honoured down to 1 s; a kick-off's is floored at
            ``poll_interval_min``.
        stop: set it to make waits end early (``on_kill``).
        clock: a monotonic clock (tests).
    """

    def __init__(
        self,
        http: AuthorizedSessions,
        base_url: str,
        *,
        poll_settings: PollSettings | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.poll_settings = poll_settings or PollSettings()
        self.stop = stop or threading.Event()
        self._clock = clock

    def _sleep(self, seconds: float, why: str) -> None:
        if self.stop.wait(max(0.0, seconds)):
            raise BulkExportError(f"Stopped while {why}.")

    def kickoff(self, request: BulkExportRequest) -> str:
        """Start the export; returns the status URL.

        A 429 answer (another export running) is waited out within ``kickoff_busy_budget``:
        each wait is the server's ``Retry-After`` (or a doubling backoff without one), cut
        to what is left of the budget. 5xx/transient answers are retried up to
        ``max_transient_errors`` times.
        """
        url = request.url(self.base_url)
        started = self._clock()
        transient = 0
        busy = 0
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
            if isinstance(result, KickoffBusy):
                busy += 1
                delay = self._busy_wait(result, url, busy, started, delay)
            else:
                transient += 1
                if transient > self.poll_settings.max_transient_errors:
                    raise BulkExportError(
                        f"The $export kick-off at {display_url(url)} kept failing "
                        f"({result.diagnostics}); gave up after {transient} attempts.",
                        status_code=result.status_code,
                        diagnostics=result.diagnostics,
                        retryable=True,
                    )
                delay = poll_delay(
                    result.retry_after,
                    previous=delay,
                    minimum=self.poll_settings.poll_interval_min,
                    maximum=self.poll_settings.poll_interval_max,
                )
                log.warning(
                    "Kick-off failed transiently (%s); retrying in %s",
                    result.diagnostics,
                    describe_seconds(delay),
                )
            self._sleep(delay, "waiting to retry the kick-off")

    def _busy_wait(
        self, result: KickoffBusy, url: str, busy: int, started: float, previous: float | None
    ) -> float:
        """How long to wait after a 429 on kick-off: the server's Retry-After (else a
        doubling backoff) within what is left of ``kickoff_busy_budget``. Fails when the
        budget is spent, and at once when the server's Retry-After reaches beyond it: the
        server said it will not accept the export before then, so waiting out the rest of
        the budget (300 s by default) would only delay the same failure."""
        settings = self.poll_settings
        waited = self._clock() - started
        left = settings.kickoff_busy_budget - waited
        if result.retry_after is not None:
            delay, why = max(result.retry_after, settings.poll_interval_min), "Retry-After"
        else:
            base = previous if previous is not None else settings.poll_interval_min / 2
            delay = min(max(settings.poll_interval_min, base * 2), settings.poll_interval_max)
            why = "backoff"
        if left <= 0 or (why == "Retry-After" and delay > left):
            asked = (
                f"its last Retry-After asked for {describe_seconds(delay)} more"
                if result.retry_after is not None
                else "it sent no usable Retry-After"
            )
            spent = (
                f"{busy} times over {describe_seconds(waited)}, the whole"
                if left <= 0
                else f"{busy} times over {describe_seconds(waited)}, with "
                f"{describe_seconds(left)} left of"
            )
            raise BulkExportError(
                f"The server kept answering the $export kick-off at {display_url(url)} with 429 "
                f"(busy: {result.diagnostics or 'no details'}) {spent} kickoff_busy_budget="
                f"{describe_seconds(settings.kickoff_busy_budget)}; {asked}. Another export by "
                "this client may be running; cancel it or raise the budget.",
                status_code=429,
                diagnostics=result.diagnostics,
                retryable=True,
            )
        wait = min(delay, left)
        log.info(
            "Server busy (429) on kick-off (%s); retrying in %s (%s%s; %s of "
            "kickoff_busy_budget left)",
            result.diagnostics or "no details",
            describe_seconds(wait),
            why,
            f" {describe_seconds(delay)}, cut to the budget" if wait < delay else "",
            describe_seconds(left),
        )
        return wait

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
                max_bytes=MAX_ERROR_BODY_BYTES,  # a 202's body is not used
            )
        except requests.RequestException as exc:
            return KickoffRetry(None, f"no answer ({type(exc).__name__})")
        with response:
            return interpret_kickoff(
                response.status_code, response.headers, body_of(response), request_url=url
            )

    def poll(self, status_url: str) -> StatusResult:
        """One status request."""
        try:
            response = self.http.send(
                "GET", status_url, headers=STATUS_HEADERS, max_bytes=MAX_STATUS_BYTES
            )
        except requests.RequestException as exc:
            return RetryLater(None, f"no answer ({type(exc).__name__})")
        with response:
            return interpret_status(response.status_code, response.headers, body_of(response))

    def poller(self, status_url: str, *, deadline: float | None = None) -> StatusPoller:
        """The sans-IO poller for ``status_url`` with this client's settings."""
        return StatusPoller(
            status_url,
            self.poll_settings,
            deadline=deadline,
            shown_url=display_url(status_url),
        )

    def wait_json(
        self,
        status_url: str,
        *,
        deadline: float | None = None,
        on_progress: ProgressHook | None = None,
    ) -> Done:
        """Poll until the URL answers 200 with a manifest (the blocking driver of
        ``StatusPoller``); returns the poller's ``Done`` (manifest JSON, ``Expires``).
        ``on_progress(observed, at)`` is called for every 202 (``at``: its ``time.time()``)."""
        poller = self.poller(status_url, deadline=deadline)
        action: Action = poller.start(time.time())
        while True:
            if isinstance(action, Poll):
                action = poller.feed(self.poll(action.url), time.time())
            elif isinstance(action, Sleep):
                for note in action.notes:
                    log.log(note.level, "%s", note.message)
                if on_progress is not None and action.observed is not None:
                    on_progress(action.observed, time.time())
                self._sleep(action.seconds, "waiting for the export")
                action = poller.start(time.time())
            elif isinstance(action, Done):
                return action
            else:
                raise wait_error(action)

    def wait(
        self,
        status_url: str,
        *,
        deadline: float | None = None,
        on_progress: ProgressHook | None = None,
    ) -> BulkManifest:
        """Poll until the export completes; returns its manifest.

        Args:
            status_url: from the kick-off.
            deadline: a ``time.time()`` after which to give up (None: ``poll.max_wait``).
            on_progress: called with each 202 (see ``wait_json``).
        """
        done = self.wait_json(status_url, deadline=deadline, on_progress=on_progress)
        return BulkManifest.from_json(done.manifest, expires=done.expires)

    def fetch_manifest(self, status_url: str) -> BulkManifest:
        """The manifest of a completed export (one request; fails if it is not complete)."""
        result = self.poll(status_url)
        if isinstance(result, Complete):
            return BulkManifest.from_json(result.manifest, expires=result.expires)
        if isinstance(result, Failed):
            raise BulkExportError(
                f"Could not fetch the manifest from {display_url(status_url)}: "
                f"{result.diagnostics}",
                status_code=result.status_code,
                diagnostics=result.diagnostics,
            )
        raise BulkExportError(
            f"The export at {display_url(status_url)} is not complete ({type(result).__name__}).",
            retryable=True,
        )

    def cancel(self, status_url: str) -> bool:
        """``DELETE`` the status URL (cancel a running export, or let the server delete a
        finished one's files). Returns whether the server accepted; never raises."""
        try:
            response = self.http.send(
                "DELETE",
                status_url,
                headers=STATUS_HEADERS,
                timeout=30,
                max_bytes=MAX_ERROR_BODY_BYTES,
            )
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
            diagnostics, _ = error_details(response.status_code, body_of(response))
            log.warning(
                "DELETE %s answered HTTP %d: %s",
                display_url(status_url),
                response.status_code,
                diagnostics,
            )
            return False
