"""The download engine against small hostile file servers on 127.0.0.1 (ephemeral ports):
decompression bombs in both forms, bodies shorter than their Content-Length, gzip streams
cut before their end, a final line that is not JSON. No manifest ``count`` anywhere: these
checks must hold without one."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from airflow_provider_backendauth.core.bulk.download import BulkDownloader
from airflow_provider_backendauth.core.bulk.files import ExportFile
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions
from airflow_provider_backendauth.core.retry import RetryPolicy

LINES = b"".join(b'{"resourceType":"Patient","id":"p%05d"}\n' % i for i in range(3000))


@dataclass
class Answer:
    """One scripted answer: ``send`` is how many body bytes actually go out (then the
    connection is closed), ``None`` for all of them."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    send: int | None = None
    status: int = 200


class FileServer:
    """Serves scripted answers per path; an answer list is used up in order, the last one
    repeats. Records the Range header of every request."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Answer]] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Range")))
                queue = outer.answers[self.path.split("?")[0]]
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(answer.status)
                headers = {"Content-Length": str(len(answer.body)), **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                body = answer.body if answer.send is None else answer.body[: answer.send]
                try:
                    for start in range(0, len(body), 1 << 16):
                        self.wfile.write(body[start : start + (1 << 16)])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client stopped reading: fine
                if answer.send is not None:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def fetch(server: FileServer, tmp_path: Path) -> Callable[..., object]:
    """Download ``path`` from the server as ``Patient.000.ndjson`` (no count)."""

    def run(path: str, *, attempts: int = 3, chunk_size: int = 65536, **options: object) -> object:
        http = AuthorizedSessions(requests.Session, None, [], timeout=10)
        downloader = BulkDownloader(
            http,
            retry=RetryPolicy(attempts=attempts, initial_wait=0.01, max_wait=0.02),
            chunk_size=chunk_size,
            **options,  # type: ignore[arg-type]
        )
        file = ExportFile("output", "Patient", server.url + path, "Patient.000.ndjson")
        try:
            return downloader.download_one(file, tmp_path / "out", requires_access_token=False)
        finally:
            http.close()

    return run


def leftovers(tmp_path: Path) -> list[str]:
    return (
        sorted(p.name for p in (tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else []
    )


# --- decompression bombs ----------------------------------------------------------------------

BOMB_MB = 256


def bomb() -> bytes:
    """gzip of 256 MB of zeros: ~250 KB on the wire."""
    squeeze = zlib.compressobj(9, wbits=31)
    zeros = b"\0" * (1 << 20)
    return b"".join(squeeze.compress(zeros) for _ in range(BOMB_MB)) + squeeze.flush()


@pytest.mark.parametrize("form", ["gzip-file", "content-encoding"])
def test_a_decompression_bomb_fails_clearly_with_bounded_memory(
    server: FileServer, fetch: Callable[..., object], tmp_path: Path, form: str
) -> None:
    headers = {"Content-Encoding": "gzip"} if form == "content-encoding" else {}
    server.answers["/bomb"] = [Answer(bomb(), headers)]
    tracemalloc.start()
    try:
        with pytest.raises(BulkExportError) as info:
            fetch("/bomb?sig=SECRET")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "max_compression_ratio" in message
    assert f"{server.url}/bomb" in message and "SECRET" not in message
    assert len(server.requests) == 1  # not retried: the next try would be the same bomb
    assert leftovers(tmp_path) == []  # nothing committed, no temporary file left
    assert peak < 16 << 20, peak  # ~ chunk_size, not the 256 MB the body expands to


def test_the_file_size_limit(
    server: FileServer, fetch: Callable[..., object], tmp_path: Path
) -> None:
    server.answers["/big"] = [Answer(gzip.compress(LINES), {"Content-Encoding": "gzip"})]
    with pytest.raises(BulkExportError, match=r"more than 50000 bytes.*raise max_file_bytes"):
        fetch("/big", max_file_bytes=50_000)
    assert leftovers(tmp_path) == []
    result = fetch("/big", max_file_bytes=len(LINES))
    assert (tmp_path / "out" / "Patient.000.ndjson").read_bytes() == LINES
    assert result.count == 3000


# --- completeness without a count -----------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_resumed(
    server: FileServer, fetch: Callable[..., object], tmp_path: Path
) -> None:
    cut = len(LINES) // 2 + 7  # mid-line
    server.answers["/short"] = [
        Answer(LINES, {"Accept-Ranges": "bytes"}, send=cut),
        Answer(
            LINES[cut:], {"Content-Range": f"bytes {cut}-{len(LINES) - 1}/{len(LINES)}"}, status=206
        ),
    ]
    fetch("/short")
    assert (tmp_path / "out" / "Patient.000.ndjson").read_bytes() == LINES
    assert [r for _, r in server.requests] == [None, f"bytes={cut}-"]


def test_a_body_always_short_is_never_committed(
    server: FileServer, fetch: Callable[..., object], tmp_path: Path
) -> None:
    # Cut at a line boundary: every line that arrived is valid JSON, only the length tells.
    cut = LINES.index(b"\n", len(LINES) // 2) + 1
    server.answers["/short"] = [Answer(LINES, send=cut)]
    with pytest.raises(BulkExportError, match=r"ended after \d+ of the \d+ bytes.*Content-Length"):
        fetch("/short", attempts=2)
    assert len(server.requests) == 2
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("form", ["gzip-file", "content-encoding"])
def test_a_gzip_stream_cut_before_its_end_is_not_committed(
    server: FileServer, fetch: Callable[..., object], tmp_path: Path, form: str
) -> None:
    # The HTTP body is complete (its Content-Length matches): the gzip stream is not.
    packed = gzip.compress(LINES)
    headers = {"Content-Encoding": "gzip"} if form == "content-encoding" else {}
    cut = packed[: len(packed) - 20]
    server.answers["/cut"] = [Answer(cut, headers), Answer(packed, headers)]
    fetch("/cut")
    assert (tmp_path / "out" / "Patient.000.ndjson").read_bytes() == LINES
    assert len(server.requests) == 2
    server.answers["/cut"] = [Answer(cut, headers)]
    with pytest.raises(BulkExportError, match="ended before the end of its gzip stream"):
        fetch("/cut", attempts=2)


def test_a_final_line_that_is_not_json_is_refused(
    server: FileServer, fetch: Callable[..., object], tmp_path: Path
) -> None:
    truncated = LINES[:-10]  # a complete body, with its last resource cut
    server.answers["/f"] = [Answer(truncated)]
    with pytest.raises(BulkExportError, match="looks cut short: its last line is not JSON"):
        fetch("/f", attempts=2)
    assert leftovers(tmp_path) == []
    # NDJSON checks off (another _outputFormat): taken as it is.
    fetch("/f", check_counts=False)
    assert (tmp_path / "out" / "Patient.000.ndjson").read_bytes() == truncated


def test_an_error_answer_is_read_within_bounds(
    server: FileServer, fetch: Callable[..., object]
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": "gone"}],
    }
    body = json.dumps(outcome).encode() + b" " * (10 << 20)
    server.answers["/gone"] = [Answer(body, {"Content-Type": "application/fhir+json"}, status=404)]
    tracemalloc.start()
    try:
        with pytest.raises(BulkExportError, match="HTTP 404") as info:
            fetch("/gone")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "gone" in str(info.value)
    assert peak < 4 << 20, peak
