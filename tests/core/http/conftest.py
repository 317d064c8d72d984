"""Servers on loopback for the transport's tests: a target and a forward proxy that says who
answered, and an HTTPS server with a certificate of its own."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.servers import trusted_certificate

PROXY_VARIABLES = [
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
] + ["REQUEST_METHOD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]


class _Answer(BaseHTTPRequestHandler):
    """Says who answered: the proxy gets absolute URIs (``GET http://host/path``)."""

    name = "server"
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = self.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(name: str) -> tuple[ThreadingHTTPServer, list[str]]:
    seen: list[str] = []
    handler = type(f"{name}Handler", (_Answer,), {"name": name, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, list[str]]]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    target, _ = _serve("server")
    proxy, proxied = _serve("proxy")
    try:
        yield (
            f"http://127.0.0.1:{target.server_address[1]}/data",
            f"http://127.0.0.1:{proxy.server_address[1]}",
            proxied,
        )
    finally:
        for server in (target, proxy):
            server.shutdown()
            server.server_close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server with a self-signed certificate: (its URL, the certificate)."""
    cert, key = trusted_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, _ = _serve("tls")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/data", cert
    finally:
        server.shutdown()
        server.server_close()
