"""FhirSearchOperator.execute against the sandbox, with connections from AIRFLOW_CONN_*."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_backendauth.core.errors import FhirError, XComResultTooLargeError
from airflow_provider_backendauth.operators.fhir import FhirSearchOperator
from tests.support.failures import fails_for_good
from tests.support.faults import after_requests

CONN = "fhir_test"


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def op(**kwargs: Any) -> FhirSearchOperator:
    kwargs.setdefault("task_id", "search")
    kwargs.setdefault("backendauth_conn_id", CONN)
    return FhirSearchOperator(**kwargs)


@pytest.fixture
def conn(make_conn: Callable[..., str]) -> str:
    return make_conn(CONN)


def test_construction_is_cheap_and_validates() -> None:
    with pytest.raises(ValueError, match="include_mode"):
        op(resource_type="Patient", include_mode="sideways")
    operator = op(resource_type="Patient")
    assert operator.template_fields == ("resource_type", "search_params", "destination")


def test_writes_ndjson_to_a_directory(conn: str, tmp_path: Path, sb: Any) -> None:
    result = op(resource_type="Patient", count=6, destination=str(tmp_path / "out")).execute({})
    patients = read_ndjson(tmp_path / "out" / "Patient.ndjson")
    assert len(patients) == 20 and {p["resourceType"] for p in patients} == {"Patient"}
    assert listing(tmp_path / "out") == ["Patient.ndjson"]
    assert result["pages"] == 4
    assert result["resources"] == 20
    assert result["files"] == [
        {
            "path": str(tmp_path / "out" / "Patient.ndjson"),
            "records": 20,
            "bytes": (tmp_path / "out" / "Patient.ndjson").stat().st_size,
        }
    ]
    assert result["bytes"] == result["files"][0]["bytes"]
    json.dumps(result)  # XCom-able


def test_writes_to_a_file_path_and_object_storage(conn: str, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath(f"file://{tmp_path}/nested/patients-2024.ndjson")
    result = op(resource_type="Patient", destination=target).execute({})
    assert len(read_ndjson(tmp_path / "nested" / "patients-2024.ndjson")) == 20
    assert result["files"][0]["path"].endswith("nested/patients-2024.ndjson")

    url = f"file://{tmp_path}/by-url/"
    op(resource_type="Patient", destination=url).execute({})
    assert listing(tmp_path / "by-url") == ["Patient.ndjson"]


def test_empty_result_still_writes_an_empty_file(conn: str, tmp_path: Path) -> None:
    result = op(
        resource_type="Patient", search_params={"_id": "nobody"}, destination=str(tmp_path)
    ).execute({})
    assert (tmp_path / "Patient.ndjson").read_bytes() == b""
    assert result["resources"] == 0 and result["files"][0]["records"] == 0


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_next_link_styles(conn: str, tmp_path: Path, sb: Any, style: str) -> None:
    sb.settings.update(search_next_link=style)
    result = op(resource_type="Observation", count=7, destination=str(tmp_path)).execute({})
    observations = read_ndjson(tmp_path / "Observation.ndjson")
    assert len(observations) == result["resources"] > 14
    assert len({o["id"] for o in observations}) == len(observations)
    assert result["pages"] >= 3


# -- includes ---------------------------------------------------------------------------------

INCLUDE = {"_include": "Observation:patient"}


def test_include_separate(conn: str, tmp_path: Path) -> None:
    result = op(
        resource_type="Observation", search_params=INCLUDE, count=10, destination=str(tmp_path)
    ).execute({})
    assert listing(tmp_path) == ["Observation.included.ndjson", "Observation.ndjson"]
    matches = read_ndjson(tmp_path / "Observation.ndjson")
    included = read_ndjson(tmp_path / "Observation.included.ndjson")
    assert {r["resourceType"] for r in matches} == {"Observation"}
    assert included and {r["resourceType"] for r in included} == {"Patient"}
    assert result["included"] == len(included)


def test_include_per_type(conn: str, tmp_path: Path) -> None:
    op(
        resource_type="Observation",
        search_params=INCLUDE,
        include_mode="per_type",
        destination=str(tmp_path),
    ).execute({})
    assert listing(tmp_path) == ["Observation.included.Patient.ndjson", "Observation.ndjson"]


def test_include_inline_and_drop(conn: str, tmp_path: Path) -> None:
    inline = op(
        resource_type="Observation",
        search_params=INCLUDE,
        include_mode="inline",
        destination=str(tmp_path / "inline"),
    ).execute({})
    kinds = {r["resourceType"] for r in read_ndjson(tmp_path / "inline" / "Observation.ndjson")}
    assert kinds == {"Observation", "Patient"}
    assert inline["files"][0]["records"] == inline["resources"] + inline["included"]

    dropped = op(
        resource_type="Observation",
        search_params=INCLUDE,
        include_mode="drop",
        destination=str(tmp_path / "drop"),
    ).execute({})
    assert listing(tmp_path / "drop") == ["Observation.ndjson"]
    kinds = {r["resourceType"] for r in read_ndjson(tmp_path / "drop" / "Observation.ndjson")}
    assert kinds == {"Observation"}
    assert dropped["included_dropped"] > 0


# -- limits -----------------------------------------------------------------------------------


def test_max_pages_and_max_resources(conn: str, tmp_path: Path) -> None:
    result = op(resource_type="Patient", count=5, max_pages=2, destination=str(tmp_path / "a"))
    summary = result.execute({})
    assert summary["pages"] == 2 and summary["resources"] == 10 and summary["truncated"]
    assert len(read_ndjson(tmp_path / "a" / "Patient.ndjson")) == 10

    summary = op(
        resource_type="Patient", count=5, max_resources=7, destination=str(tmp_path / "b")
    ).execute({})
    assert summary["resources"] == 7 and summary["truncated"]
    assert len(read_ndjson(tmp_path / "b" / "Patient.ndjson")) == 7


# -- XCom mode -------------------------------------------------------------------------------


def test_returns_resources_to_xcom_without_destination(conn: str) -> None:
    result = op(resource_type="Patient", search_params={"_id": "pat-0001,pat-0002"}).execute({})
    assert sorted(r["id"] for r in result["resources"]) == ["pat-0001", "pat-0002"]
    assert result["resource_count"] == 2
    assert result["included"] == []
    json.dumps(result)


def test_xcom_includes(conn: str) -> None:
    result = op(
        resource_type="Observation",
        search_params={"patient": "pat-0001", **INCLUDE},
    ).execute({})
    assert {r["resourceType"] for r in result["resources"]} == {"Observation"}
    assert [r["id"] for r in result["included"]] == ["pat-0001"]


def test_xcom_cap_is_a_clear_error(conn: str, sb: Any) -> None:
    before = sb.stats["fhir_searches"]
    with fails_for_good(XComResultTooLargeError, "max_xcom_resources=15.*destination"):
        op(resource_type="Patient", count=10, max_xcom_resources=15).execute({})
    # It stopped as soon as the cap was passed, not after reading everything.
    assert sb.stats["fhir_searches"] - before == 2


def test_xcom_cap_respected_with_max_resources(conn: str) -> None:
    result = op(resource_type="Patient", count=10, max_resources=15, max_xcom_resources=15)
    assert len(result.execute({})["resources"]) == 15


# -- templating ------------------------------------------------------------------------------


def test_templates_are_rendered(conn: str, tmp_path: Path) -> None:
    from airflow.sdk import DAG

    with DAG("t_render", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        operator = op(
            resource_type="{{ params.kind }}",
            search_params={
                "_lastUpdated": [
                    "ge{{ data_interval_start | ts }}",
                    "lt{{ data_interval_end | ts }}",
                ]
            },
            destination=str(tmp_path) + "/{{ data_interval_start | ds }}",
            count=100,
        )
    context: dict[str, Any] = {
        "params": {"kind": "Observation"},
        "data_interval_start": pendulum.datetime(2024, 3, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2024, 4, 1, tz="UTC"),
    }
    operator.render_template_fields(context)  # type: ignore[arg-type]
    assert operator.resource_type == "Observation"
    assert operator.search_params == {
        "_lastUpdated": ["ge2024-03-01T00:00:00+00:00", "lt2024-04-01T00:00:00+00:00"]
    }
    assert operator.destination == f"{tmp_path}/2024-03-01"
    result = operator.execute(context)  # type: ignore[arg-type]
    observations = read_ndjson(tmp_path / "2024-03-01" / "Observation.ndjson")
    assert len(observations) == result["resources"] > 0
    for observation in observations:
        assert "2024-03-01" <= observation["meta"]["lastUpdated"] < "2024-04-01"


# -- resilience ------------------------------------------------------------------------------


def test_429_and_5xx_are_retried(conn: str, tmp_path: Path, sb: Any) -> None:
    sb.faults.add("/fhir/Patient", status=429, retry_after=0.2)
    after_requests(sb, "/fhir/Patient", 1, status=503, retry_after=0.1)
    after_requests(sb, "/fhir/Patient", 1, status=500)
    result = op(resource_type="Patient", count=5, destination=str(tmp_path)).execute({})
    assert result["resources"] == 20
    assert len(read_ndjson(tmp_path / "Patient.ndjson")) == 20


def test_dropped_connection_is_retried(
    conn: str, tmp_path: Path, sb: Any, fast_retry: dict[str, Any]
) -> None:
    after_requests(sb, "/fhir/Patient", 2, drop=True)
    result = op(
        resource_type="Patient", count=5, destination=str(tmp_path), retry_args=fast_retry
    ).execute({})
    assert result["resources"] == 20


def test_token_expiring_mid_run_is_renewed(
    make_conn: Callable[..., str], tmp_path: Path, sb: Any
) -> None:
    client_id = make_conn(CONN)
    after_requests(sb, "/fhir/Patient", 2, expire_tokens=True)  # page 3 meets a dead token
    result = op(resource_type="Patient", count=5, destination=str(tmp_path)).execute({})
    assert result["resources"] == 20
    assert sb.stats["token_requests_by_client"][client_id] == 2


def test_token_refused_mid_search_is_renewed(
    make_conn: Callable[..., str], tmp_path: Path, sb: Any
) -> None:
    """The server stops accepting the token between pages (it expired on its clock): the
    third page is answered 401, the client renews once and the search goes on. No wall-clock
    expiry, so it holds on a loaded machine."""
    client_id = make_conn(CONN)
    after_requests(sb, "/fhir/Patient", 2, status=401, body_kind="text", body="expired")
    result = op(resource_type="Patient", count=5, destination=str(tmp_path)).execute({})
    assert result["resources"] == 20
    assert sb.stats["token_requests_by_client"][client_id] == 2


def test_operation_outcome_400_fails_clearly(conn: str, tmp_path: Path) -> None:
    with pytest.raises(FhirError, match=r"HTTP 400.*_sort") as info:
        op(
            resource_type="Patient", search_params={"_sort": "birthDate"}, destination=str(tmp_path)
        ).execute({})
    assert "Patient search (page 1)" in str(info.value)
    assert listing(tmp_path) == []


def test_failure_mid_search_leaves_no_complete_looking_file(
    conn: str, tmp_path: Path, sb: Any, fast_retry: dict[str, Any]
) -> None:
    after_requests(sb, "/fhir/Observation", 2, status=500, body="disk full", times=None)
    with pytest.raises(FhirError, match="disk full"):
        op(
            resource_type="Observation",
            search_params=INCLUDE,
            count=5,
            destination=str(tmp_path / "out"),
            retry_args=fast_retry,
        ).execute({})
    # Nothing at the final names and no temporary file left behind.
    assert listing(tmp_path / "out") == []


def test_failure_keeps_the_previous_runs_file(
    conn: str, tmp_path: Path, sb: Any, fast_retry: dict[str, Any]
) -> None:
    op(resource_type="Patient", count=5, destination=str(tmp_path)).execute({})
    before = (tmp_path / "Patient.ndjson").read_bytes()
    after_requests(sb, "/fhir/Patient", 1, status=502, times=None)
    with pytest.raises(FhirError, match="HTTP 502"):
        op(
            resource_type="Patient", count=5, destination=str(tmp_path), retry_args=fast_retry
        ).execute({})
    assert (tmp_path / "Patient.ndjson").read_bytes() == before
    assert listing(tmp_path) == ["Patient.ndjson"]


def test_missing_host_is_a_configuration_error(
    make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch, sb: Any
) -> None:
    from tests.conftest import connection_json
    from tests.support.clients import register

    client_id, key = register(sb)
    monkeypatch.setenv(
        "AIRFLOW_CONN_NO_HOST",
        connection_json(
            host=None, login=client_id, password=key.private_pem, auth_url=sb.token_url
        ),
    )
    with pytest.raises(Exception, match="no host"):
        op(resource_type="Patient", backendauth_conn_id="no_host").execute({})


def test_token_never_reaches_xcom_or_logs(
    conn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    with caplog.at_level(logging.DEBUG):
        result = op(resource_type="Patient", count=5, destination=str(tmp_path)).execute({})
    token = BackendAuthHook(CONN).get_token()
    assert token not in json.dumps(result)
    assert token not in caplog.text
