"""Findings 3 (search part) and 6 (deadline): bounded decoding of FHIR search pages and a
total deadline on each token request and API call."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator

import pytest

from airflow_provider_backendauth.core.errors import (
    ApiError,
    BackendAuthError,
    ResponseTooLargeError,
)
from tests.security.hostile import Reply, bundle, gzip_bomb


def provider_error(excinfo: pytest.ExceptionInfo[BaseException]) -> BaseException:
    """The provider's error (operators turn errors a retry cannot fix into
    AirflowFailException, chained)."""
    exc = excinfo.value
    return exc if isinstance(exc, BackendAuthError) else exc.__cause__ or exc


def search_op(conn_id: str, tmp_path, **kwargs):
    from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

    return FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=conn_id,
        resource_type="Patient",
        destination=str(tmp_path / "out"),
        **kwargs,
    )


def test_gzip_bomb_on_a_search_page_is_a_clear_error_in_bounded_memory(
    good, connect, tmp_path
) -> None:
    bomb = gzip_bomb(100)  # ~100 KB on the wire, 100 MB decoded
    # Warm up first (imports, token), so the measurement below counts only the page.
    good.routes["/fhir/Patient"] = Reply(200, body=bundle([{"resourceType": "Patient"}]))
    search_op(connect(), tmp_path / "warm").execute({})
    good.routes["/fhir/Patient"] = Reply(
        200, {"Content-Encoding": "gzip", "Content-Type": "application/fhir+json"}, bomb
    )
    op = search_op(connect(), tmp_path, max_page_bytes=16 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as excinfo:
            op.execute({})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = provider_error(excinfo)
    assert isinstance(error, ResponseTooLargeError)
    message = str(error)
    assert "max_page_bytes" in message and str(16 * 1024 * 1024) in message
    assert f"{good.url}/fhir/Patient" in message
    # About the 16 MiB limit (urllib3 bounds what one read decodes), not the 100 MB bomb.
    assert peak < 48 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    assert error.retry_cannot_help


def test_default_page_limit_stops_a_bomb(good, connect, tmp_path) -> None:
    good.routes["/fhir/Patient"] = Reply(
        200, {"Content-Encoding": "gzip", "Content-Type": "application/fhir+json"}, gzip_bomb(200)
    )
    with pytest.raises(Exception) as excinfo:
        search_op(connect(), tmp_path).execute({})
    error = provider_error(excinfo)
    assert isinstance(error, ResponseTooLargeError)
    assert "max_page_bytes" in str(error)


def test_bundle_entries_are_bounded(good, connect, tmp_path) -> None:
    good.routes["/fhir/Patient"] = Reply(
        200, body=bundle({"resourceType": "Patient", "id": str(i)} for i in range(5000))
    )
    with pytest.raises(Exception) as excinfo:
        search_op(connect(), tmp_path, max_page_entries=1000).execute({})
    error = provider_error(excinfo)
    assert isinstance(error, ResponseTooLargeError)
    assert "max_page_entries" in str(error) and "1000" in str(error)
    # The same page within the limit is fine.
    summary = search_op(connect(), tmp_path, max_page_entries=5000).execute({})
    assert summary["resources"] == 5000


def drip(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def test_a_dripping_api_answer_hits_the_total_deadline(good, connect, tmp_path) -> None:
    page = b'{"resourceType": "Bundle", "type": "searchset", "entry": []}'
    # One byte every 0.3 s: each read is well within timeout=1, the whole takes ~18 s.
    good.routes["/fhir/Patient"] = Reply(
        200, {"Content-Type": "application/fhir+json"}, drip(page), delay=0.3
    )
    started = time.monotonic()
    with pytest.raises(ApiError, match="deadline|DeadlineExceeded"):
        search_op(connect(timeout=1), tmp_path).execute({})
    assert time.monotonic() - started < 8


def test_a_dripping_token_endpoint_hits_the_total_deadline(good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    body = b'{"access_token": "tok-secret-drip-000001", "token_type": "Bearer"}'
    good.routes["/token"] = Reply(200, {"Content-Type": "application/json"}, drip(body), delay=0.3)
    started = time.monotonic()
    with pytest.raises(BackendAuthError, match="token URL"):
        BackendAuthHook(connect(timeout=1)).get_token()
    assert time.monotonic() - started < 8
