"""``RestClient``: authenticated REST calls that retry transient failures.

Retried: connection errors (refused, reset, dropped mid-response), timeouts, and the statuses
in ``RETRYABLE_STATUS`` (429, 5xx...), with exponential backoff that honours the server's
``Retry-After``. Non-idempotent methods (POST, PATCH) are only retried when the server says it
did not process the request (429, 503) unless told otherwise. A 401 is not retried here: the
session's ``BackendAuth`` already renewed the token and resent the request once.

Failures raise ``ApiError`` (``FhirError`` when the server answered with an OperationOutcome,
quoting its diagnostics): this client serves any REST API, not only FHIR servers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from airflow_provider_backendauth.core.errors import ApiError
from airflow_provider_backendauth.core.fhir.outcome import check_response
from airflow_provider_backendauth.core.http.bodies import (
    DEFAULT_MAX_RESPONSE_BYTES,
    body_of,
    json_of,
    read_answer,
)
from airflow_provider_backendauth.core.http.deadline import Deadline, total_seconds
from airflow_provider_backendauth.core.redact import get_logger, short_error
from airflow_provider_backendauth.core.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from airflow_provider_backendauth.core.urls import display_url, resolve_endpoint

log = get_logger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Statuses meaning "not processed, come back later": safe to retry for any method.
_NOT_PROCESSED_STATUS = frozenset({429, 503})
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,  # refused, reset, dropped before/while answering
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # body cut off mid-stream
    requests.exceptions.ContentDecodingError,
)


class TransientResponseError(Exception):
    """A response worth retrying (a retryable status, or a 2xx body that is not valid JSON).

    Raised inside the retry loop only; callers see the final response or an ``ApiError``.
    """

    def __init__(self, response: requests.Response, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason
        self.retry_after = parse_retry_after(response.headers.get("Retry-After"))


@dataclass(frozen=True)
class _Call:
    """One call's values, handed to the shared retry loop's attempt and callbacks."""

    method: str
    url: str
    kwargs: dict[str, Any]
    parse_json: bool
    safe: bool
    target: str
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_bytes_setting: str = "max_response_bytes"
    loads: Callable[[bytes], Any] | None = None


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, TransientResponseError):
        return f"answered {exc.reason}"
    return f"failed with {type(exc).__name__}" if exc is not None else "failed"


class RestClient:
    """REST calls over a ``requests.Session`` (usually ``BackendAuthHook.get_session()``).

    Args:
        session: the session; its auth attaches (and renews) the bearer token.
        base_url: what relative endpoints are joined to (``join_url`` rules: relative to the
            base *path*). None: endpoints must be absolute URLs.
        retry: the retry policy (attempts, backoff, Retry-After cap).
        timeout: per-request timeout in seconds (connect and read).
        retry_args: ``tenacity.Retrying`` arguments overriding the policy's (as in the HTTP
            provider's ``retry_args``); ``stop``, ``wait`` or ``retry`` replace ours.
        retry_unsafe_methods: also retry POST/PATCH after 5xx and connection errors (only
            when the API is known to be idempotent for them, e.g. FHIR ``_search``).
        max_response_bytes: the largest decoded answer body read (``core/http/bodies.py``); the
            connection's ``timeout`` bounds each call as a whole.
    """

    def __init__(
        self,
        session: requests.Session,
        base_url: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        retry_args: Mapping[str, Any] | None = None,
        retry_unsafe_methods: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self.session = session
        self.base_url = base_url.rstrip("/") if base_url else None
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.retry_args = dict(retry_args or {})
        self.retry_unsafe_methods = retry_unsafe_methods
        self._retryings: dict[bool, tuple[Any, Any]] = {}

    def url_for(self, endpoint: str) -> str:
        """The absolute URL of ``endpoint`` (absolute URLs are returned unchanged)."""
        return resolve_endpoint(self.base_url, endpoint)

    def request(
        self,
        method: str,
        endpoint: str = "",
        *,
        check: bool = True,
        what: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request, retrying transient failures.

        Args:
            method: HTTP method.
            endpoint: relative to the base URL, or absolute.
            check: raise ``ApiError``/``FhirError`` for a final 4xx/5xx answer (else return it).
            what: how to name the call in errors (default ``"GET <url>"``).
            kwargs: passed to ``requests`` (``params``, ``json``, ``data``, ``headers``...).

        Returns:
            The final response.

        Raises:
            ApiError: the call failed (``FhirError`` with an OperationOutcome's
                diagnostics), or every attempt hit a connection error.
        """
        return self._send(method, endpoint, check=check, what=what, parse_json=False, **kwargs)[1]

    def get_json(
        self,
        endpoint: str,
        *,
        what: str | None = None,
        max_bytes: int | None = None,
        max_bytes_setting: str = "max_response_bytes",
        loads: Callable[[bytes], Any] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, requests.Response]:
        """GET a JSON document; a 2xx answer whose body is not valid JSON (e.g. cut off by a
        dropped connection) is retried like a 5xx.

        Returns:
            ``(parsed body, response)``.
        """
        body, response = self._send(
            "GET",
            endpoint,
            check=True,
            what=what,
            parse_json=True,
            limits=(max_bytes or self.max_response_bytes, max_bytes_setting, loads),
            **kwargs,
        )
        return body, response

    # -- internals -------------------------------------------------------------------------

    def _retrying(self, safe: bool) -> Any:
        """The ``tenacity.Retrying`` for idempotent (``safe``) or other calls: built once per
        client (and again only if ``retry``/``retry_args`` are replaced), since building one
        per call costs more than a fast answer's parsing; tenacity keeps its per-call state
        thread-local, so threads share it. The call's own values reach the callbacks as the
        attempt's argument (``state.args[0]``)."""
        import tenacity

        config = (self.retry, dict(self.retry_args))
        cached = self._retryings.get(safe)
        if cached is not None and cached[0] == config:
            return cached[1]

        def is_retryable(exc: BaseException) -> bool:
            if isinstance(exc, TransientResponseError):
                return True
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                return True  # nothing reached the server
            return safe and isinstance(exc, _TRANSIENT_ERRORS)

        def retry_after_of(exc: BaseException) -> float | None:
            return exc.retry_after if isinstance(exc, TransientResponseError) else None

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s %s; retrying in %.1f s (attempt %d failed)",
                state.args[0].target if state.args else "the call",
                _describe(exc),
                wait,
                state.attempt_number,
            )

        retrying = self.retry.retrying(
            is_retryable, retry_after_of, before_sleep=before_sleep, overrides=self.retry_args
        )
        self._retryings[safe] = (config, retrying)
        return retrying

    def _attempt(self, call: _Call) -> tuple[Any, requests.Response]:
        kwargs = call.kwargs
        streamed_by_caller = bool(kwargs.get("stream"))
        # 'timeout' bounds the whole answer (not each socket read: core/http/deadline.py; this
        # deadline serves a session without its adapter); the decoded body is bounded in
        # size (a gzip bomb ends in a clear error, not a MemoryError).
        seconds = total_seconds(kwargs.get("timeout"))
        deadline = None if seconds is None else Deadline(seconds)
        response = self.session.request(call.method, call.url, **{**kwargs, "stream": True})
        if not streamed_by_caller:
            read_answer(
                response,
                max_bytes=call.max_bytes,
                deadline=deadline,
                what=call.target,
                setting=call.max_bytes_setting,
            )
        status = response.status_code
        if status in RETRYABLE_STATUS and (call.safe or status in _NOT_PROCESSED_STATUS):
            raise TransientResponseError(response, f"HTTP {status}")
        if not call.parse_json or not response.ok:
            return None, response
        try:
            if call.loads is not None:
                return call.loads(body_of(response)), response
            return json_of(response), response
        except ValueError:
            raise TransientResponseError(response, "a body that is not valid JSON") from None

    def _send(
        self,
        method: str,
        endpoint: str,
        *,
        check: bool,
        what: str | None,
        parse_json: bool,
        limits: tuple[int, str, Callable[[bytes], Any] | None] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, requests.Response]:
        method = method.upper()
        url = self.url_for(endpoint)
        target = what or f"{method} {url}"
        kwargs.setdefault("timeout", self.timeout)
        safe = method in IDEMPOTENT_METHODS or self.retry_unsafe_methods
        max_bytes, setting, loads = limits or (self.max_response_bytes, "max_response_bytes", None)
        call = _Call(method, url, kwargs, parse_json, safe, target, max_bytes, setting, loads)
        try:
            body, response = self._retrying(safe)(self._attempt, call)
        except TransientResponseError as exc:
            response = exc.response
            if response.ok:  # valid status, unusable body
                raise ApiError(
                    f"{target} returned {exc.reason} (HTTP {response.status_code}), even after "
                    "retrying; the server or a proxy cut the response short.",
                    status_code=response.status_code,
                ) from None
            if check:
                check_response(response, target)
            return None, response
        except _TRANSIENT_ERRORS as exc:
            raise ApiError(
                f"{target} failed: {type(exc).__name__} ({short_error(exc)}); could not reach "
                f"{display_url(url)} even after retrying. Check the network and the base URL.",
            ) from exc
        if check:
            check_response(response, target)
        return body, response
