"""Without the [sandbox] extra (jwcrypto), the sandbox says how to install it instead of
dying with a raw ModuleNotFoundError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _without_jwcrypto(tmp_path: Path) -> dict[str, str]:
    # A jwcrypto that is "not installed": importing it fails as a missing module does.
    fake = tmp_path / "jwcrypto"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'jwcrypto'\", name='jwcrypto')\n"
    )
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_python_dash_m_prints_one_line_with_the_install_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "backendauth_sandbox", "--port", "0"],
        capture_output=True,
        text=True,
        env=_without_jwcrypto(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'airflow-provider-backendauth[sandbox]'" in result.stderr


def test_importing_the_package_raises_the_hint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from backendauth_sandbox.testing import generate_client_key"],
        capture_output=True,
        text=True,
        env=_without_jwcrypto(tmp_path),
        timeout=60,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: The sandbox needs jwcrypto")
