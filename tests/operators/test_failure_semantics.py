"""How tasks end: a retry cannot fix a wrong key or a refused client, so those fail for good
(AirflowFailException); a busy or broken server stays an ordinary, retryable failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_backendauth._compat import AirflowFailException
from airflow_provider_backendauth.core.errors import (
    ApiError,
    ConfigurationError,
    InvalidClientError,
    KeyLoadError,
)
from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook
from airflow_provider_backendauth.operators.fhir import FhirSearchOperator
from airflow_provider_backendauth.operators.http import BackendAuthHttpOperator
from tests.conftest import connection_json
from tests.support.failures import fails_for_good

CONN = "semantics_test"


def http_op(**kwargs: Any) -> BackendAuthHttpOperator:
    return BackendAuthHttpOperator(
        task_id="call", backendauth_conn_id=CONN, endpoint="Patient", **kwargs
    )


def search_op() -> FhirSearchOperator:
    return FhirSearchOperator(task_id="s", backendauth_conn_id=CONN, resource_type="Patient")


@pytest.mark.parametrize("make_op", [http_op, search_op])
def test_unreadable_key_fails_for_good(
    make_op: Callable[[], Any], sb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN.upper()}",
        connection_json(host=sb.fhir_base, login="c", password="not a key"),
    )
    with fails_for_good(KeyLoadError, "key"):
        make_op().execute({})


def test_plain_http_to_a_remote_host_fails_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    from backendauth_sandbox.testing import generate_client_key

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN.upper()}",
        connection_json(
            host="http://fhir.example.org/R4",
            login="c",
            password=generate_client_key("EC-P384").private_pem,
            extra={"profile": "custom", "auth_url": "http://fhir.example.org/token"},
        ),
    )
    with fails_for_good(ConfigurationError, "http"):
        http_op().execute({})


def test_refused_client_fails_for_good(
    make_conn: Callable[..., str], sb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_conn(CONN)
    sb.faults.add("/auth/token", status=401, body='{"error": "invalid_client"}', times=None)
    try:
        with fails_for_good(InvalidClientError, "invalid_client"):
            http_op().execute({})
    finally:
        sb.faults.clear()


def test_busy_server_stays_retryable(make_conn: Callable[..., str], sb: Any) -> None:
    make_conn(CONN, retries=1)
    sb.faults.add("/fhir/Patient", status=503, times=None)
    try:
        with pytest.raises(ApiError) as info:
            http_op().execute({})
    finally:
        sb.faults.clear()
    assert not isinstance(info.value, AirflowFailException)
    assert info.value.retryable and not info.value.retry_cannot_help
    assert info.value.status_code == 503


def test_hook_run_retries_like_the_operators(make_conn: Callable[..., str], sb: Any) -> None:
    make_conn(CONN)
    sb.faults.add("/fhir/Patient", status=503, retry_after=0.01, times=2)
    before = sb.stats["requests_by_path"].get("/fhir/Patient", 0)
    try:
        response = BackendAuthHook(CONN).run("GET", "Patient")
    finally:
        sb.faults.clear()
    assert response.status_code == 200
    assert sb.stats["requests_by_path"]["/fhir/Patient"] - before == 3


def test_hook_run_takes_retry_args(make_conn: Callable[..., str], sb: Any) -> None:
    import tenacity

    make_conn(CONN)
    sb.faults.add("/fhir/Patient", status=503, retry_after=0.01, times=2)
    try:
        response = BackendAuthHook(CONN).run(
            "GET",
            "Patient",
            check_response=False,
            retry_args={"stop": tenacity.stop_after_attempt(1)},
        )
    finally:
        sb.faults.clear()
    assert response.status_code == 503
