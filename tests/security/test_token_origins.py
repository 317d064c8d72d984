"""Finding 1: the bearer token must never reach a host other than the allowed origins.

The attack: ``http://127.0.0.1:OTHER\\@127.0.0.1:GOOD/...`` passes an origin check made with
``urllib.parse`` (host GOOD) while requests/urllib3 connects to OTHER. Tried through every
place a server hands the client a URL: a bulk file URL, a redirect ``Location`` on a file, the
kick-off ``Content-Location``, a status-URL redirect (worker and triggerer), a FHIR search
``next`` link and a redirect answered to the hook's session.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.errors import BackendAuthError, UnsafeURLError
from tests.security.hostile import HostileServer, Reply, bundle, ndjson, twisted_url

PATIENTS = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(3)]


def manifest(good: HostileServer, file_url: str) -> dict[str, Any]:
    return {
        "transactionTime": "2026-01-01T00:00:00Z",
        "request": f"{good.url}/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": file_url}],
        "error": [],
    }


def script_export(
    good: HostileServer, *, status_url: str | None = None, file_url: str | None = None
) -> None:
    good.routes["/fhir/$export"] = Reply(
        202, {"Content-Location": status_url or f"{good.url}/status"}
    )
    good.routes["/status"] = Reply(200, body=manifest(good, file_url or f"{good.url}/files/p"))
    good.routes["/files/p"] = Reply(
        200, {"Content-Type": "application/fhir+ndjson"}, ndjson(PATIENTS)
    )


def run_export(conn_id: str, tmp_path: Path) -> Any:
    from airflow_provider_backendauth.operators.bulk import FhirBulkExportOperator
    from tests.support.bulkkit import task_context

    op = FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=conn_id,
        destination=str(tmp_path / "out"),
        deferrable=False,
        poll_interval_min=0.05,
        poll_interval_max=0.1,
    )
    return op.execute(task_context())


def assert_refused(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    text = str(excinfo.value)
    assert "refused" in text, text
    assert "tok-secret" not in text


def test_bulk_file_url(good, other, connect, tmp_path) -> None:
    script_export(good, file_url=twisted_url(other, good, "/files/p"))
    with pytest.raises(BackendAuthError) as excinfo:
        run_export(connect(), tmp_path)
    assert other.authorization_headers() == []  # pre-fix: "Bearer tok-secret-..."
    assert other.requests == []
    assert_refused(excinfo)
    assert good.tokens_issued  # the token existed and was used on the good server


def test_bulk_file_redirect_location(good, other, connect, tmp_path) -> None:
    script_export(good, file_url=f"{good.url}/files/r")
    good.routes["/files/r"] = Reply(302, {"Location": twisted_url(other, good, "/files/p")})
    with pytest.raises(BackendAuthError) as excinfo:
        run_export(connect(), tmp_path)
    assert other.authorization_headers() == []
    assert other.requests == []
    assert_refused(excinfo)


def test_kickoff_content_location(good, other, connect, tmp_path) -> None:
    script_export(good, status_url=twisted_url(other, good, "/status"))
    with pytest.raises(BackendAuthError) as excinfo:
        run_export(connect(), tmp_path)
    assert other.authorization_headers() == []
    assert other.requests == []
    assert_refused(excinfo)


def test_status_redirect(good, other, connect, tmp_path) -> None:
    script_export(good)
    good.routes["/status"] = Reply(302, {"Location": twisted_url(other, good, "/status")})
    with pytest.raises(BackendAuthError) as excinfo:
        run_export(connect(), tmp_path)
    assert other.authorization_headers() == []
    assert other.requests == []
    assert_refused(excinfo)


def test_status_redirect_in_the_triggerer(good, other, connect) -> None:
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    good.routes["/status"] = Reply(302, {"Location": twisted_url(other, good, "/status")})
    trigger = BulkExportTrigger(
        connect(), f"{good.url}/status", poll_settings=PollSettings(poll_interval_min=0.05)
    )

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first(), 30))
    assert other.authorization_headers() == []
    assert other.requests == []
    assert event["status"] == "error"
    assert "refused" in event["message"]
    assert "tok-secret" not in event["message"]


def test_fhir_search_next_link_to_another_origin(good, other, connect, tmp_path) -> None:
    from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

    other.routes[f"/%5C@127.0.0.1:{good.port}/fhir/Patient"] = Reply(
        200, body=bundle([{"resourceType": "Patient", "id": "attacker"}])
    )
    good.routes["/fhir/Patient"] = Reply(
        200, body=bundle(PATIENTS, next_url=twisted_url(other, good, "/fhir/Patient"))
    )
    op = FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=connect(),
        resource_type="Patient",
        destination=str(tmp_path / "out"),
    )
    with pytest.raises(UnsafeURLError) as excinfo:
        op.execute({})
    assert other.authorization_headers() == []
    assert other.requests == []
    assert_refused(excinfo)


def test_hook_session_redirect(good, other, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/fhir/go"] = Reply(302, {"Location": twisted_url(other, good, "/fhir/x")})
    session = BackendAuthHook(connect()).get_session()
    with pytest.raises(BackendAuthError) as excinfo:
        session.get(f"{good.url}/fhir/go", timeout=10)
    assert other.authorization_headers() == []
    assert other.requests == []
    assert_refused(excinfo)


def test_plain_redirect_to_another_origin_goes_without_the_token(good, other, connect) -> None:
    """Unambiguous cross-origin redirects are still followed, just without the token; a
    redirect back to the allowed origin gets it again (each hop judged on its own)."""
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/fhir/go"] = Reply(302, {"Location": f"{other.url}/hop"})
    other.routes["/hop"] = Reply(302, {"Location": f"{good.url}/fhir/back"})
    good.routes["/fhir/back"] = Reply(200, body={"ok": True})
    session = BackendAuthHook(connect()).get_session()
    response = session.get(f"{good.url}/fhir/go", timeout=10)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [302, 302]
    assert other.authorization_headers() == []
    assert [r.path for r in good.requests if r.authorization] == ["/fhir/go", "/fhir/back"]
