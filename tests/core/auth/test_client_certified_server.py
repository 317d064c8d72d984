"""The provider against an independent, OpenID-certified authorization server on 127.0.0.1
(panva's oidc-provider, configured strictly by tests/support/oidc_server.mjs): private_key_jwt
only, client_credentials, single-use assertion ``jti``, assertions living 300 s at most, DPoP
(RFC 9449) required per client, with server nonces when the client is registered so.

The sandbox shares the project's reading of RFC 7523; this server is someone else's, so what
passes here is what a strict real server accepts. It keeps its reasons out of its answers
(``invalid_client: client authentication failed`` for every authentication failure, as many
production servers do), so the provider's explanation must stand on its own; the reason the
server had is read from its log to check the refusal was the one meant.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from jwcrypto import jwk

from airflow_provider_backendauth.cli.main import main
from airflow_provider_backendauth.core.auth.assertion import ClientAssertionSigner
from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.keys import (
    EC_ALGORITHMS,
    RSA_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
)
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.auth.tokens import AccessToken, TokenEndpoint
from airflow_provider_backendauth.core.errors import (
    InvalidClientError,
    InvalidScopeError,
)
from airflow_provider_backendauth.core.retry import RetryPolicy
from backendauth_sandbox.testing import generate_client_key
from tests.support.oidc_provider import FHIR_RESOURCE, OidcServer

pytestmark = pytest.mark.e2e

SCOPE = "system/Patient.rs"
_OPENSSL_CURVES = {"ES256": "prime256v1", "ES384": "secp384r1", "ES512": "secp521r1"}


@pytest.fixture(scope="module")
def server() -> Iterator[OidcServer]:
    with OidcServer(max_assertion_age=300) as running:
        yield running


def connect(
    server: OidcServer, client_id: str, private_key: str, host: str = FHIR_RESOURCE, **extra: Any
) -> BackendAuthClient:
    """A connection as a user would configure it for this server (custom profile)."""
    settings = ClientSettings.from_connection_fields(
        host=host,
        login=client_id,
        password=private_key,
        extra={
            "profile": "custom",
            "auth_url": server.token_url,
            "allow_insecure_http": True,  # loopback test server
            "scope": SCOPE,
            **extra,
        },
    )
    return BackendAuthClient(settings)


def claims_of(server: OidcServer, access_token: str) -> dict[str, Any]:
    """The access token's claims, its ES256 signature checked with the server's keys."""
    public = jwt.PyJWKSet.from_dict(server.public_jwks()).keys[0].key
    claims: dict[str, Any] = jwt.decode(
        access_token, public, algorithms=["ES256"], audience=FHIR_RESOURCE
    )
    return claims


def keygen(out: Path, alg: str) -> tuple[dict[str, Any], str]:
    """``backendauth keygen`` as a user runs it: (the JWKS to register, the private key PEM)."""
    code = main(
        ["keygen", "--profile", "custom", "--alg", alg, "--out", str(out), "--bits", "2048"]
    )
    assert code == 0
    jwks = json.loads((out / "jwks.json").read_text())
    return jwks, (out / "private_key.pem").read_text()


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_keygen_keys_get_tokens_with_every_algorithm(server, tmp_path, capsys, alg):
    jwks, private_pem = keygen(tmp_path, alg)
    capsys.readouterr()
    assert jwks["keys"][0]["alg"] == alg  # the server may use the key for this algorithm only
    client_id = server.register(jwks, scope=SCOPE)
    client = connect(server, client_id, private_pem)  # no 'algorithm' extra: the key names it
    assert client.algorithm == alg
    token = client.get_token()
    claims = claims_of(server, token.value)
    assert claims["client_id"] == client_id and claims["scope"] == SCOPE
    assert token.scope == SCOPE and 250 < token.lifetime <= 300


def _openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def openssl_keys(tmp_path_factory) -> dict[str, str]:
    """Private keys as openssl writes them: RSA in PKCS#1 (``genrsa -traditional``), EC as
    ``ecparam -genkey`` writes them (an EC PARAMETERS block before the SEC1 key)."""
    folder = tmp_path_factory.mktemp("openssl")
    keys = {"RSA": _openssl("genrsa", "-traditional", "2048")}
    for alg, curve in _OPENSSL_CURVES.items():
        keys[alg] = _openssl("ecparam", "-name", curve, "-genkey")
    for name, text in keys.items():
        (folder / f"{name}.pem").write_text(text)
    return keys


def _public_jwks(private_pem: str) -> dict[str, Any]:
    """The public JWKS made by jwcrypto from the openssl key (not by the code under test),
    with no ``alg``: the server then accepts any algorithm that fits the key type."""
    blocks = private_pem.split("-----BEGIN ")
    key_block = "-----BEGIN " + next(b for b in blocks if "PRIVATE KEY" in b.split("\n", 1)[0])
    public = json.loads(jwk.JWK.from_pem(key_block.encode()).export_public())
    return {"keys": [public]}


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_openssl_keys_get_tokens_with_every_algorithm(server, openssl_keys, alg):
    assert alg in RSA_ALGORITHMS or alg in EC_ALGORITHMS
    private_pem = openssl_keys["RSA" if alg in RSA_ALGORITHMS else alg]
    assert "BEGIN RSA PRIVATE KEY" in private_pem or "BEGIN EC PARAMETERS" in private_pem
    client_id = server.register(_public_jwks(private_pem), scope=SCOPE)
    client = connect(server, client_id, private_pem, algorithm=alg)
    token = client.get_token()
    assert claims_of(server, token.value)["client_id"] == client_id
    (event,) = server.events(client_id, 1)
    assert event["kind"] == "token"


def test_every_assertion_has_a_fresh_jti(server):
    key = generate_client_key("EC-P384")
    client_id = server.register(key.public_jwks, scope=SCOPE)
    client = connect(server, client_id, key.private_pem, reuse_policy="per_request")
    values = {client.get_token().value for _ in range(4)}
    assert len(values) == 4
    events = server.events(client_id, 4)
    assert [e["kind"] for e in events] == ["token"] * 4  # none refused as a replay
    assert len({e["jti"] for e in events}) == 4


def test_a_replayed_assertion_is_refused_and_explained(server):
    key = generate_client_key("RSA")
    client_id = server.register(key.public_jwks, scope=SCOPE)
    client = connect(server, client_id, key.private_pem)
    assertion = ClientAssertionSigner(client.key, client.assertion_spec()).sign()
    replaying = TokenEndpoint(server.token_url, lambda: assertion, client_id=client_id, scope=SCOPE)
    assert replaying.request_token().value
    with pytest.raises(InvalidClientError) as refused:
        replaying.request_token()
    assert replaying.requests_made == 2  # a refused assertion is not retried
    message = str(refused.value)
    # The server gives no reason; the explanation is the authentication checklist.
    assert "invalid_client: client authentication failed" in message
    assert "Check that:" in message
    first, second = server.events(client_id, 2)
    assert first["kind"] == "token" and second["jti"] == first["jti"]
    assert second["detail"] == "client assertion tokens must only be used once"


def test_an_overlong_assertion_lifetime_is_refused_and_explained(server):
    key = generate_client_key("EC-P256")
    client_id = server.register(key.public_jwks, scope=SCOPE)
    # 600 s is within the custom profile's limit (3600 s), beyond this server's (300 s).
    client = connect(server, client_id, key.private_pem, assertion_lifetime=600)
    with pytest.raises(InvalidClientError) as refused:
        client.get_token()
    message = str(refused.value)
    assert "client authentication failed" in message
    assert "'assertion_lifetime'" in message and "600 s" in message
    (event,) = server.events(client_id, 1)
    assert event["exp"] - event["iat"] == 600
    assert "lifetime exceeds 300 seconds" in event["detail"]
    # Lowered as the explanation says, in the same process: the next request signs 300 s
    # (the token cache once kept renewing with the first connection's 600 s assertion).
    assert connect(server, client_id, key.private_pem, assertion_lifetime=300).get_token()
    assert server.events(client_id, 2)[1]["kind"] == "token"


def test_invalid_scope_is_explained_as_such(server):
    key = generate_client_key("RSA")
    client_id = server.register(key.public_jwks, scope=SCOPE)
    client = connect(server, client_id, key.private_pem, scope="system/Observation.rs")
    with pytest.raises(InvalidScopeError) as refused:
        client.get_token()
    message = str(refused.value)
    assert "refused the requested scope 'system/Observation.rs'" in message
    assert "requested scope is not allowed" in message
    assert "private key" not in message  # not the wrong-key checklist
    (event,) = server.events(client_id, 1)
    assert event["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("same_kid", "reason"),
    [
        (True, "signature verification failed"),
        (False, "no applicable key found in the JSON Web Key Set"),
    ],
    ids=["registered-kid", "unknown-kid"],
)
def test_a_wrong_key_is_explained_as_such(server, same_kid, reason):
    registered = generate_client_key("RSA")
    client_id = server.register(registered.public_jwks, scope=SCOPE)
    other = generate_client_key("RSA")
    extra = {"key_id": registered.kid} if same_kid else {}
    client = connect(server, client_id, other.private_pem, **extra)
    with pytest.raises(InvalidClientError) as refused:
        client.get_token()
    message = str(refused.value)
    assert f"rejected the client assertion for client id {client_id!r}" in message
    assert "the private key is the pair of the public key/JWKS registered" in message
    assert "the kid matches the registered key" in message
    (event,) = server.events(client_id, 1)
    assert event["error"] == "invalid_client"
    assert event["detail"] == reason


def test_a_short_lived_token_is_renewed_once_a_quarter_of_its_life_is_left(server):
    key = generate_client_key("EC-P384")
    client_id = server.register(key.public_jwks, scope=SCOPE, token_ttl=2)
    client = connect(server, client_id, key.private_pem)
    first = client.get_token()
    assert 1 < first.lifetime <= 2
    assert client.get_token() is first  # fresh: reused, not asked for again
    # Renewed once fresh no more (a quarter of its life before expiry): wait for that time to
    # come, not for another thread, so load cannot make this flaky.
    renew_at = first.expires_at - first.lifetime / 4
    while (left := renew_at - time.time()) > 0:
        time.sleep(left + 0.01)
    second = client.get_token()
    assert second.value != first.value
    assert claims_of(server, second.value)["client_id"] == client_id
    assert [e["kind"] for e in server.events(client_id, 2)] == ["token", "token"]


# -- DPoP (RFC 9449) ------------------------------------------------------------------------


def bound_token(server: OidcServer, client: BackendAuthClient) -> AccessToken:
    """A token from ``client``, checked as bound by the server to the client's proof key
    (the server's signed ``cnf.jkt``, RFC 9449 section 6.1)."""
    token = client.get_token()
    assert token.token_type == "DPoP" and token.dpop_bound
    assert client.dpop is not None
    assert claims_of(server, token.value)["cnf"] == {"jkt": client.dpop.thumbprint}
    return token


def test_a_client_that_requires_dpop_gets_a_token_bound_to_its_proof_key(server):
    key = generate_client_key("RSA")
    client_id = server.register(key.public_jwks, scope=SCOPE, dpop=True)
    client = connect(server, client_id, key.private_pem, dpop="on")
    bound_token(server, client)
    assert client.dpop is not None
    assert client.dpop.thumbprint != client.key.thumbprint()  # never the assertion key
    (event,) = server.events(client_id, 1)
    assert event["kind"] == "token" and event["dpop"]


def test_without_dpop_the_checklist_names_dpop(server):
    # This server keeps its reason to itself ("invalid_grant: grant request is invalid",
    # no DPoP word, no challenge): with 'dpop' off the client cannot tell, so the checklist
    # names DPoP (it once listed only key, kid, algorithm, audience and clock).
    key = generate_client_key("RSA")
    client_id = server.register(key.public_jwks, scope=SCOPE, dpop=True)
    client = connect(server, client_id, key.private_pem, dpop="off")
    with pytest.raises(InvalidClientError) as refused:
        client.get_token()
    message = str(refused.value)
    assert "invalid_grant: grant request is invalid" in message
    assert "DPoP proof" in message and "the 'dpop' extra 'auto'" in message
    (event,) = server.events(client_id, 1)
    assert event["detail"] == "DPoP proof JWT not provided"  # what the server did not say


def test_auto_sends_a_proof_once_the_server_asks_with_a_fresh_assertion(server):
    key = generate_client_key("EC-P256")
    client_id = server.register(key.public_jwks, scope=SCOPE, dpop=True)
    client = connect(server, client_id, key.private_pem, dpop="auto")
    bound_token(server, client)
    refused, issued = server.events(client_id, 2)
    # The server said only "invalid_grant" (its reason stays in its log): "auto" probed once
    # with a proof, and keeps sending proofs for this connection from then on.
    assert refused["description"] == "grant request is invalid"
    assert refused["detail"] == "DPoP proof JWT not provided" and not refused["dpop"]
    assert issued["kind"] == "token" and issued["dpop"]
    assert issued["jti"] != refused["jti"]  # the first assertion's jti was spent
    assert client.endpoint.dpop_active
    client.tokens.invalidate()
    bound_token(server, client)
    assert server.events(client_id, 3)[2]["kind"] == "token"  # no second refusal


def test_auto_with_server_nonces_gets_there_in_one_attempt(server):
    key = generate_client_key("EC-P256")
    client_id = server.register(key.public_jwks, scope=SCOPE, dpop=True, require_dpop_nonce=True)
    client = connect(server, client_id, key.private_pem, dpop="auto")
    client.retry = RetryPolicy(attempts=1)  # the DPoP rounds are not retries
    bound_token(server, client)
    events = server.events(client_id, 3)
    assert [e.get("error") for e in events] == ["invalid_grant", "use_dpop_nonce", None]
    assert len({e["jti"] for e in events}) == 3


def test_a_bearer_client_in_auto_mode_stays_bearer(server):
    key = generate_client_key("EC-P384")
    client_id = server.register(key.public_jwks, scope=SCOPE)
    client = connect(server, client_id, key.private_pem, dpop="auto")
    token = client.get_token()
    assert token.token_type == "Bearer"
    assert "cnf" not in claims_of(server, token.value)
    (event,) = server.events(client_id, 1)
    assert not event["dpop"]


def test_use_dpop_nonce_is_answered_once_with_the_servers_nonce_and_a_fresh_assertion(server):
    key = generate_client_key("RSA")
    client_id = server.register(key.public_jwks, scope=SCOPE, dpop=True, require_dpop_nonce=True)
    client = connect(server, client_id, key.private_pem, dpop="on")
    bound_token(server, client)
    challenged, issued = server.events(client_id, 2)
    assert challenged["error"] == "use_dpop_nonce"
    # The server spent the first assertion before it read the proof: resending that
    # assertion would be refused as a replay, so the second one is new.
    assert issued["kind"] == "token" and issued["jti"] != challenged["jti"]
    # The nonce is remembered: a renewal needs no second challenge.
    client.tokens.invalidate()
    bound_token(server, client)
    assert server.events(client_id, 3)[2]["kind"] == "token"


def test_resource_requests_carry_a_fresh_proof_for_the_bound_token(server):
    # The server's resource endpoint verifies with jose (panva's JOSE library): the token's
    # signature and audience, the proof's signature, typ, htm, htu without the query, iat,
    # single-use jti, ath and the key thumbprint against cnf.jkt.
    key = generate_client_key("RSA")
    client_id = server.register(key.public_jwks, scope=SCOPE, dpop=True, require_dpop_nonce=True)
    client = connect(server, client_id, key.private_pem, host=f"{server.issuer}/fhir", dpop="on")
    session = client.new_session()
    for _ in range(3):
        answer = session.get(f"{server.issuer}/fhir/Patient", params={"_count": 3}, timeout=30)
        assert answer.status_code == 200, answer.text
    events = server.events(client_id, 5)  # nonce challenge, token, three resource requests
    assert [e["kind"] for e in events] == ["refused", "token", "resource", "resource", "resource"]
    proofs = events[2:]
    assert {e["htu"] for e in proofs} == {f"{server.issuer}/fhir/Patient"}
    assert len({e["jti"] for e in proofs}) == 3
    # The verifier is not a formality: the last proof sent again is refused.
    replayed = requests.get(
        f"{server.issuer}/fhir/Patient",
        headers={k: answer.request.headers[k] for k in ("Authorization", "DPoP")},
        timeout=30,
    )
    assert replayed.status_code == 401
    assert replayed.json()["error_description"] == "proof: jti reused"
