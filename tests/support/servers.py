"""Loopback endpoints that fail the way real token URLs do: refused, silent, untrusted TLS.

Each one is deterministic, no timing race: a port that is bound but not listening refuses
every connection; a listening socket that never accepts lets the TCP handshake complete (the
kernel backlog) and then never answers; the TLS server presents a self-signed certificate.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening: nobody else can
    take it while we hold it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def silent_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` that accepts the TCP connection and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def stop_process(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM ``process``, SIGKILL it if it is still there after ``timeout``, and reap it."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LoggedProcess:
    """A server subprocess whose output (stdout and stderr) is read line by line as it comes,
    always drained (a full pipe would stall it), so a test waits for a line, never sleeps.

    Args:
        argv, env: what to run.
        on_line: called with each line (without its newline) under the lock, before waiters
            are woken: parse readiness or events there.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.lines: list[str] = []
        self._on_line = on_line
        self._cond = threading.Condition()
        self._process: subprocess.Popen[str] | None = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, args=(self._process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            with self._cond:
                self.lines.append(line)
                if self._on_line is not None:
                    self._on_line(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (under the lock, ``predicate`` may read ``lines``) until ``predicate()``
        holds, the process has exited, or ``timeout`` seconds passed; ``predicate()``."""
        with self._cond:
            self._cond.wait_for(lambda: predicate() or self.exited, timeout=timeout)
            return predicate()

    def tail(self, count: int = 40) -> str:
        with self._cond:
            return "\n".join(self.lines[-count:])

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


def trusted_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that may serve as its own CA bundle (a CA
    basic constraint, so OpenSSL accepts it as a trust anchor); returns (cert, key) files."""

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def self_signed_https() -> Iterator[str]:
    """``https://127.0.0.1:PORT`` serving a certificate no CA bundle trusts."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    class QuietServer(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # the client aborting the handshake is the point of this server

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = trusted_certificate(Path(tmp))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = QuietServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"https://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@contextmanager
def served_directory(root: Path) -> Iterator[str]:
    """``root`` served over plain HTTP on loopback (a JWKS URL, a static site); its base URL."""
    import functools

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
