"""The CLI as a new user meets it: bad usage exits 2 as the README promises, a mistyped JWT
or connection id is explained in plain words (not as an Airflow class name), Airflow's own
masking warning does not come first, and a key file that is a directory is reported under
the extra's current name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_backendauth.cli.main import main
from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import KeyLoadError

BACKENDAUTH = Path(sys.executable).with_name("backendauth")


@pytest.fixture(autouse=True)
def _no_adhoc_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BACKENDAUTH_CLI_ADHOC", raising=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["inspect"],
        ["check", "some_conn", "--conn-json", "{}"],
        ["check", "--host", "https://127.0.0.1:9/fhir", "--extra", "novalue"],
    ],
    ids=["check-nothing", "inspect-nothing", "id-and-json", "extra-without-value"],
)
def test_bad_usage_exits_2_with_one_line(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"backendauth {argv[0]}: error: ")


def test_inspect_of_something_that_is_neither_a_jwt_nor_a_connection(capsys):
    status = main(["inspect", "not.a.jwt"])
    err = capsys.readouterr().err
    assert status == 1
    assert "Exception" not in err
    assert "neither" in err and "JWT" in err and "connection" in err


def test_an_unknown_connection_is_named_in_plain_words(capsys):
    status = main(["check", "no_such_connection_here"])
    err = capsys.readouterr().err
    assert status == 1
    assert "Exception" not in err and "no_such_connection_here" in err


def test_unknown_profile_is_the_first_and_only_thing_said(tmp_path):
    assert main(["keygen", "--profile", "smart", "--out", str(tmp_path), "--bits", "2048"]) == 0
    result = subprocess.run(
        [
            str(BACKENDAUTH),
            "check",
            "--host",
            "https://127.0.0.1:9/fhir",
            "--client-id",
            "x",
            "--key-file",
            str(tmp_path / "private_key.pem"),
            "--profile",
            "epik",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "masking" not in output.lower()
    assert output.startswith("FAILED: Unknown provider profile 'epik'")


def test_a_key_file_that_is_a_directory_is_reported_under_key_file(tmp_path):
    settings = ClientSettings.from_connection_fields(
        host=None,
        login="c",
        password=None,
        extra={"auth_url": "https://127.0.0.1:9/token", "key_file": str(tmp_path)},
    )
    with pytest.raises(KeyLoadError) as failure:
        BackendAuthClient(settings)
    message = str(failure.value)
    assert "not a regular file" in message
    assert "'key_file'" in message and "private_key_file" not in message
