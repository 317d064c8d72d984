"""Small hostile HTTP servers on 127.0.0.1 (ephemeral ports) for the security tests.

A ``HostileServer`` answers each request with whatever the test scripted for its path (a
``Reply``, or a function of the request returning one) and records every request it got,
headers included, so a test can assert that no ``Authorization`` header ever reached it.
The "good" server also plays the token endpoint: it accepts any client assertion (these
tests are about what the client does with hostile answers, not about assertion checks).
"""

from __future__ import annotations

import functools
import http.server
import itertools
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TOKEN_PREFIX = "tok-secret-"


@dataclass
class Reply:
    """What to answer: a status, headers and a body (bytes, text, JSON, or an iterator of
    byte chunks sent as they come, with ``delay`` seconds between chunks)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = b""
    delay: float = 0.0

    def encoded(self) -> bytes | Iterable[bytes]:
        body = self.body
        if isinstance(body, (dict, list)):
            self.headers.setdefault("Content-Type", "application/fhir+json")
            return json.dumps(body).encode()
        if isinstance(body, str):
            return body.encode()
        return body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


Route = Reply | Callable[[Seen], Reply]


class HostileServer:
    """One scripted HTTP/1.1 server on 127.0.0.1:<ephemeral>."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.tokens_issued: list[str] = []
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with server._lock:
                    server.requests.append(seen)
                reply = server._reply_for(seen)
                payload = reply.encoded()
                self.send_response(reply.status)
                chunked = not isinstance(payload, (bytes, bytearray))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if chunked and "Content-Length" not in reply.headers:
                    self.send_header("Transfer-Encoding", "chunked")
                elif not chunked and "Content-Length" not in reply.headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    if not chunked:
                        self.wfile.write(payload)
                        return
                    for chunk in payload:
                        if reply.delay:
                            time.sleep(reply.delay)
                        if "Content-Length" in reply.headers:
                            self.wfile.write(chunk)
                        else:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    if "Content-Length" not in reply.headers:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _reply_for(self, seen: Seen) -> Reply:
        path = urlsplit(seen.path).path
        route = self.routes.get(path)
        if route is None and path == "/token" and seen.method == "POST":
            return self._token()
        if route is None:
            return Reply(404, body={"resourceType": "OperationOutcome", "issue": []})
        return route(seen) if callable(route) else route

    def _token(self) -> Reply:
        value = f"{TOKEN_PREFIX}{next(self._counter)}-{self.port}"
        self.tokens_issued.append(value)
        return Reply(
            200,
            body={"access_token": value, "token_type": "Bearer", "expires_in": 300},
            headers={"Content-Type": "application/json"},
        )

    def authorization_headers(self) -> list[str]:
        """Every Authorization header this server received."""
        return [r.authorization for r in self.requests if r.authorization]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def twisted_url(other: HostileServer, good: HostileServer, path: str = "/x") -> str:
    """``http://127.0.0.1:OTHER\\@127.0.0.1:GOOD/...``: urllib.parse and httpx read host GOOD
    (with user info), urllib3 (requests) connects to OTHER."""
    return f"http://127.0.0.1:{other.port}\\@127.0.0.1:{good.port}{path}"


def ndjson(resources: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def bundle(resources: Iterable[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@functools.lru_cache(maxsize=8)
def gzip_bomb(decoded_mb: int) -> bytes:
    """A gzip body that expands to ``decoded_mb`` MB of spaces (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [compressor.compress(block) for _ in range(decoded_mb)]
    return b"".join(parts) + compressor.flush()


def gzip_reply(status: int, decoded_mb: int, **headers: str) -> Reply:
    """A ``status`` answer whose body is a gzip bomb of ``decoded_mb`` MB."""
    return Reply(
        status,
        {"Content-Encoding": "gzip", "Content-Type": "application/json", **headers},
        gzip_bomb(decoded_mb),
    )


def huge_route(status: int, mb: int) -> Callable[[Seen], Reply]:
    """Answers ``status`` with ``mb`` MB of spaces, sent chunked as the client reads."""
    block = b" " * (1 << 20)

    def reply(seen: Seen) -> Reply:
        return Reply(status, {"Content-Type": "application/json"}, (block for _ in range(mb)))

    return reply


def nested_json(depth: int) -> bytes:
    """A JSON document nested ``depth`` levels (Python's parser recurses per level)."""
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"
