"""The connection ``backendauth keygen`` prints is complete for every profile: filled in where
it shows a ``<placeholder>``, it builds a client (no network), and it carries what the
vendor's notes ask for (``jku`` for Epic, ``auth_url`` and ``scope`` for Entra ID). Its last
lines point at things a user can follow: the vendor's own documentation, not a path in the
provider's source tree."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from airflow_provider_backendauth.cli.main import main
from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.profiles import PROFILES
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import ConfigurationError

_PLACEHOLDER = re.compile(r"<[^<>]+>")
# What a user types where keygen printed a placeholder (a loopback port nothing listens on:
# building a client must not need the network).
_FILLED = {
    "host": "https://127.0.0.1:9/fhir",
    "login": "my-client",
    "auth_url": "https://127.0.0.1:9/token",
    "jku": "https://127.0.0.1:9/jwks.json",
    "scope": "https://127.0.0.1:9/fhir/.default",
    "key_id": "registered-kid",
}


def _keygen(capsys: pytest.CaptureFixture[str], out: Any, profile: str) -> dict[str, Any]:
    status = main(["keygen", "--profile", profile, "--out", str(out), "--bits", "2048", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    summary: dict[str, Any] = json.loads(captured.out)
    return summary


def _filled(conn: dict[str, Any]) -> dict[str, Any]:
    def fill(items: dict[str, Any]) -> dict[str, Any]:
        return {k: _FILLED[k] if _PLACEHOLDER.search(str(v)) else v for k, v in items.items()}

    return {**fill({k: v for k, v in conn.items() if k != "extra"}), "extra": fill(conn["extra"])}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_printed_connection_builds_a_client_once_its_placeholders_are_filled(
    tmp_path, capsys, profile
):
    conn = _filled(_keygen(capsys, tmp_path, profile)["connection"])
    settings = ClientSettings.from_connection_fields(
        host=conn.get("host"), login=conn["login"], password=None, extra=conn["extra"]
    )
    client = BackendAuthClient(settings)  # raises for anything missing that it can check
    assert client.algorithm == json.loads((tmp_path / "jwks.json").read_text())["keys"][0]["alg"]


def test_epic_connection_carries_the_hosted_jwks_url(tmp_path, capsys):
    extra = _keygen(capsys, tmp_path, "epic")["connection"]["extra"]
    assert _PLACEHOLDER.fullmatch(extra["jku"])


def test_entra_connection_carries_the_tenant_token_url_and_the_default_scope(tmp_path, capsys):
    extra = _keygen(capsys, tmp_path, "entra_id")["connection"]["extra"]
    assert extra["auth_url"].startswith("https://login.microsoftonline.com/<")
    assert extra["scope"].endswith("/.default")


def test_entra_without_a_token_url_is_refused_before_any_request():
    # Entra ID has no SMART discovery document: the base URL alone cannot give a token URL.
    from backendauth_sandbox.testing import generate_client_key

    key = generate_client_key("RSA", certificate=True)
    settings = ClientSettings.from_connection_fields(
        host="https://127.0.0.1:9/fhir",
        login="app",
        password=key.private_pem + key.certificate_pem,
        extra={"profile": "entra_id"},
    )
    with pytest.raises(ConfigurationError, match="auth_url"):
        BackendAuthClient(settings)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_next_steps_end_with_references_a_user_can_follow(tmp_path, capsys, profile):
    status = main(["keygen", "--profile", profile, "--out", str(tmp_path), "--bits", "2048"])
    out = capsys.readouterr().out
    assert status == 0
    assert " docs/" not in out and "seed" not in out.lower()
    if PROFILES[profile].documentation:
        assert PROFILES[profile].documentation in out
