"""The triggerer's driver (``core/http/aiohttp_driver.py``) against real servers on loopback:
one session per event loop and TLS setting, connections reused across its users, the
workers' TLS and proxy rules, no cookies kept, header text as the workers read it, and
nothing put on the loop's default executor."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import certifi
import pytest

from airflow_provider_backendauth.core.http import aiohttp_driver
from airflow_provider_backendauth.core.http.aiohttp_driver import (
    proxy_for,
    send_async,
    shared_session,
    ssl_context,
)
from airflow_provider_backendauth.core.http.policy import BearerPolicy
from airflow_provider_backendauth.core.http.sessions import USER_AGENT

MB = 1 << 20


def get(url: str, verify: bool | str = True, **options: Any) -> aiohttp_driver.Reply:
    """One token-less GET through the driver, in a loop of its own."""

    async def run() -> aiohttp_driver.Reply:
        async with shared_session(verify) as session:
            policy = BearerPolicy(None, [])
            return await send_async(session, policy, "GET", url, timeout=10, max_bytes=MB)

    return asyncio.run(run(), **options)


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with a cookie and a header byte outside ASCII; records what it got
    and on which connection (the client's port)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[int, dict[str, str]]]

    def do_GET(self) -> None:
        self.seen.append((self.client_address[1], dict(self.headers.items())))
        body = b"ok"
        self.send_response(200)
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Progress(_Recorder):
    def do_GET(self) -> None:
        self.seen.append((self.client_address[1], dict(self.headers.items())))
        self.send_response(202)
        # Raw bytes as a server may send them: ESC-less C1 "CSI" (0x9b) and a UTF-8 "é".
        self._headers_buffer.append(b"X-Progress: \x9b31m50% caf\xc3\xa9\r\n")  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[int, dict[str, str]]]]]:
    seen: list[tuple[int, dict[str, str]]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_users_of_one_loop_share_one_session_and_its_connections(recorder) -> None:
    base, seen = recorder

    async def run() -> tuple[set[int], bool, bool]:
        async with shared_session(True) as first, shared_session(True) as second:
            assert first is second
            async with shared_session(False) as other:
                assert other is not first  # another TLS setting: another session
            assert other.closed and not first.closed  # its last user is done
            policy = BearerPolicy(None, [])
            for _ in range(3):  # 30 polls by 10 "triggers", a few at a time
                await asyncio.gather(
                    *(
                        send_async(first, policy, "GET", f"{base}/s", timeout=10, max_bytes=MB)
                        for _ in range(10)
                    )
                )
        ports = {port for port, _ in seen}
        return ports, first.closed, second.closed

    ports, first_closed, second_closed = asyncio.run(run())
    assert len(seen) == 30
    assert len(ports) <= 10  # connections reused across users (httpx: one per trigger)
    assert first_closed and second_closed


def test_a_new_loop_gets_a_new_session(recorder) -> None:
    base, _ = recorder
    sessions = []

    async def run() -> None:
        async with shared_session(True) as session:
            sessions.append(session)
            await send_async(session, BearerPolicy(None, []), "GET", base, timeout=10, max_bytes=MB)

    asyncio.run(run())
    asyncio.run(run())
    assert sessions[0] is not sessions[1] and all(s.closed for s in sessions)


def test_no_cookie_is_kept_and_our_user_agent_is_sent(recorder) -> None:
    base, seen = recorder

    async def run() -> None:
        async with shared_session(True) as session:
            for _ in range(2):
                await send_async(
                    session, BearerPolicy(None, []), "GET", base, timeout=10, max_bytes=MB
                )

    asyncio.run(run())
    assert [h.get("Cookie") for _, h in seen] == [None, None]  # one connection's cookie...
    assert {h["User-Agent"] for _, h in seen} == {USER_AGENT}  # ...never another's
    assert {h["Accept-Encoding"] for _, h in seen} == {"gzip, deflate"}


def test_header_text_is_read_as_the_workers_read_it(recorder) -> None:
    import requests

    seen: list[tuple[int, dict[str, str]]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Progress,), {"seen": seen}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/status"
    try:
        ours = get(url).headers["X-Progress"]
        theirs = requests.get(url, timeout=10).headers["X-Progress"]
    finally:
        server.shutdown()
        server.server_close()
    assert ours == theirs == "\x9b31m50% caf\xc3\xa9"  # ISO-8859-1, byte for byte


def test_tls_settings_are_the_workers(
    https_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection's ca_bundle or verify_ssl, else REQUESTS_CA_BUNDLE, else certifi: as
    ``plain_session`` verifies on the workers (test_sessions.py)."""
    url, cert = https_server
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    assert get(url, str(cert)).body == b"tls"
    assert get(url, False).body == b"tls"
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        get(url, True)  # certifi does not know our CA
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        get(url, True)
    assert get(url, str(cert)).body == b"tls"  # the connection's own bundle still wins
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert get(url, True).body == b"tls"


def test_one_ssl_context_per_ca_source() -> None:
    # Loading the CA bundle per trigger cost every deferred export ~844 KB and ~31 ms.
    assert ssl_context(True) is ssl_context(True)
    assert ssl_context(False) is not ssl_context(True)
    assert ssl_context(certifi.where()) is ssl_context(certifi.where())


def test_proxies_follow_the_environment_as_requests_does(
    servers: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, proxy, proxied = servers
    assert get(url).body == b"server"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    assert get(url).body == b"proxy" and proxied == [url]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert get(url).body == b"server"
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # a CGI process: HTTP_PROXY is not trusted
    assert get(url).body == b"server"
    monkeypatch.delenv("REQUEST_METHOD")
    assert proxy_for(url) == proxy


class _Refusing(ThreadPoolExecutor):
    """A default executor that records every use (and runs nothing)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.calls: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls.append(fn)
        future: Future[Any] = Future()
        future.set_exception(RuntimeError("the loop's default executor was used"))
        return future


def test_requests_never_use_the_loops_default_executor(
    recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every deferred task of every provider shares it (aiohttp's trust_env would read the
    environment and ~/.netrc there, twice per request, and add netrc's credentials)."""
    base, seen = recorder
    host = "127.0.0.1"
    (tmp_path / ".netrc").write_text(f"machine {host} login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    refusing = _Refusing()

    async def run() -> None:
        async with shared_session(True) as session:  # built with the normal executor
            asyncio.get_running_loop().set_default_executor(refusing)
            for _ in range(3):
                await send_async(
                    session, BearerPolicy(None, []), "GET", base, timeout=10, max_bytes=MB
                )
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))

    asyncio.run(run())
    assert refusing.calls == []
    assert all("Authorization" not in headers for _, headers in seen)


def test_an_unanswered_connect_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(aiohttp_driver.TRANSPORT_ERRORS):
            get(f"http://127.0.0.1:{port}/")
