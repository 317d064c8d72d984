"""What a deferred export wait sends back to the worker, and the error rebuilt from it.

Guarantee: a wait that fails raises the same exception whether it ran in a worker
(``BulkExportClient.wait``) or in the triggerer (``BulkExportTrigger``, then the operator's
``execute_complete``): same class, message, ``status_code``, ``diagnostics`` and
``retryable`` (so ``retry_cannot_help`` too). Both paths build it with ``wait_error`` from
the poller's ``Fail``; the trigger's event carries those fields as JSON (``failure_event``)
and ``error_from_event`` builds the error again on the worker. The event also carries the
server's last ``X-Progress`` text, so the task log shows it on both paths.

Limits: an exception that is not one of the provider's (``core/errors.py``), such as a bug
in the trigger, cannot cross the JSON event as itself: it arrives as a ``BulkExportError``
naming its type and message, not retryable. Events sent by an earlier version of this
provider (no ``retryable`` field) are read as they were then: only a timeout is retryable.

Every string in an event may quote the server (diagnostics, progress): the trigger redacts
them before the event leaves it.

The event also carries the wait's 202 answers for the export log (``status_progress``),
which the triggerer must not write: ``ProgressTrail`` keeps the last ``TRAIL_LIMIT`` of them
(when, ``X-Progress`` redacted, escaped and cut, ``Retry-After`` seconds) and how many there
were, so the event stays small however long the wait; ``progress_trail`` reads them back on
the worker, dropping any entry that is not of that shape. A wait longer than the limit logs
only its last ``TRAIL_LIMIT`` answers; a trigger restarted by the triggerer starts a new trail.

This module imports no Airflow and does no I/O.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Mapping
from typing import Any

from airflow_provider_backendauth.core import errors
from airflow_provider_backendauth.core.bulk.poller import Fail, Observed
from airflow_provider_backendauth.core.errors import BackendAuthError, BulkExportError
from airflow_provider_backendauth.core.redact import redact

TRAIL_LIMIT = 50  # 202 answers an event carries (the last ones)
TRAIL_TEXT_CHARS = 200  # X-Progress characters kept per answer, after escaping
TRAIL_KEY = "progress_trail"


class ProgressTrail:
    """The last ``TRAIL_LIMIT`` 202 answers of a wait, and how many there were in all."""

    def __init__(self, limit: int = TRAIL_LIMIT) -> None:
        self.count = 0
        self._items: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, observed: Observed, at: float) -> None:
        text = observed.x_progress
        self.count += 1
        self._items.append(
            {
                "at": at,
                "x_progress": None if text is None else redact(text)[:TRAIL_TEXT_CHARS],
                "retry_after": observed.retry_after,
            }
        )

    def as_event(self) -> dict[str, Any]:
        return {"count": self.count, "items": list(self._items)}


def progress_trail(event: Mapping[str, Any]) -> list[tuple[float, Observed]]:
    """The 202 answers an event carries, oldest first, as ``(when, Observed)``; entries of
    another shape (an older event, a mangled one) are left out. Text is escaped again: the
    event is read back from the metadata database."""
    trail = event.get(TRAIL_KEY)
    items = trail.get("items") if isinstance(trail, Mapping) else None
    found: list[tuple[float, Observed]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        at, text, retry = item.get("at"), item.get("x_progress"), item.get("retry_after")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            continue
        if text is not None and not isinstance(text, str):
            continue
        if retry is not None and (not isinstance(retry, (int, float)) or isinstance(retry, bool)):
            continue
        shown = None if text is None else redact(text)[:TRAIL_TEXT_CHARS]
        found.append((float(at), Observed(shown, None if retry is None else float(retry))))
    return found[:TRAIL_LIMIT]


def wait_error(fail: Fail) -> BulkExportError:
    """The error a failed wait raises, on a worker and (rebuilt) after a deferral alike."""
    return BulkExportError(
        fail.message,
        status_code=fail.status_code,
        diagnostics=fail.diagnostics,
        retryable=fail.transient,
    )


def failure_event(fail: Fail, status_url: str, progress: str | None) -> dict[str, Any]:
    """The trigger's event for a wait the poller gave up on."""
    return _event("timeout" if fail.timeout else "error", status_url, wait_error(fail), progress)


def exception_event(
    exc: BaseException, status_url: str, shown_url: str, progress: str | None
) -> dict[str, Any]:
    """The trigger's event for an exception raised while waiting (the connection could not be
    read, the token endpoint refused, ...): the provider's own errors keep their class."""
    if not _rebuildable(type(exc)):
        exc = BulkExportError(
            f"Waiting for the export at {shown_url} failed: {type(exc).__name__}: {exc}"
        )
    assert isinstance(exc, BackendAuthError)
    return _event("error", status_url, exc, progress)


def error_from_event(event: Mapping[str, Any]) -> BackendAuthError:
    """The exception the event's wait raised (see the module docstring)."""
    status = event.get("status")
    message = str(event.get("message") or f"The export trigger reported {status!r}.")
    retryable = event.get("retryable")
    fields: dict[str, Any] = {
        "status_code": event.get("status_code"),
        "diagnostics": event.get("diagnostics"),
        # An earlier version's event: only a timeout was retryable.
        "retryable": status == "timeout" if retryable is None else bool(retryable),
    }
    cls = getattr(errors, str(event.get("error_type") or ""), None)
    if not (isinstance(cls, type) and _rebuildable(cls)):
        cls = BulkExportError
    accepted = inspect.signature(cls).parameters
    try:
        error = cls(message, **{k: v for k, v in fields.items() if k in accepted})
    except TypeError:  # a constructor this cannot fill: keep the facts, in the generic class
        return BulkExportError(message, **fields)
    return error


def _rebuildable(cls: type) -> bool:
    """One of the provider's error classes, which ``error_from_event`` finds by name."""
    return issubclass(cls, BackendAuthError) and getattr(errors, cls.__name__, None) is cls


def _event(
    status: str, status_url: str, error: BackendAuthError, progress: str | None
) -> dict[str, Any]:
    return {
        "status": status,
        "status_url": status_url,
        "error_type": type(error).__name__,
        "message": str(error),
        "status_code": getattr(error, "status_code", None),
        "diagnostics": getattr(error, "diagnostics", None),
        "retryable": bool(error.retryable),
        "progress": progress,
    }
