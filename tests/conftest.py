"""Shared test set-up: an isolated AIRFLOW_HOME, the sandbox server, and client keys.

AIRFLOW_HOME must be set before anything imports airflow, hence at module import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="backendauth-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags_examples")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# gcsfs (2026.10+) would ask a gRPC service the GCS emulator does not have about each bucket's
# layout, 60 s per lookup; read when gcsfs is imported (tests/support/gcs.py).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the session's AIRFLOW_HOME (for dag.test())."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Any]:
    """One sandbox server for the whole session (tests that need a private one start their own)."""
    from backendauth_sandbox import Sandbox

    with Sandbox(patients=20, seed=7) as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_session: Any) -> Iterator[Any]:
    """The session sandbox; faults and every setting a test changed are restored after it."""
    saved = sandbox_session.settings.as_dict()
    yield sandbox_session
    sandbox_session.faults.clear()
    sandbox_session.settings.update(**saved)


@pytest.fixture(autouse=True)
def _fresh_token_caches() -> Iterator[None]:
    from airflow_provider_backendauth.core.auth.discovery import clear_discovery_cache
    from airflow_provider_backendauth.core.auth.shared_tokens import clear_token_caches

    yield
    clear_token_caches()
    clear_discovery_cache()


def connection_json(*, host: str | None, login: str, password: str | None, **extra: Any) -> str:
    """The JSON form of a backendauth connection for ``AIRFLOW_CONN_<ID>``."""
    return json.dumps(
        {
            "conn_type": "backendauth",
            "host": host,
            "login": login,
            "password": password,
            "extra": extra,
        }
    )


class _RecordingServer:
    """A plain HTTP server on another loopback port that records Authorization headers."""

    def __init__(self) -> None:
        import http.server
        import threading
        from urllib.parse import parse_qs, urlsplit

        self.authorization_headers: list[str | None] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.authorization_headers.append(self.headers.get("Authorization"))
                parts = urlsplit(self.path)
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query)["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recording_server() -> Iterator[_RecordingServer]:
    server = _RecordingServer()
    yield server
    server.close()
