"""The CLI as a real subprocess: start, register clients, serve, stop on a signal."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from backendauth_sandbox.testing import (
    ClientKey,
    assertion_claims,
    sign_assertion,
    token_request_form,
)

MODULE = "backendauth_sandbox"


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", MODULE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(path: Path, proc: subprocess.Popen[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            ready: dict[str, Any] = json.loads(path.read_text())
            return ready
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "exited")
        time.sleep(0.05)
    raise AssertionError("sandbox did not become ready")


@pytest.fixture
def key_files(tmp_path: Path, rsa_key: ClientKey, ec_keys: dict[str, ClientKey]) -> Iterator[Path]:
    (tmp_path / "smart.jwks.json").write_text(json.dumps(rsa_key.public_jwks))
    (tmp_path / "medplum.pem").write_text(ec_keys["EC-P384"].public_pem)
    yield tmp_path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_stops_cleanly(
    key_files: Path, rsa_key: ClientKey, ec_keys: dict[str, ClientKey], sig: signal.Signals
) -> None:
    ready_file = key_files / "ready.json"
    proc = start(
        "--patients",
        "5",
        "--token-lifetime",
        "120",
        "--client",
        f"app-1=smart:{key_files / 'smart.jwks.json'}",
        "--client",
        f"app-2=medplum:{key_files / 'medplum.pem'}",
        "--client",
        f"app-3={key_files / 'smart.jwks.json'}",
        "--set",
        "bulk_gzip=false",
        "--ready-file",
        str(ready_file),
    )
    try:
        ready = wait_ready(ready_file, proc)
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == ready
        assert ready["token_url"] == ready["url"] + "/auth/token"
        assert ready["fhir_base"] == ready["url"] + "/fhir"

        assertion = sign_assertion(rsa_key, assertion_claims("app-1", ready["token_url"]))
        token = requests.post(
            ready["token_url"], data=token_request_form(assertion, "system/*.rs"), timeout=10
        ).json()
        assert token["expires_in"] == 120
        patients = requests.get(
            ready["fhir_base"] + "/Patient",
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=10,
        ).json()
        assert patients["total"] == 5

        ec = ec_keys["EC-P384"]
        assertion = sign_assertion(ec, assertion_claims("app-2", ready["token_url"]), kid=False)
        assert requests.post(ready["token_url"], data=token_request_form(assertion), timeout=10).ok

        info = requests.get(ready["url"] + "/_sandbox/info", timeout=10).json()
        assert info["settings"]["bulk_gzip"] is False
        vendors = {c["client_id"]: c["vendor"] for c in info["clients"]}
        assert vendors == {"app-1": "smart", "app-2": "medplum", "app-3": "smart"}
    finally:
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    port = int(ready["url"].rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not ready_file.exists()


def test_cli_rejects_bad_client_spec(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--client", f"x=smart:{tmp_path / 'missing.json'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no such key file" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--set", "no_such_setting=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no_such_setting" in result.stderr
