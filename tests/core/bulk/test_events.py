"""The trigger's events: the worker rebuilds the exception the wait raised."""

from __future__ import annotations

import json

import pytest

from airflow_provider_backendauth.core.bulk.events import (
    TRAIL_KEY,
    TRAIL_LIMIT,
    TRAIL_TEXT_CHARS,
    ProgressTrail,
    error_from_event,
    exception_event,
    failure_event,
    progress_trail,
    wait_error,
)
from airflow_provider_backendauth.core.bulk.poller import Fail, Observed
from airflow_provider_backendauth.core.errors import (
    BulkExportError,
    ConfigurationError,
    TokenRequestError,
)

URL = "https://fhir.example/status/1"


def round_trip(event: dict[str, object]) -> BaseException:
    return error_from_event(json.loads(json.dumps(event)))


@pytest.mark.parametrize(
    "fail",
    [
        Fail("gave up", status_code=503, diagnostics="HTTP 503", transient=True),
        Fail("failed", status_code=400, diagnostics="error/invalid"),
        Fail("not complete within max_wait", timeout=True, transient=True),
    ],
)
def test_a_poller_failure_is_rebuilt_as_the_worker_raises_it(fail: Fail) -> None:
    worker = wait_error(fail)
    rebuilt = round_trip(failure_event(fail, URL, "50%"))
    assert type(rebuilt) is type(worker)
    assert isinstance(rebuilt, BulkExportError)
    assert (str(rebuilt), rebuilt.status_code, rebuilt.diagnostics, rebuilt.retryable) == (
        str(worker),
        worker.status_code,
        worker.diagnostics,
        worker.retryable,
    )


def test_the_providers_own_errors_keep_their_class() -> None:
    refused = TokenRequestError("the token endpoint refused", status_code=400)
    rebuilt = round_trip(exception_event(refused, URL, URL, None))
    assert type(rebuilt) is TokenRequestError
    assert rebuilt.retry_cannot_help  # a person must fix the registration, as on a worker
    rebuilt = round_trip(exception_event(ConfigurationError("no such key"), URL, URL, None))
    assert type(rebuilt) is ConfigurationError and rebuilt.retry_cannot_help


def test_other_exceptions_arrive_as_bulk_export_errors() -> None:
    rebuilt = round_trip(exception_event(RuntimeError("boom"), URL, URL, None))
    assert type(rebuilt) is BulkExportError
    assert "RuntimeError: boom" in str(rebuilt) and not rebuilt.retryable


@pytest.mark.parametrize("name", ["RuntimeError", "__class__", "annotations", "warnings"])
def test_an_event_names_only_the_providers_error_classes(name: str) -> None:
    rebuilt = error_from_event({"status": "error", "error_type": name, "message": "m"})
    assert type(rebuilt) is BulkExportError


def test_an_earlier_versions_event_reads_as_it_did() -> None:
    assert error_from_event({"status": "timeout", "message": "late"}).retryable
    assert not error_from_event({"status": "error", "message": "failed"}).retryable


def test_the_progress_trail_keeps_the_last_answers_and_counts_all() -> None:
    trail = ProgressTrail()
    for n in range(TRAIL_LIMIT + 10):
        trail.add(Observed(f"{n}%\x1b[2J" + "x" * 500, float(n % 3) or None), 1000.0 + n)
    event = json.loads(json.dumps({TRAIL_KEY: trail.as_event()}))  # the event's JSON trip
    assert event[TRAIL_KEY]["count"] == TRAIL_LIMIT + 10
    read = progress_trail(event)
    assert [at for at, _ in read] == [1000.0 + n for n in range(10, TRAIL_LIMIT + 10)]
    first = read[0][1]
    assert first.x_progress is not None and first.x_progress.startswith("10%\\x1b[2J")
    assert len(first.x_progress) == TRAIL_TEXT_CHARS
    assert (first.retry_after, read[1][1].retry_after) == (1.0, 2.0)


def test_a_mangled_progress_trail_is_read_as_far_as_it_goes() -> None:
    event = {
        TRAIL_KEY: {
            "count": 5,
            "items": [
                {"at": 1.0, "x_progress": "ok\r\nforged", "retry_after": 2},
                {"at": "soon", "x_progress": "bad time", "retry_after": None},
                {"at": 2.0, "x_progress": ["not", "text"], "retry_after": None},
                {"at": 3.0, "x_progress": None, "retry_after": True},
                "not an item",
                {"at": 4.0, "x_progress": None, "retry_after": None},
            ],
        }
    }
    assert progress_trail(event) == [
        (1.0, Observed("ok\\r\\nforged", 2.0)),
        (4.0, Observed(None, None)),
    ]
    assert progress_trail({}) == progress_trail({TRAIL_KEY: "junk"}) == []
