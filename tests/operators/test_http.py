"""BackendAuthHttpOperator.execute against the sandbox's FHIR and MyDataHelps-like REST APIs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pendulum
import pytest
import requests

from airflow_provider_backendauth.core.errors import (
    ApiError,
    FhirError,
    ResponseCheckError,
    XComResultTooLargeError,
)
from airflow_provider_backendauth.operators.http import BackendAuthHttpOperator, merge_request
from tests.support.failures import fails_for_good
from tests.support.faults import after_requests

FHIR = "fhir_test"
MDH = "mdh_test"


def op(**kwargs: Any) -> BackendAuthHttpOperator:
    kwargs.setdefault("task_id", "call")
    kwargs.setdefault("backendauth_conn_id", FHIR)
    return BackendAuthHttpOperator(**kwargs)


@pytest.fixture
def fhir_conn(make_conn: Callable[..., str]) -> str:
    return make_conn(FHIR)


@pytest.fixture
def mdh_conn(make_conn: Callable[..., str], sb: Any) -> str:
    """A MyDataHelps service account whose host is the administration API base."""
    return make_conn(MDH, vendor="mydatahelps", host=f"{sb.url}/api/v1/administration")


def next_page(response: requests.Response) -> dict[str, Any] | None:
    next_id = response.json().get("nextPageID")
    return {"data": {"pageID": next_id}} if next_id else None


# -- unit-level pieces ------------------------------------------------------------------------


def test_merge_request() -> None:
    current = {"endpoint": "a", "data": {"pageSize": 5}, "headers": {"X": "1"}, "json": None}
    merged = merge_request(current, {"data": {"pageID": "p2"}, "headers": {"Y": "2"}})
    assert merged["data"] == {"pageSize": 5, "pageID": "p2"}
    assert merged["headers"] == {"X": "1", "Y": "2"}
    assert merge_request(current, {"endpoint": "b"})["endpoint"] == "b"
    assert merge_request({"data": "raw"}, {"data": {"a": 1}})["data"] == {"a": 1}
    with pytest.raises(ValueError, match="unknown key"):
        merge_request(current, {"params": {}})


def test_template_fields() -> None:
    assert set(op(endpoint="x").template_fields) == {"endpoint", "data", "json", "headers"}


# -- calls ------------------------------------------------------------------------------------


def test_get_returns_parsed_json(fhir_conn: str, sb: Any) -> None:
    result = op(endpoint="Patient", data={"_id": "pat-0001,pat-0002"}).execute({})
    assert result["resourceType"] == "Bundle"
    assert sorted(e["resource"]["id"] for e in result["entry"]) == ["pat-0001", "pat-0002"]
    json.dumps(result)


def test_post_form_body(fhir_conn: str) -> None:
    result = op(
        endpoint="Patient/_search",
        method="POST",
        data={"_id": "pat-0003"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).execute({})
    assert [e["resource"]["id"] for e in result["entry"]] == ["pat-0003"]


def test_absolute_endpoint_and_text_response(fhir_conn: str, sb: Any) -> None:
    result = op(endpoint=f"{sb.fhir_base}/metadata").execute({})
    assert result["resourceType"] == "CapabilityStatement"


def test_pagination_over_participants(mdh_conn: str, sb: Any) -> None:
    before = sb.stats["requests_by_kind"].get("rest", 0)
    result = op(
        backendauth_conn_id=MDH,
        endpoint="participants",
        data={"pageSize": 6},
        pagination_function=next_page,
    ).execute({})
    assert isinstance(result, list) and len(result) == 4
    participants = [p for page in result for p in page["participants"]]
    assert len(participants) == 20 == len({p["id"] for p in participants})
    assert sb.stats["requests_by_kind"]["rest"] - before == 4


def test_response_filter_and_check_get_the_list_and_context(mdh_conn: str) -> None:
    seen: dict[str, Any] = {}

    def check(responses: list[requests.Response], ds: str) -> bool:
        seen["ds"] = ds
        return all(r.status_code == 200 for r in responses)

    def count(responses: list[requests.Response], **context: Any) -> dict[str, int]:
        seen["context_keys"] = sorted(context)
        return {
            "pages": len(responses),
            "participants": sum(len(r.json()["participants"]) for r in responses),
        }

    result = op(
        backendauth_conn_id=MDH,
        endpoint="participants",
        data={"pageSize": 8},
        pagination_function=next_page,
        response_check=check,
        response_filter=count,
    ).execute({"ds": "2024-06-01", "params": {}})
    assert result == {"pages": 3, "participants": 20}
    assert seen == {"ds": "2024-06-01", "context_keys": ["ds", "params"]}


def test_response_check_false_fails(fhir_conn: str) -> None:
    with pytest.raises(ResponseCheckError, match="response_check returned False"):
        op(endpoint="Patient", response_check=lambda r: False).execute({})


def test_max_pages_stops_pagination(mdh_conn: str, caplog: pytest.LogCaptureFixture) -> None:
    result = op(
        backendauth_conn_id=MDH,
        endpoint="participants",
        data={"pageSize": 2},
        pagination_function=next_page,
        max_pages=3,
    ).execute({})
    assert len(result) == 3


def test_pagination_repeating_the_same_request_is_refused(mdh_conn: str) -> None:
    from airflow_provider_backendauth.core.errors import ConfigurationError

    # A pagination_function bug: retrying the task would loop the same way.
    with fails_for_good(ConfigurationError, "same request"):
        op(
            backendauth_conn_id=MDH,
            endpoint="participants",
            data={"pageSize": 5},
            pagination_function=lambda r: {"data": {"pageSize": 5}},
        ).execute({})


def test_templated_fields_are_rendered(mdh_conn: str) -> None:
    from airflow.sdk import DAG

    with DAG("t_http_render", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        operator = op(
            backendauth_conn_id=MDH,
            endpoint="{{ params.path }}",
            data={"pageSize": "{{ params.size }}"},
            headers={"X-Run": "{{ run_id }}"},
            json={"day": "{{ ds }}"},
        )
    context: dict[str, Any] = {
        "params": {"path": "participants", "size": 3},
        "run_id": "manual__1",
        "ds": "2024-06-01",
    }
    operator.render_template_fields(context)  # type: ignore[arg-type]
    assert operator.endpoint == "participants"
    assert operator.data == {"pageSize": "3"}
    assert operator.headers == {"X-Run": "manual__1"}
    assert operator.json == {"day": "2024-06-01"}
    result = operator.execute(context)  # type: ignore[arg-type]
    assert len(result["participants"]) == 3


# -- failures and retries ---------------------------------------------------------------------


def test_operation_outcome_400_quotes_diagnostics(fhir_conn: str) -> None:
    with pytest.raises(
        FhirError, match=r"HTTP 400.*unknown or unsupported search parameter"
    ) as info:
        op(endpoint="Patient", data={"shoe_size": "44"}).execute({})
    assert "shoe_size" in (info.value.diagnostics or "")


def test_check_response_false_returns_the_error_body(fhir_conn: str) -> None:
    result = op(
        endpoint="Patient", data={"shoe_size": "44"}, extra_options={"check_response": False}
    ).execute({})
    assert result["resourceType"] == "OperationOutcome"


def test_plain_json_error_of_a_rest_api(mdh_conn: str) -> None:
    with pytest.raises(ApiError, match=r"HTTP 400.*pageSize must be") as info:
        op(backendauth_conn_id=MDH, endpoint="participants", data={"pageSize": 0}).execute({})
    assert not isinstance(info.value, FhirError)  # a plain REST API, not FHIR
    with pytest.raises(ApiError):
        op(backendauth_conn_id=MDH, endpoint="participants", data={"pageSize": 0}).execute({})


def test_429_with_retry_after_then_5xx_are_retried(mdh_conn: str, sb: Any) -> None:
    path = "/api/v1/administration/participants"
    sb.faults.add(path, status=429, retry_after=0.2)
    after_requests(sb, path, 1, status=502, retry_after=0.1)
    result = op(
        backendauth_conn_id=MDH,
        endpoint="participants",
        data={"pageSize": 10},
        pagination_function=next_page,
    ).execute({})
    assert sum(len(page["participants"]) for page in result) == 20


def test_dropped_connection_is_retried(fhir_conn: str, sb: Any, fast_retry: dict[str, Any]) -> None:
    rule = sb.faults.add("/fhir/Patient", drop=True)
    result = op(endpoint="Patient", data={"_count": 1}, retry_args=fast_retry).execute({})
    assert result["resourceType"] == "Bundle" and rule.hits == 1


def test_retry_args_can_limit_attempts(fhir_conn: str, sb: Any) -> None:
    import tenacity

    sb.faults.add("/fhir/Patient", status=503, times=None)
    with pytest.raises(FhirError, match="HTTP 503"):
        op(
            endpoint="Patient",
            retry_args={"stop": tenacity.stop_after_attempt(2), "wait": tenacity.wait_fixed(0)},
        ).execute({})
    assert sb.faults.rules[0].hits == 2


def test_expired_token_is_renewed(make_conn: Callable[..., str], sb: Any) -> None:
    client_id = make_conn(MDH, vendor="mydatahelps", host=f"{sb.url}/api/v1/administration")
    after_requests(sb, "/api/v1/administration/participants", 1, expire_tokens=True)
    result = op(
        backendauth_conn_id=MDH,
        endpoint="participants",
        data={"pageSize": 10},
        pagination_function=next_page,
    ).execute({})
    assert len(result) == 2
    assert sb.stats["token_requests_by_client"][client_id] == 2


def test_result_too_large_for_xcom(mdh_conn: str) -> None:
    with fails_for_good(XComResultTooLargeError, "max_xcom_bytes=500.*response_filter"):
        op(
            backendauth_conn_id=MDH,
            endpoint="participants",
            data={"pageSize": 20},
            max_xcom_bytes=500,
        ).execute({})


def test_no_token_for_another_origin(fhir_conn: str, sb: Any) -> None:
    """An absolute endpoint on another origin is called without the bearer token."""
    foreign = sb.fhir_base.replace("127.0.0.1", "localhost")
    result = op(endpoint=f"{foreign}/Patient", extra_options={"check_response": False}).execute({})
    assert result["resourceType"] == "OperationOutcome"  # 401: no token was sent


def test_token_not_logged(fhir_conn: str, caplog: pytest.LogCaptureFixture) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    with caplog.at_level(logging.DEBUG):
        result = op(endpoint="Patient", data={"_count": 2}, log_response=True).execute({})
    token = BackendAuthHook(FHIR).get_token()
    assert token not in caplog.text
    assert token not in json.dumps(result)
