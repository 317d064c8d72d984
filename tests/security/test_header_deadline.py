"""The connection's ``timeout`` is a total deadline on the status line and headers too, on
every request path: a server that sends ``HTTP/1.1 200 OK`` and then one header byte every
0.3 s (each read well within ``timeout=1``) is cut off at the deadline, not after the ~18 s
its 60 header bytes take.

The assertions are causal, not wall-clock races: the call failed with a timeout, and the
server saw the connection closed before it had dripped ``MAX_BYTES`` bytes (1 s of deadline
is about 3 bytes; 20 bytes is 6 s, a wide margin on a loaded machine).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.errors import BackendAuthError
from backendauth_sandbox.testing import ClientKey
from tests.security.drip import DripServer
from tests.security.hostile import HostileServer

TIMEOUT = 1
MAX_BYTES = 20  # header bytes dripped (0.3 s each) before the client must have hung up
CONN_ID = "dripping"


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer(header_bytes=60, delay=0.3)
    yield server
    server.close()


@pytest.fixture
def conn(
    good: HostileServer, drip: DripServer, client_key: ClientKey, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """``conn(fhir=..., auth=...)``: a connection with ``timeout=1`` whose FHIR base and
    token endpoint are either the dripping server or the good one."""

    def make(*, fhir: str = "drip", auth: str = "good") -> str:
        urls = {"drip": drip.url, "good": good.url}
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            json.dumps(
                {
                    "conn_type": "backendauth",
                    "host": f"{urls[fhir]}/fhir",
                    "login": "drip-client",
                    "password": client_key.private_pem,
                    "extra": {
                        "profile": "custom",
                        "auth_url": f"{urls[auth]}/token",
                        "scope": "system/*.rs",
                        "retries": 0,
                        "timeout": TIMEOUT,
                    },
                }
            ),
        )
        return CONN_ID

    return make


def assert_cut_off(drip: DripServer) -> None:
    record = drip.first()
    assert record.closed.is_set() and not record.finished, record
    assert record.sent < MAX_BYTES, f"the client waited for {record.sent} dripped bytes"


def test_token_exchange(conn: Callable[..., str], drip: DripServer) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    with pytest.raises(BackendAuthError) as info:
        BackendAuthHook(conn(fhir="good", auth="drip")).get_token()
    assert_cut_off(drip)
    message = str(info.value)
    assert "token URL" in message and f"did not answer within {TIMEOUT} s" in message, message
    assert "total deadline" in message and info.value.retryable


def test_rest_call(conn: Callable[..., str], drip: DripServer) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    with pytest.raises(BackendAuthError) as info:
        BackendAuthHook(conn()).run("GET", "Patient")
    assert_cut_off(drip)
    assert "DeadlineExceededError" in str(info.value) and "total deadline" in str(info.value)
    assert not info.value.retry_cannot_help  # Airflow's task retries still apply


def test_fhir_search(conn: Callable[..., str], drip: DripServer, tmp_path: Path) -> None:
    from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

    op = FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=conn(),
        resource_type="Patient",
        destination=str(tmp_path / "out"),
    )
    with pytest.raises(Exception, match="total deadline"):
        op.execute({})
    assert_cut_off(drip)


def bulk_http(conn_id: str) -> Any:

    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    return BackendAuthHook(conn_id).client.authorized_sessions()


def test_bulk_status_poll(conn: Callable[..., str], drip: DripServer) -> None:
    from airflow_provider_backendauth.core.bulk.client import BulkExportClient
    from airflow_provider_backendauth.core.bulk.protocol import RetryLater

    client = BulkExportClient(bulk_http(conn()), f"{drip.url}/fhir")
    result = client.poll(f"{drip.url}/fhir/status/1")
    assert_cut_off(drip)
    assert isinstance(result, RetryLater)  # retryable, as any timeout
    assert "DeadlineExceededError" in str(result)


def test_bulk_file_download(conn: Callable[..., str], drip: DripServer, tmp_path: Path) -> None:
    from airflow_provider_backendauth.core.bulk.download import BulkDownloader
    from airflow_provider_backendauth.core.bulk.files import ExportFile
    from airflow_provider_backendauth.core.errors import BulkExportError
    from airflow_provider_backendauth.core.retry import RetryPolicy

    downloader = BulkDownloader(
        bulk_http(conn()), retry=RetryPolicy(attempts=1, initial_wait=0.01, max_wait=0.01)
    )
    file = ExportFile("output", "Patient", f"{drip.url}/files/Patient.ndjson", "Patient.ndjson")
    with pytest.raises(BulkExportError, match="total deadline"):
        downloader.download_one(file, tmp_path, requires_access_token=False)
    assert_cut_off(drip)


def test_a_session_from_the_hook(conn: Callable[..., str], drip: DripServer) -> None:
    from airflow_provider_backendauth.core.http.deadline import DeadlineExceededError
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    session = BackendAuthHook(conn()).get_session()
    with pytest.raises(DeadlineExceededError, match=f"within {TIMEOUT} s") as info:
        session.get(f"{drip.url}/fhir/Patient", timeout=TIMEOUT)
    assert_cut_off(drip)
    assert isinstance(info.value, requests.Timeout)


def test_the_triggers_status_poll(conn: Callable[..., str], drip: DripServer) -> None:
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    trigger = BulkExportTrigger(
        conn(),
        f"{drip.url}/fhir/status/1",
        poll_settings=PollSettings(
            poll_interval_min=0.1, poll_interval_max=0.1, max_transient_errors=0
        ),
        cancel_on_kill=False,
    )

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    started = time.monotonic()
    payload = asyncio.run(asyncio.wait_for(first_event(), 60))
    assert_cut_off(drip)
    assert payload["status"] == "error", payload
    assert "total deadline" in payload["message"], payload
    assert time.monotonic() - started < 60


def test_over_tls(tmp_path: Path) -> None:
    from airflow_provider_backendauth.core.http.deadline import DeadlineExceededError
    from airflow_provider_backendauth.core.http.sessions import plain_session
    from tests.support.servers import trusted_certificate

    cert, key = trusted_certificate(tmp_path)
    server = DripServer(header_bytes=60, delay=0.3, tls=(cert, key))
    try:
        session = plain_session()
        with pytest.raises(DeadlineExceededError, match="total deadline"):
            session.get(f"{server.url}/fhir/Patient", timeout=TIMEOUT, verify=str(cert))
        assert_cut_off(server)
    finally:
        server.close()


def test_the_session_keeps_working_and_the_watchdog_is_one_thread(
    good: HostileServer, drip: DripServer
) -> None:
    import threading

    from airflow_provider_backendauth.core.http.deadline import DeadlineExceededError
    from airflow_provider_backendauth.core.http.sessions import plain_session

    session = plain_session()
    with pytest.raises(DeadlineExceededError):
        session.get(f"{drip.url}/x", timeout=(0.5, 0.5))  # (connect, read): 1 s in all
    assert_cut_off(drip)
    # Requests that answer in time are untouched, over kept-alive connections, and none
    # starts a thread of its own.
    for _ in range(50):
        assert session.get(f"{good.url}/fhir/Patient/1", timeout=TIMEOUT).status_code == 404
        streamed = session.get(f"{good.url}/fhir/Patient/1", timeout=TIMEOUT, stream=True)
        assert streamed.status_code == 404 and streamed.content
    watchdogs = [t for t in threading.enumerate() if t.name == "backendauth-deadline"]
    assert len(watchdogs) == 1
    assert len(good.requests) == 100
