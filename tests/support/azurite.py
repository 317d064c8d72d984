"""A real Azure Blob endpoint on 127.0.0.1: Microsoft's Azurite (npm package ``azurite``).

Installed on first use into the project-local ``.cache/azurite`` (``npm install``; CI reaches
the npm registry), or ahead of time with ``python -m tests.support.azurite install``. Started
on a free port (``--blobPort 0``: Azurite prints the port it bound) with a throwaway
``--location`` and telemetry off; stopped, and its files deleted, by ``stop()``.

Every request is read from Azurite's access log and classified into its Blob operation
(``PutBlob``, ``PutBlock``, ``PutBlockList``, ``CopyBlob``, ...), so a test can count what the
code under test did per blob, independently of the client library. ``requests()`` waits for
a marker request of its own to appear in the log first: every request answered before it is
then in the log too (one process writes the lines in order), with no sleep.

This is a test helper: a failed install or start raises with what to check, never skips.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.npm import install_pinned
from tests.support.servers import LoggedProcess

REPO = Path(__file__).resolve().parents[2]
AZURITE_VERSION = "3.35.0"
CACHE = REPO / ".cache" / "azurite"
# Azurite's well-known development account (public, in Microsoft's documentation).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
WRITES = frozenset({"PutBlob", "PutBlock", "PutBlockList", "CopyBlob", "DeleteBlob"})
START_TIMEOUT = 60.0  # seconds; Azurite starts in about 2 s on an idle machine
_LISTENING = re.compile(r"successfully listens on (http://127\.0\.0\.1:(\d+))")
# Azurite's access log (morgan "combined"): ... "METHOD /path?query HTTP/1.1" STATUS ...
_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')


class AzuriteUnavailable(RuntimeError):
    """Azurite could not be installed or started (the message says what to check)."""


def binary() -> Path:
    return CACHE / "node_modules" / ".bin" / "azurite-blob"


def install() -> Path:
    """Install Azurite into ``.cache/azurite`` unless that version is there; its binary."""
    return install_pinned(
        "azurite", AZURITE_VERSION, binary(), AzuriteUnavailable, "the Azure tests"
    )


@dataclass(frozen=True)
class BlobRequest:
    operation: str
    container: str
    blob: str
    status: int


def blob_operation(method: str, target: str, status: int) -> BlobRequest:
    """Name the Blob service operation of a path-style request (``/account/container/blob``)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    segments = unquote(parts.path).lstrip("/").split("/", 2)[1:]  # drop the account
    container = segments[0] if segments else ""
    blob = segments[1] if len(segments) > 1 else ""
    comp = (query.get("comp") or [""])[0]
    if not blob:
        name = {"list": "ListBlobs"}.get(comp) or {
            "PUT": "CreateContainer",
            "DELETE": "DeleteContainer",
        }.get(method, f"{method} container")
        return BlobRequest(name, container, blob, status)
    names = {
        ("PUT", "block"): "PutBlock",
        ("PUT", "blocklist"): "PutBlockList",
        ("GET", "blocklist"): "GetBlockList",
        ("PUT", "copy"): "CopyBlob",
        ("PUT", ""): "PutBlob",
        ("GET", ""): "GetBlob",
        ("HEAD", ""): "GetBlobProperties",
        ("DELETE", ""): "DeleteBlob",
    }
    return BlobRequest(names.get((method, comp), f"{method} {comp}"), container, blob, status)


class AzuriteServer:
    """Azurite's Blob service on ``127.0.0.1:<free port>`` in a subprocess."""

    def __init__(self) -> None:
        self._process: LoggedProcess | None = None
        self._dir: str | None = None
        self.endpoint = ""

    def start(self) -> AzuriteServer:
        exe = install()
        self._dir = tempfile.mkdtemp(prefix="azurite-")
        self._process = process = LoggedProcess(
            [
                str(exe),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--location",
                self._dir,
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ],
            on_line=self._on_line,
        )
        if not process.wait_for(lambda: bool(self.endpoint), START_TIMEOUT):
            why = "exited" if process.exited else "did not start in time"
            output = process.tail()
            self.stop()
            raise AzuriteUnavailable(f"Azurite ({exe}) {why}:\n{output}")
        return self

    def _on_line(self, line: str) -> None:
        if not self.endpoint and (found := _LISTENING.search(line)):
            self.endpoint = found.group(1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> AzuriteServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def blob_endpoint(self) -> str:
        return f"{self.endpoint}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def service(self) -> Any:
        """An azure-storage-blob client for set-up and inspection (not the code under test)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"  # container names: 3-63 characters
        self.service().create_container(name)
        return name

    def blobs(self, container: str, prefix: str = "") -> dict[str, bytes]:
        """Every committed (visible) blob under ``prefix``, with its content."""
        client = self.service().get_container_client(container)
        return {
            b.name: client.download_blob(b.name).readall()
            for b in client.list_blobs(name_starts_with=prefix or None)
        }

    def uncommitted(self, container: str) -> dict[str, int]:
        """Blob name -> uncommitted blocks, for every blob that has some (invisible data)."""
        client = self.service().get_container_client(container)
        out = {}
        for b in client.list_blobs(include=["uncommittedblobs"]):
            _, pending = client.get_blob_client(b.name).get_block_list("uncommitted")
            if pending:
                out[b.name] = len(pending)
        return out

    def writes(self, container: str) -> list[BlobRequest]:
        """The write operations (``WRITES``) made on ``container`` so far, in order.

        Azurite's access log names no client, so reads are left out: the inspection
        helpers here only read, and what matters is what was stored, and how."""
        marker = f"log-marker-{uuid.uuid4().hex}"
        list(self.service().get_container_client(container).list_blobs(name_starts_with=marker))
        assert self._process is not None, "Azurite is not running"
        log = self._process
        if not log.wait_for(lambda: any(marker in x for x in log.lines), timeout=30):
            raise AssertionError("Azurite's access log did not show the marker request")
        lines = list(log.lines)
        out = []
        for line in lines:
            if found := _ACCESS.search(line):
                request = blob_operation(found.group(1), found.group(2), int(found.group(3)))
                if request.container == container and request.operation in WRITES:
                    out.append(request)
        return out

    def writes_by_blob(self, container: str) -> dict[str, Counter[str]]:
        """The write operations made on each blob of ``container``."""
        out: dict[str, Counter[str]] = {}
        for r in self.writes(container):
            if r.blob:
                out.setdefault(r.blob, Counter())[r.operation] += 1
        return out


def main(argv: list[str]) -> int:
    if argv[1:] == ["install"]:
        print(install())
        return 0
    print("usage: python -m tests.support.azurite install", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
