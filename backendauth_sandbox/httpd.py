"""HTTP/1.1 plumbing: sockets in, ``Request`` objects to the app, ``Response`` objects out.

Built on the standard library's ``ThreadingHTTPServer`` so the sandbox needs no web
framework. What it adds: keep-alive with exact ``Content-Length`` or chunked bodies, zero-copy
``sendfile`` for bulk files, and the socket-level tricks fault injection needs (closing
without an answer, cutting a body after K bytes). It also tracks open connections so
``close()`` leaves no thread or socket behind, even with idle keep-alive clients.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
# Small bodies ride in the same send() as the headers: one packet, no Nagle/ACK stall.
_COALESCE_LIMIT = 64 * 1024


@dataclass
class Request:
    """One parsed HTTP request, as the sandbox's route handlers see it."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    query_string: str
    headers: Message
    body: bytes
    base_url: str
    server_name: str = "main"

    @property
    def url(self) -> str:
        return self.base_url + self.target

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased ('' when absent)."""
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def authorization(self) -> tuple[str | None, str | None]:
        """(scheme in lower case, credentials) of the Authorization header, or (None, None)."""
        auth = self.header("Authorization")
        if not auth:
            return None, None
        scheme, _, value = auth.strip().partition(" ")
        return scheme.lower(), value.strip() or None

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    """What a handler returns. Exactly one body kind is used: ``body``, ``stream`` or ``file_path``.

    ``stream`` without ``content_length`` goes out chunked. ``truncate_after`` and ``drop`` are
    set by fault injection.
    """

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Iterable[bytes] | None = None
    content_length: int | None = None
    file_path: str | None = None
    file_offset: int = 0
    file_length: int | None = None
    drop: bool = False
    truncate_after: int | None = None
    on_sent: Callable[[int], None] | None = None

    def header(self, name: str, value: str) -> Response:
        self.headers.append((name, value))
        return self

    def get_header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


App = Callable[[Request], Response]


class _ConnectionDropped(Exception):
    """Raised inside the writer once a body has been cut short on purpose."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "backendauth-sandbox"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this; close() also shuts them down early.
    timeout = 120
    server: HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        length = int(length_header)
        if length < 0 or length > MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers end with an empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_REQUEST_BODY:
                raise ValueError("request body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Response(400, b"bad request body\n", "text/plain"), head_only=False)
            return
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            target=self.path,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            query_string=split.query,
            headers=self.headers,
            body=body,
            base_url=self.server.base_url,
            server_name=self.server.name,
        )
        try:
            response = self.server.app(request)
        except Exception:
            log.exception("sandbox handler failed for %s %s", self.command, self.path)
            response = Response(500, b"internal sandbox error\n", "text/plain")
        self._send(response, head_only=self.command == "HEAD")

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, response: Response, head_only: bool) -> None:
        if response.drop:
            self._abort()
            return
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)

        length: int | None
        if response.file_path is not None:
            length = response.file_length
            if length is None:
                length = os.path.getsize(response.file_path) - response.file_offset
        elif response.stream is not None:
            length = response.content_length
        else:
            length = len(response.body)
        chunked = length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))

        sent = 0
        try:
            if head_only or response.status in (204, 304):
                self.end_headers()
            elif response.file_path is None and response.stream is None:
                if response.truncate_after is None and len(response.body) <= _COALESCE_LIMIT:
                    buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
                    buffer.append(b"\r\n" + response.body)
                    self.flush_headers()
                    sent = len(response.body)
                else:
                    self.end_headers()
                    sent = self._write_all([response.body], response.truncate_after, False)
            elif response.file_path is not None:
                self.end_headers()
                sent = self._write_file(
                    response.file_path, response.file_offset, length, response.truncate_after
                )
            else:
                assert response.stream is not None
                self.end_headers()
                sent = self._write_all(response.stream, response.truncate_after, chunked)
        except _ConnectionDropped:
            self._abort()
            sent = response.truncate_after or 0
        except OSError:
            # The client went away (or close() shut the socket): nothing left to do.
            self.close_connection = True
        finally:
            close = getattr(response.stream, "close", None)
            if callable(close):
                close()
            if response.on_sent is not None:
                response.on_sent(sent)

    def _write_all(self, parts: Iterable[bytes], limit: int | None, chunked: bool) -> int:
        sent = 0
        for part in parts:
            if not part:
                continue
            if limit is not None and sent + len(part) > limit:
                part = part[: limit - sent]
                if chunked and part:
                    self.wfile.write(b"%x\r\n" % len(part) + part)
                elif part:
                    self.wfile.write(part)
                raise _ConnectionDropped
            if chunked:
                self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
            else:
                self.wfile.write(part)
            sent += len(part)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        return sent

    def _write_file(self, path: str, offset: int, count: int | None, limit: int | None) -> int:
        with open(path, "rb") as fh:
            if limit is None:
                # Zero-copy: loopback throughput is bounded by the kernel, not by Python.
                return self.connection.sendfile(fh, offset, count)
            fh.seek(offset)
            remaining = count if count is not None else -1

            def chunks() -> Iterable[bytes]:
                nonlocal remaining
                while remaining != 0:
                    chunk = fh.read(_CHUNK if remaining < 0 else min(_CHUNK, remaining))
                    if not chunk:
                        return
                    if remaining > 0:
                        remaining -= len(chunk)
                    yield chunk

            return self._write_all(chunks(), limit, False)


class HttpServer(ThreadingHTTPServer):
    """A threaded server that remembers its open connections so it can close them all."""

    daemon_threads = True
    # The listen backlog: connections the kernel completes before serve_forever accepts them.
    # The stdlib's 5 is far too few for a DAG test that defers hundreds of exports at once:
    # with the queue full the kernel drops further SYNs, and each of those clients waits out
    # a SYN retry (1 s, then 3, 7, ...). Linux caps it at net.core.somaxconn (4096 today).
    request_queue_size = 1024

    def __init__(self, host: str, port: int, app: App, name: str = "main") -> None:
        self.app = app
        self.name = name
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # The stdlib only joins non-daemon handler threads; ours are daemons (a stuck client
        # must never keep the interpreter alive), so close() joins them itself.
        self._handler_threads: list[threading.Thread] = []
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        host = str(self.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"sandbox-{self.name}-conn",
            daemon=True,
        )
        with self._connections_lock:
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(thread)
            self._connections.add(request)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"sandbox-{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, shut down every open connection, join every handler thread."""
        if self._thread is not None:
            stopper = threading.Thread(target=self.shutdown, name=f"sandbox-{self.name}-stop")
            stopper.start()
            # serve_forever() only notices shutdown after select() returns; a throwaway
            # connection wakes it now instead of after the poll interval.
            while stopper.is_alive():
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((str(self.server_address[0]), self.port), timeout=0.5),
                ):
                    pass
                stopper.join(0.01)
            self._thread.join()
            self._thread = None
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()
        with self._connections_lock:
            threads, self._handler_threads = self._handler_threads, []
        for thread in threads:
            thread.join(timeout=10)
