"""Issue 17: every request goes through one transport (``core/http/``). Bodies are read with
a cap per purpose, decoded size included, and a redirect's own body never; every redirect
hop is judged by the one redirect rule. Each finding is tried on both drivers where both
make the request: requests (workers) and aiohttp (the triggerer).

Memory is measured with tracemalloc (Python allocations: zlib's and the readers' buffers).
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from airflow_provider_backendauth.core.errors import BackendAuthError, ResponseTooLargeError
from airflow_provider_backendauth.core.http.bodies import MAX_ERROR_BODY_BYTES, MAX_STATUS_BYTES
from tests.security.hostile import (
    HostileServer,
    Reply,
    gzip_bomb,
    gzip_reply,
    huge_route,
    nested_json,
)

MB = 1024 * 1024
# The bound for answers that must be cut at a small cap (the 64 KiB error cap, a redirect's
# body never read, the 1 MiB discovery cap). tracemalloc counts every thread of the test
# process (the hostile server's, the deadline watchdog, threads other tests left running), so
# a bounded read peaks anywhere from 1 to ~12 MiB on a loaded machine; the unbounded reads
# these tests catch decode 300 MB (+600 MB to +1.2 GB measured before the fix): 48 MiB keeps a
# six-fold margin on both sides.
SMALL_PEAK = 48 * MB
STATUS_HEADERS = {"Content-Type": "application/json"}


def manifest(server: HostileServer) -> dict[str, Any]:
    return {
        "transactionTime": "2026-01-01T00:00:00Z",
        "request": f"{server.url}/fhir/$export",
        "requiresAccessToken": True,
        "output": [],
        "error": [],
    }


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yields a list that holds the traced peak (bytes) once the block ends."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def bulk_client(conn_id: str, good: HostileServer, **options: Any) -> Any:
    from airflow_provider_backendauth.core.bulk.client import BulkExportClient
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    http = BackendAuthHook(conn_id).client.authorized_sessions()
    return BulkExportClient(http, f"{good.url}/fhir", **options)


def trigger_event(conn_id: str, status_url: str) -> dict[str, Any]:
    """The first event of a ``BulkExportTrigger`` polling ``status_url`` (the triggerer's
    aiohttp driver); transient answers end the wait at once."""
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    trigger = BulkExportTrigger(
        conn_id,
        status_url,
        poll_interval_min=0.05,
        poll_interval_max=0.05,
        max_transient_errors=0,
        cancel_on_kill=False,
    )

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), 120))


def warm_up(conn_id: str, good: HostileServer) -> None:
    """Imports, the token and a first poll, so a measurement counts only the answer."""
    good.routes["/warm"] = Reply(200, STATUS_HEADERS, manifest(good))
    bulk_client(conn_id, good).poll(f"{good.url}/warm")
    trigger_event(conn_id, f"{good.url}/warm")


# -- status polls: 202/200 bombs, a 300 MB body, a 302 whose body is the bomb -------------

STATUS_CASES = {
    "202 gzip bomb": lambda: gzip_reply(202, 300, **{"X-Progress": "working"}),
    "200 gzip bomb": lambda: gzip_reply(200, 300),
    "200 with 300 MB": lambda: huge_route(200, 300),
}


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_a_status_poll_reads_at_most_its_cap_on_a_worker(case, good, connect) -> None:
    conn_id = connect()
    warm_up(conn_id, good)
    good.routes["/status"] = STATUS_CASES[case]()
    with peak_memory() as peak, pytest.raises(ResponseTooLargeError) as excinfo:
        bulk_client(conn_id, good).poll(f"{good.url}/status")
    # Before: the whole body, decoded (+600 MB to +1.2 GB per poll).
    assert peak[0] < 2.5 * MAX_STATUS_BYTES, f"peak {peak[0] / MB:.0f} MiB"
    assert str(MAX_STATUS_BYTES) in str(excinfo.value)
    assert excinfo.value.retry_cannot_help


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_a_status_poll_reads_at_most_its_cap_in_the_triggerer(case, good, connect) -> None:
    conn_id = connect()
    warm_up(conn_id, good)
    good.routes["/status"] = STATUS_CASES[case]()
    with peak_memory() as peak:
        payload = trigger_event(conn_id, f"{good.url}/status")
    # Before: response.content, the whole body (2.9 GB and MemoryError in 30 s of polls).
    assert peak[0] < 2.5 * MAX_STATUS_BYTES, f"peak {peak[0] / MB:.0f} MiB"
    assert payload["status"] == "error", payload
    assert f"larger than {MAX_STATUS_BYTES} bytes" in payload["message"]


def test_a_redirects_own_body_is_never_read(good, connect) -> None:
    conn_id = connect()
    warm_up(conn_id, good)
    good.routes["/status"] = gzip_reply(302, 300, Location=f"{good.url}/done")
    good.routes["/done"] = Reply(200, STATUS_HEADERS, manifest(good))
    from airflow_provider_backendauth.core.bulk.protocol import Complete

    with peak_memory() as worker:
        result = bulk_client(conn_id, good).poll(f"{good.url}/status")
    assert isinstance(result, Complete)
    with peak_memory() as triggerer:
        payload = trigger_event(conn_id, f"{good.url}/status")
    assert payload["status"] == "complete", payload
    # Before: the 302's 300 MB, decoded, before the redirect was judged.
    assert worker[0] < SMALL_PEAK, f"worker peak {worker[0] / MB:.0f} MiB"
    assert triggerer[0] < SMALL_PEAK, f"triggerer peak {triggerer[0] / MB:.0f} MiB"


# -- error answers: kick-off and cancel ----------------------------------------------------


def test_kickoff_and_cancel_error_answers_are_cut_at_the_error_cap(good, connect) -> None:
    conn_id = connect()
    warm_up(conn_id, good)
    from airflow_provider_backendauth.core.bulk.request import BulkExportRequest

    good.routes["/fhir/$export"] = gzip_reply(400, 300)
    good.routes["/status"] = gzip_reply(500, 300)
    from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings

    client = bulk_client(conn_id, good, poll_settings=PollSettings(max_transient_errors=0))
    with peak_memory() as kickoff, pytest.raises(BackendAuthError, match="kick-off"):
        client.kickoff(BulkExportRequest())
    with peak_memory() as cancel:
        assert client.cancel(f"{good.url}/status") is False
    # Before: +900 MB each.
    assert kickoff[0] < SMALL_PEAK, f"kick-off peak {kickoff[0] / MB:.0f} MiB"
    assert cancel[0] < SMALL_PEAK, f"cancel peak {cancel[0] / MB:.0f} MiB"


def test_the_triggers_cancel_reads_at_most_the_error_cap(good, connect) -> None:
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    conn_id = connect()
    warm_up(conn_id, good)
    good.routes["/status"] = huge_route(500, 300)
    trigger = BulkExportTrigger(conn_id, f"{good.url}/status")
    with peak_memory() as peak:
        asyncio.run(asyncio.wait_for(trigger.on_kill(), 60))
    assert [r.method for r in good.requests if r.path == "/status"] == ["DELETE"]
    assert peak[0] < SMALL_PEAK, f"peak {peak[0] / MB:.0f} MiB"


# -- SMART discovery -----------------------------------------------------------------------

WELL_KNOWN = "/fhir/.well-known/smart-configuration"


def discovering(connect: Callable[..., str]) -> str:
    from airflow_provider_backendauth.core.auth.discovery import clear_discovery_cache

    clear_discovery_cache()
    return connect(auth_url=None)


def test_a_discovery_bomb_is_a_clear_error_in_bounded_memory(good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    conn_id = discovering(connect)
    good.routes[WELL_KNOWN] = gzip_reply(200, 300)
    with peak_memory() as peak, pytest.raises(BackendAuthError, match="auth_url") as info:
        BackendAuthHook(conn_id).get_token()
    assert "larger than" in str(info.value)
    assert peak[0] < SMALL_PEAK, f"peak {peak[0] / MB:.0f} MiB"  # before: +900 MB


def test_discovery_does_not_follow_a_redirect_to_another_origin(good, other, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    conn_id = discovering(connect)
    good.routes[WELL_KNOWN] = Reply(302, {"Location": f"{other.url}/smart"})
    other.routes["/smart"] = Reply(200, body={"token_endpoint": f"{other.url}/token"})
    with pytest.raises(BackendAuthError, match="outside the allowed origins"):
        BackendAuthHook(conn_id).get_token()
    # Before: followed, and the other origin's token endpoint got the client assertion.
    assert other.requests == []


def test_a_discovery_redirect_loop_ends_after_a_few_hops(good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    conn_id = discovering(connect)
    good.routes[WELL_KNOWN] = Reply(302, {"Location": WELL_KNOWN})
    with pytest.raises(BackendAuthError, match="redirected more than 5 times"):
        BackendAuthHook(conn_id).get_token()
    assert len(good.requests) == 6  # before: 31, and requests' raw TooManyRedirects


@pytest.mark.parametrize("where", ["discovery", "token answer"])
def test_deeply_nested_json_is_a_clear_error(where, good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    deep = Reply(200, {"Content-Type": "application/json"}, nested_json(200_000))
    if where == "discovery":
        conn_id = discovering(connect)
        good.routes[WELL_KNOWN] = deep
        expected = "nested too deeply"
    else:
        conn_id = connect()
        good.routes["/token"] = deep
        expected = "without a JSON 'access_token'"
    with pytest.raises(BackendAuthError, match=expected):  # before: RecursionError
        BackendAuthHook(conn_id).get_token()


# -- REST bodies and redirects -------------------------------------------------------------

PHI = {"resourceType": "Patient", "name": [{"family": "Secret-PHI"}]}


def post_via(driver: str, conn_id: str, url: str) -> int:
    """POST the PHI body to ``url`` through the connection's policy, with ``driver``."""
    import json

    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    client = BackendAuthHook(conn_id).client
    if driver == "requests":
        session = client.new_session()
        return int(session.post(url, json=PHI, timeout=10).status_code)
    from airflow_provider_backendauth.core.http.aiohttp_driver import send_async, shared_session

    async def send() -> int:
        async with shared_session(True) as http:
            reply = await send_async(
                http,
                client.bearer_policy(),
                "POST",
                url,
                timeout=10,
                headers={"Content-Type": "application/fhir+json"},
                content=json.dumps(PHI).encode(),
                max_bytes=MB,
            )
        return reply.status

    return asyncio.run(send())


@pytest.mark.parametrize("driver", ["requests", "aiohttp"])
@pytest.mark.parametrize("status", [307, 308])
def test_a_body_is_never_resent_to_another_origin(driver, status, good, other, connect) -> None:
    good.routes["/fhir/Patient"] = Reply(status, {"Location": f"{other.url}/steal"})
    with pytest.raises(BackendAuthError, match="never re-sent to another origin"):
        post_via(driver, connect(), f"{good.url}/fhir/Patient")
    assert other.requests == []  # before: the PHI went to the other origin


@pytest.mark.parametrize("driver", ["requests", "aiohttp"])
def test_a_307_loop_ends_with_a_clear_error(driver, good, connect) -> None:
    good.routes["/fhir/Patient"] = Reply(307, {"Location": "/fhir/Patient"})
    with pytest.raises(BackendAuthError, match="redirected more than 5 times"):
        post_via(driver, connect(), f"{good.url}/fhir/Patient")
    posts = [r for r in good.requests if r.path == "/fhir/Patient"]
    assert len(posts) == 6 and all(b"Secret-PHI" in r.body for r in posts)  # before: 31


@pytest.mark.parametrize("driver", ["requests", "aiohttp"])
def test_a_302_after_a_post_is_a_get_without_the_body(driver, good, other, connect) -> None:
    good.routes["/fhir/Patient"] = Reply(302, {"Location": f"{other.url}/created"})
    other.routes["/created"] = Reply(200, body={"ok": True})
    assert post_via(driver, connect(), f"{good.url}/fhir/Patient") == 200
    [seen] = other.requests
    assert (seen.method, seen.body, seen.authorization) == ("GET", b"", None)
    assert "content-type" not in seen.headers


def test_an_error_body_is_cut_at_the_error_cap(good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/fhir/Patient"] = gzip_reply(500, 300)
    session = BackendAuthHook(connect()).get_session()
    with peak_memory() as peak:
        response = session.get(f"{good.url}/fhir/Patient", timeout=30)
    assert response.status_code == 500
    assert len(response.content) == MAX_ERROR_BODY_BYTES
    assert peak[0] < SMALL_PEAK, f"peak {peak[0] / MB:.0f} MiB"


def test_the_bomb_helper_is_small_on_the_wire() -> None:
    assert len(gzip_bomb(300)) < 400 * 1024
