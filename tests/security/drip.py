"""A hostile HTTP server on 127.0.0.1 that drips its status line or headers.

It answers every connection with ``HTTP/1.1 200 OK\\r\\n`` and then one byte of a long header
every ``delay`` seconds: each socket read gets a byte well within any per-read timeout, so
only a deadline on the whole answer stops the client. Between bytes the server watches the
socket, and records how many header bytes it had sent when it saw the client close the
connection: a test asserts on that count (cause and effect), not on wall-clock races.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

STATUS_LINE = b"HTTP/1.1 200 OK\r\n"


@dataclass
class Dripped:
    """One connection: header bytes sent after the status line, and whether the client
    closed it before the server finished (``closed`` is set when it did)."""

    sent: int = 0
    finished: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


class DripServer:
    """``header_bytes`` bytes of ``X-Drip: aaaa...`` after the status line, one every
    ``delay`` seconds; then (if the client is still there) the end of the headers and an
    empty body. With ``tls`` (a certificate and key file): HTTPS."""

    def __init__(
        self, *, header_bytes: int = 60, delay: float = 0.3, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.header_bytes = header_bytes
        self.delay = delay
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*tls)
        self.connections: list[Dripped] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Dripped()
            with self._lock:
                self.connections.append(record)
            thread = threading.Thread(target=self._drip, args=(conn, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _client_gone(self, conn: socket.socket, wait: float) -> bool:
        """Wait up to ``wait`` seconds; whether the client closed its side meanwhile (the
        request it sent was read first, so anything readable now is the end of the stream)."""
        readable, _, _ = select.select([conn], [], [], wait)
        if not readable:
            return False
        try:
            return conn.recv(65536) == b""
        except (OSError, ssl.SSLError):
            return True

    def _drip(self, conn: socket.socket, record: Dripped) -> None:
        header = (b"X-Drip: " + b"a" * self.header_bytes)[: self.header_bytes]
        with conn:
            try:
                if self._tls is not None:
                    conn.settimeout(10)
                    conn = self._tls.wrap_socket(conn, server_side=True)
                    conn.settimeout(None)
                conn.recv(65536)  # the request (small: one read is enough here)
                conn.sendall(STATUS_LINE)
                for i in range(len(header)):
                    if self._stop.is_set() or self._client_gone(conn, self.delay):
                        record.closed.set()
                        return
                    conn.sendall(header[i : i + 1])
                    record.sent += 1
                conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
                record.finished = True
            except OSError:
                record.closed.set()

    def first(self, timeout: float = 30) -> Dripped:
        """The first connection's record, once that connection has ended."""
        deadline = threading.Event()
        for _ in range(int(timeout * 10)):
            with self._lock:
                if self.connections:
                    record = self.connections[0]
                    break
            deadline.wait(0.1)
        else:
            raise AssertionError("nobody connected to the drip server")
        for thread in list(self._threads):
            thread.join(timeout)
        return record

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
