"""The connection form and its Test button, driven in a real browser against a real API server.

An Airflow API server (the installed 3.x, own AIRFLOW_HOME, connection testing enabled, the
simple auth manager with everyone admin) on an ephemeral port; the sandbox as the vendor;
Debian's chromium driven by Playwright. A connection is created through the form as an admin
would, Test must succeed; then the key is replaced by one the sandbox never saw, and Test must
explain the rejection. Screenshots of each step land in ``tests/ui/artifacts/`` (or
``$UI_ARTIFACTS``); their paths are printed.

Every wait is on a UI condition (an element, a toast, a row), with generous timeouts: the
machine may be busy, and nothing here races the wall clock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import generate_client_key

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("UI_ARTIFACTS", Path(__file__).parent / "artifacts"))
UI_TIMEOUT_MS = 60_000  # one UI condition; the API server may share 2 cores with a test suite
SERVER_START_TIMEOUT = 240.0


def _require_browser() -> None:
    """Skip on a developer machine without the browser; in CI a missing browser is a failure
    (.ci/run installs Debian's chromium and the dev extra brings playwright)."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """``airflow api-server`` in its own process group, AIRFLOW_HOME and SQLite database."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__EXPOSE_CONFIG": "True",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = home / "api-server.log"

    def start(self) -> ApiServer:
        (self.home / "dags").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env,
            cwd=self.home,
            check=True,
            capture_output=True,
            timeout=SERVER_START_TIMEOUT,
        )
        # The API server cannot take an already-bound socket; a port another process grabs
        # between our probe and its bind makes it exit, so try again with another port.
        for _attempt in range(3):
            port = _free_port()
            # Only the core API and UI: the execution API (workers) is not needed here.
            command = [sys.executable, "-m", "airflow", "api-server", "--apps", "core"]
            command += ["-H", "127.0.0.1"]
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [*command, "-p", str(port), "-w", "1"],
                    env=self.env,
                    # Not the checkout: its *.egg-info would register our entry points twice.
                    cwd=self.home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"the API server did not start; see {self.log}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/version", timeout=5) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.5)  # polling a readiness condition, not waiting for a race
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def connection(self, conn_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/api/v2/connections/{conn_id}", timeout=30) as r:
            return dict(json.loads(r.read()))

    def delete_connection(self, conn_id: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/connections/{conn_id}", method="DELETE"
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    _require_browser()
    server = ApiServer(tmp_path_factory.mktemp("airflow-ui-home"))
    if os.environ.get("UI_TEST_SERVER_URL"):
        # Developing the test: reuse a running server started with the same settings.
        server.url = os.environ["UI_TEST_SERVER_URL"].rstrip("/")
        yield server
        return
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser_page(api_server: ApiServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


class Screenshots:
    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.directory = ARTIFACTS / name
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.count = 0

    def take(self, what: str) -> None:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")


def _open_add_form(page: Any, base: str) -> Any:
    page.goto(f"{base}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select Connection Type").wait_for()
    return dialog


def _choose(dialog: Any, page: Any, combobox: Any, option_text: str) -> None:
    """Pick an option of a react-select dropdown by (part of) its visible label."""
    combobox.click()
    page.get_by_role("option", name=option_text).first.click()


def _expand(dialog: Any, section: str) -> None:
    """Open a form section (the form's accordion keeps one open at a time)."""
    trigger = dialog.get_by_role("button", name=section, exact=True)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()


def _test_button_result(page: Any, conn_id: str) -> tuple[str, str]:
    """Press the row's Test button and return (toast title, toast message)."""
    row = page.get_by_role("row").filter(has_text=conn_id)
    row.get_by_role("button", name="Test Connection").click()
    toast = (
        page.locator("[data-scope=toast][data-part=root]").filter(has_text="Test Connection").last
    )
    toast.wait_for()
    title = toast.locator("[data-part=title]").inner_text()
    message = toast.locator("[data-part=description]").inner_text()
    return title, message


def test_form_connection_tests_green_then_explains_a_wrong_key(api_server, browser_page):
    page, base = browser_page, api_server.url
    shots = Screenshots(page, "connection_form")
    key = generate_client_key("RSA")
    with Sandbox(patients=3, seed=1) as sb:
        sb.register_client("form-client", key.public_jwks, vendor="smart")
        api_server.delete_connection("fhir_sandbox")

        # -- create the connection through the form, as an admin would --------------------
        dialog = _open_add_form(page, base)
        dialog.get_by_role("textbox").first.fill("fhir_sandbox")
        _choose(dialog, page, dialog.get_by_role("combobox").first, "Backend Services Auth")
        dialog.locator("input[name=host]").wait_for()
        shots.take("type-chosen")
        assert dialog.locator("input[name=host]").get_attribute("placeholder")
        dialog.locator("input[name=host]").fill(sb.fhir_base)
        dialog.locator("input[name=login]").fill("form-client")
        # A password input is one line: the PEM arrives flattened, as admins paste it.
        dialog.locator("input[name=password]").fill(key.private_pem)
        # The profile dropdown shows readable names with the profile's values.
        _expand(dialog, "Extra Fields")
        profile = dialog.locator("#element_profile")
        _choose(dialog, page, profile.get_by_role("combobox"), "SMART Backend Services")
        assert "token URL discovered" in profile.inner_text()
        # Two extras the secret masker used to hide (token_url showed ***, token_reuse empty).
        _expand(dialog, "Token request (empty fields use the profile's values)")
        dialog.locator("#element_auth_url").fill(sb.token_url)
        reuse = dialog.locator("#element_reuse_policy")
        _choose(dialog, page, reuse.get_by_role("combobox"), "per_request")
        shots.take("form-filled")
        dialog.get_by_role("button", name="Save").click()
        dialog.wait_for(state="hidden")
        page.get_by_role("row").filter(has_text="fhir_sandbox").wait_for()
        stored = api_server.connection("fhir_sandbox")
        assert stored["port"] is None  # what made Test fail before (the UI sends port 0)
        extra = json.loads(stored["extra"])
        assert (extra["profile"], extra["auth_url"], extra["reuse_policy"]) == (
            "smart",
            sb.token_url,
            "per_request",
        )

        # -- Test: a real token exchange against the sandbox -------------------------------
        title, message = _test_button_result(page, "fhir_sandbox")
        shots.take("test-success")
        assert title == "Test Connection Successful", message
        assert f"Token obtained from {sb.token_url}" in message
        assert "Used: profile SMART Backend Services v2" in message
        assert f"GET {sb.fhir_base}/metadata answered 200" in message

        # -- break the key: a key the sandbox never registered ------------------------------
        page.get_by_role("row").filter(has_text="fhir_sandbox").get_by_role(
            "button", name="Edit Connection"
        ).click()
        dialog = page.get_by_role("dialog")
        password = dialog.locator("input[name=password]")
        password.wait_for()
        # The edit form shows the stored values; only the secrets are masked.
        assert dialog.locator("input[name=login]").input_value() == "form-client"
        _expand(dialog, "Token request (empty fields use the profile's values)")
        assert dialog.locator("#element_auth_url").input_value() == sb.token_url
        assert "per_request" in dialog.locator("#element_reuse_policy").inner_text()
        _expand(dialog, "Standard Fields")  # one accordion section is open at a time
        password.fill(generate_client_key("RSA").private_pem)
        shots.take("key-replaced")
        dialog.get_by_role("button", name="Save").click()
        dialog.wait_for(state="hidden")
        page.get_by_role("row").filter(has_text="fhir_sandbox").wait_for()
        page.locator("[data-scope=toast][data-part=root]").filter(
            has_text="Test Connection"
        ).first.wait_for(state="detached", timeout=UI_TIMEOUT_MS)

        title, message = _test_button_result(page, "fhir_sandbox")
        shots.take("test-wrong-key")
        assert title == "Test Connection Failed", message
        assert f"The token URL {sb.token_url} rejected the client assertion" in message
        assert "the private key is the pair of the public key/JWKS registered" in message
