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

This module imports no Airflow and does no I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from airflow_provider_backendauth.core import errors
from airflow_provider_backendauth.core.bulk.poller import Fail
from airflow_provider_backendauth.core.errors import BackendAuthError, BulkExportError


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
