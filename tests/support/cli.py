"""Running the ``backendauth`` command line in-process, as the CLI tests do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``backendauth ARGV``."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def keygen(capsys: pytest.CaptureFixture[str], out: Path, *more: str) -> dict[str, Any]:
    """``backendauth keygen --profile smart`` (2048-bit RSA unless ``more`` says otherwise)
    into ``out``; its JSON summary."""
    status, stdout, stderr = run(
        capsys, "keygen", "--profile", "smart", "--out", str(out), "--bits", "2048", "--json", *more
    )
    assert status == 0, stderr
    summary: dict[str, Any] = json.loads(stdout)
    return summary
