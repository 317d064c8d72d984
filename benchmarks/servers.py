"""The servers the benchmark downloads from, and the files they serve.

- ``Nginx``: Debian's nginx on 127.0.0.1 (a free port), with its own prefix and config in a
  temporary directory; static files in three places:
  ``/plain/`` NDJSON as is, ``/te/`` the same files pre-compressed and served with
  ``Content-Encoding: gzip`` (``gzip_static``, so nginx spends no CPU compressing and the
  client's decoding is what is measured) and ``/gzfile/`` ``.ndjson.gz`` files served as
  ``application/gzip`` without a content encoding (a gzip *file*, which the client gunzips).
- ``SandboxProcess``: the project's sandbox in its own process (the Bulk Data server a test
  suite uses), for the plain-file comparison and the search benchmark.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

MB = 1_000_000
BLOCK_BYTES = 4 * MB  # distinct lines per file; files repeat this block (deflate sees 32 KB)

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    gzip off;
    types {{ application/fhir+ndjson ndjson; application/gzip gz; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /plain/ {{ }}
        location /te/ {{ gzip_static on; }}
        location /gzfile/ {{ }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_nginx() -> str:
    """The nginx binary; installs Debian's package (under the shared apt lock) if missing."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise SystemExit("nginx is needed (install the Debian package 'nginx')")
    print("installing nginx (apt-get, under /tmp/apt.lock)...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["flock", "/tmp/apt.lock", "apt-get", "install", "-y", "-q", "nginx"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return shutil.which("nginx") or "/usr/sbin/nginx"


# --- the files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSet:
    """``files`` URLs per mode, all with the same decoded content.

    Attributes:
        paths: mode -> URL path of each file (``/plain/F000.ndjson``, ...).
        file_bytes: decoded bytes of one file; ``lines``: its NDJSON lines.
        gz_bytes: bytes of one file's gzip.
    """

    paths: dict[str, list[str]]
    file_bytes: int
    lines: int
    gz_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.file_bytes * len(self.paths["plain"])


_CODES = [
    ("8867-4", "Heart rate", "/min", "beats/minute"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    ("29463-7", "Body weight", "kg", "kg"),
    ("8310-5", "Body temperature", "Cel", "C"),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "mg/dL"),
]


def fhir_like_block(target: int = BLOCK_BYTES, seed: int = 7) -> bytes:
    """NDJSON Observations with varied ids, dates, subjects and values: gzip compresses them
    about 15x, like real FHIR exports."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    size = 0
    while size < target:
        code, display, ucum, unit = rng.choice(_CODES)
        stamp = (
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
        )
        resource = {
            "resourceType": "Observation",
            "id": f"obs-{len(lines):08d}-{rng.getrandbits(32):08x}",
            "meta": {"versionId": "1", "lastUpdated": stamp},
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                "text": display,
            },
            "subject": {"reference": f"Patient/pat-{rng.randint(1, 50000):06d}"},
            "effectiveDateTime": stamp[:10],
            "valueQuantity": {
                "value": round(rng.uniform(30, 200), 1),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": ucum,
            },
        }
        line = (json.dumps(resource, separators=(",", ":")) + "\n").encode()
        lines.append(line)
        size += len(line)
    return b"".join(lines)


def make_files(root: Path, name: str, megabytes: float, files: int, block: bytes) -> FileSet:
    """``files`` files of about ``megabytes / files`` MB each under ``root/{plain,te,gzfile}/``.

    One file's content is written (and gzipped) once; the others are hard links to it, so a
    2 GB set costs 125 MB of disk and a second of set-up. The clients cannot tell: each file
    is a different URL, and the server reads all of them from the page cache either way.
    """
    target = megabytes * MB / files
    if target <= len(block):
        content_unit, repeat = block[: block.rfind(b"\n", 0, max(1, int(target))) + 1], 1
        if not content_unit:
            content_unit = block[: block.find(b"\n") + 1]
    else:
        content_unit, repeat = block, max(1, round(target / len(block)))
    source = root / "source" / name
    source.mkdir(parents=True, exist_ok=True)
    plain, gz = source / "data.ndjson", source / "data.ndjson.gz"
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with plain.open("wb") as out, gz.open("wb") as gz_out:
        for _ in range(repeat):
            out.write(content_unit)
            gz_out.write(compressor.compress(content_unit))
        gz_out.write(compressor.flush())
    paths: dict[str, list[str]] = {"plain": [], "te": [], "gzfile": []}
    for index in range(files):
        for mode, suffix, origin in (
            ("plain", ".ndjson", plain),
            ("te", ".ndjson.gz", gz),
            ("gzfile", ".ndjson.gz", gz),
        ):
            folder = root / mode / name
            folder.mkdir(parents=True, exist_ok=True)
            os.link(origin, folder / f"F{index:03d}{suffix}")
            # /te/ is asked for without .gz: gzip_static finds the .gz beside the name.
            url_name = f"F{index:03d}.ndjson" if mode == "te" else f"F{index:03d}{suffix}"
            paths[mode].append(f"/{mode}/{name}/{url_name}")
    return FileSet(
        paths=paths,
        file_bytes=len(content_unit) * repeat,
        lines=content_unit.count(b"\n") * repeat,
        gz_bytes=gz.stat().st_size,
    )


# --- nginx -------------------------------------------------------------------------------


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    url: str
    prefix: Path

    @property
    def origin(self) -> str:
        return self.url


@contextmanager
def nginx(root: Path, prefix: Path, workers: int = 2) -> Iterator[Nginx]:
    """nginx serving ``root`` on 127.0.0.1 until the block ends (then stopped and reaped)."""
    binary = ensure_nginx()
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        port = free_port()  # bound and released: another process may take it; retry then
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, prefix=prefix, port=port, root=root))
        command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(process, url):
            break
        process.kill()
        process.wait()
        if attempt == 4:
            log = (prefix / "error.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"nginx did not start:\n{log}")
    try:
        yield Nginx(process, url, prefix)
    finally:
        process.terminate()  # SIGTERM: fast shutdown of the master and its workers
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            requests.get(f"{url}/", timeout=1)
            return True
        except requests.ConnectionError:
            time.sleep(0.05)
    return False


# --- the sandbox -------------------------------------------------------------------------


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str
    fhir_base: str

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.url}/_sandbox/{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def token(self, client_id: str = "bench", scope: str = "system/*.rs") -> str:
        body = {"client_id": client_id, "scope": scope, "lifetime": 7200}
        answer = self.control("POST", "tokens", body)
        return str(answer.get("access_token") or answer.get("token") or answer["value"])


SANDBOX_MODULE = "backendauth_sandbox"


@contextmanager
def sandbox(patients: int, *settings: str) -> Iterator[SandboxProcess]:
    """The sandbox in its own process (so server and client share no interpreter)."""
    command = [
        sys.executable, "-m", SANDBOX_MODULE, "--patients", str(patients),
        "--bulk-job-seconds", "0", "--set", "bulk_gzip=false",
    ]  # fmt: skip
    for setting in settings:
        command += ["--set", setting]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        yield SandboxProcess(process, ready["url"], ready["fhir_base"])
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
