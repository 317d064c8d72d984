"""Keys and algorithms agree: a key that names its algorithm (a JWK ``alg``, or the note
``backendauth keygen`` writes above its PEM) is signed with that algorithm, and a key whose
algorithm the profile does not allow is refused before any request.

The end-to-end case is the one found in use: a ``keygen --alg PS256`` key in a connection
without the ``algorithm`` extra signed RS384 while the registered JWKS pinned PS256, and a
strict server (here the sandbox, which honours a JWK's ``alg`` like RFC 7517 section 4.4 asks)
found no applicable key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_backendauth.cli.main import main
from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.keys import load_signing_key
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import ConfigurationError, InvalidClientError
from backendauth_sandbox.testing import generate_client_key


def _keygen(out: Path, profile: str, alg: str) -> dict:
    assert (
        main(
            [
                "keygen",
                "--profile",
                profile,
                "--alg",
                alg,
                "--out",
                str(out),
                "--bits",
                "2048",
                "--json",
            ]
        )
        == 0
    )
    return {
        "jwks": json.loads((out / "jwks.json").read_text()),
        "key_file": str(out / "private_key.pem"),
    }


def _client(token_url: str, host: str | None, login: str, **extra: object) -> BackendAuthClient:
    settings = ClientSettings.from_connection_fields(
        host=host, login=login, password=None, extra={"auth_url": token_url, **extra}
    )
    return BackendAuthClient(settings)


def test_keygen_pem_names_its_algorithm_and_kid(tmp_path, capsys):
    made = _keygen(tmp_path, "custom", "PS256")
    capsys.readouterr()
    key = load_signing_key(Path(made["key_file"]).read_text())
    assert key.named_alg == "PS256"
    kid = made["jwks"]["keys"][0]["kid"]
    assert f"kid: {kid}" in Path(made["key_file"]).read_text()  # for people, not sent
    flattened = Path(made["key_file"]).read_text().replace("\n", " ")
    assert load_signing_key(flattened).named_alg == "PS256"


def test_a_keygen_ps256_key_signs_ps256_without_the_algorithm_extra(sandbox, tmp_path, capsys):
    made = _keygen(tmp_path, "custom", "PS256")
    capsys.readouterr()
    # The sandbox's 'any' rules allow every algorithm; the JWKS pins PS256.
    sandbox.register_client("pinned-ps256", made["jwks"], vendor="any")
    client = _client(
        sandbox.token_url,
        sandbox.fhir_base,
        "pinned-ps256",
        profile="custom",
        key_file=made["key_file"],
    )
    assert client.algorithm == "PS256"
    assert client.get_token().value


def test_the_sandbox_refuses_an_algorithm_the_registered_jwk_does_not_name(sandbox):
    key = generate_client_key("RSA")
    jwks = {"keys": [{**key.public_jwks["keys"][0], "alg": "PS256"}]}
    sandbox.register_client("pinned-ps256-b", jwks, vendor="any")
    settings = ClientSettings.from_connection_fields(
        host=sandbox.fhir_base,
        login="pinned-ps256-b",
        password=key.private_pem,  # a PEM without a note: the algorithm is the profile's
        extra={"auth_url": sandbox.token_url, "profile": "custom"},
    )
    client = BackendAuthClient(settings)
    assert client.algorithm == "RS384"
    with pytest.raises(InvalidClientError, match="PS256"):
        client.get_token()


def test_a_key_naming_an_algorithm_the_profile_refuses_fails_before_any_request(tmp_path, capsys):
    made = _keygen(tmp_path, "custom", "PS256")
    capsys.readouterr()
    # Port 9 (discard) is never contacted: the check is in the constructor.
    with pytest.raises(ConfigurationError) as failure:
        _client("https://127.0.0.1:9/token", None, "c", profile="smart", key_file=made["key_file"])
    message = str(failure.value)
    assert "PS256" in message and "'smart'" in message and "RS384" in message


def test_a_jwk_alg_that_does_not_fit_the_key_is_an_error_not_a_silent_fallback():
    key = generate_client_key("EC-P256")
    jwk = {**key.private_jwk, "alg": "RS256"}
    settings = ClientSettings.from_connection_fields(
        host=None,
        login="c",
        password=json.dumps(jwk),
        extra={"auth_url": "https://127.0.0.1:9/token", "profile": "custom"},
    )
    with pytest.raises(ConfigurationError, match="RS256"):
        BackendAuthClient(settings)


def test_the_algorithm_extra_and_the_key_must_agree(tmp_path, capsys):
    made = _keygen(tmp_path, "custom", "PS256")
    capsys.readouterr()
    with pytest.raises(ConfigurationError, match="'algorithm'.*RS384.*PS256"):
        _client(
            "https://127.0.0.1:9/token",
            None,
            "c",
            profile="custom",
            key_file=made["key_file"],
            algorithm="RS384",
        )
    same = _client(
        "https://127.0.0.1:9/token",
        None,
        "c",
        profile="custom",
        key_file=made["key_file"],
        algorithm="ps256",
    )
    assert same.algorithm == "PS256"
