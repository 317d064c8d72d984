"""The sandbox's HTTP server takes a burst of connects without dropping any: hundreds of
deferred exports connecting at once must not wait out SYN retries."""

from __future__ import annotations

import contextlib
import socket

from backendauth_sandbox.httpd import HttpServer, Request, Response

BURST = 300  # deferred exports starting together in one DAG test


def _app(request: Request) -> Response:
    return Response(204)


def test_a_burst_of_connects_is_queued_not_dropped() -> None:
    # Not serving: nothing accepts, so every connect must fit in the listen backlog. A
    # connect that does not fit is dropped by the kernel and this blocking connect would
    # wait out SYN retries until its timeout (a failure, never a flaky pass).
    server = HttpServer("127.0.0.1", 0, _app, name="burst")
    sockets: list[socket.socket] = []
    try:
        for _ in range(BURST):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        assert len(sockets) == BURST
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        server.server_close()
