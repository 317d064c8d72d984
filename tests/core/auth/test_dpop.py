"""DPoP (RFC 9449) in the client, against the sandbox's DPoP mode (which verifies proofs with
jwcrypto): the token request with a proof, ``use_dpop_nonce`` answered with a fresh assertion,
``auto`` mode, DPoP errors explained as such, resource requests with ``Authorization: DPoP``
and a proof per hop (requests and aiohttp), nonces per origin, rotation, and the token cache
keyed by the proof key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import DpopError
from airflow_provider_backendauth.core.http.aiohttp_driver import send_async, shared_session
from backendauth_sandbox.testing import generate_client_key
from tests.support.clients import make_client, register


def _dpop_client(
    sb: Any, mode: str = "on", dpop: str = "require", **extra: Any
) -> BackendAuthClient:
    return make_client(sb, registration={"dpop": dpop}, dpop=mode, scope="system/*.rs", **extra)


def test_a_client_that_requires_dpop_gets_a_dpop_bound_token(sandbox):
    client = _dpop_client(sandbox)
    token = client.get_token()
    assert token.token_type == "DPoP" and token.dpop_bound
    assert sandbox.stats["dpop"]["tokens_issued"] == 1
    session = client.new_session()
    answer = session.get(f"{sandbox.fhir_base}/Patient", params={"_count": 3}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["Authorization"] == f"DPoP {token.value}"
    assert answer.request.headers["DPoP"].count(".") == 2
    assert sandbox.stats["dpop"]["proofs_accepted"] >= 2  # token request + resource


def test_without_dpop_the_refusal_is_explained_as_dpop_not_a_wrong_key(sandbox):
    client = _dpop_client(sandbox, mode="off")
    with pytest.raises(DpopError) as failure:
        client.get_token()
    message = str(failure.value)
    assert "DPoP proof JWT not provided" in message
    assert "'dpop' extra" in message
    assert "key pair" not in message and "client id is exactly" not in message
    assert failure.value.retry_cannot_help


def test_auto_sends_a_proof_once_the_token_endpoint_asks(sandbox):
    client = _dpop_client(sandbox, mode="auto")
    before = sandbox.stats["token_requests"]
    assert client.get_token().dpop_bound
    assert sandbox.stats["token_requests"] - before == 2  # refused without, then with a proof
    # A Bearer-only client in auto mode stays Bearer: no proof is ever sent.
    bearer = _dpop_client(sandbox, mode="auto", dpop="allow")
    assert bearer.get_token().token_type == "Bearer"


def test_use_dpop_nonce_is_answered_once_with_a_fresh_assertion(sandbox):
    sandbox.settings.dpop_nonce = True
    client = _dpop_client(sandbox)
    before = dict(sandbox.stats["dpop"])
    token = client.get_token()
    assert token.dpop_bound
    after = sandbox.stats["dpop"]
    assert after["nonce_challenges"] - before["nonce_challenges"] == 1
    # The second assertion was fresh: no "jti already used" refusal on the way.
    assert not [r for r in sandbox.stats["token_failure_reasons"] if "already used" in r]


def test_resource_nonces_are_remembered_and_rotation_costs_one_retry(sandbox):
    sandbox.settings.update(dpop_nonce=True, dpop_nonce_rotate_after=3)
    before = dict(sandbox.stats["dpop"])
    client = _dpop_client(sandbox)
    session = client.new_session()
    for _ in range(7):  # rotations announced in DPoP-Nonce are picked up without a 401
        assert session.get(f"{sandbox.fhir_base}/Patient", timeout=10).status_code == 200
    challenges = sandbox.stats["dpop"]["nonce_challenges"]
    assert sandbox.stats["dpop"]["nonces_rotated"] - before["nonces_rotated"] >= 2
    assert challenges - before["nonce_challenges"] == 1  # the token request's first proof
    sandbox.rotate_dpop_nonce()  # silently: the next proof carries a stale nonce
    assert session.get(f"{sandbox.fhir_base}/Patient", timeout=10).status_code == 200
    assert sandbox.stats["dpop"]["nonce_challenges"] == challenges + 1
    assert sandbox.stats["tokens_issued"] >= 1 and client.tokens.current is not None


def test_bearer_and_dpop_tokens_never_share_a_cache(sandbox):
    client_id, key = register(sandbox, dpop="allow")

    def client(**extra: Any) -> BackendAuthClient:
        settings = ClientSettings.from_connection_fields(
            host=sandbox.fhir_base,
            login=client_id,
            password=key.private_pem,
            extra={"scope": "system/*.rs", **extra},
        )
        return BackendAuthClient(settings)

    bearer, dpop = client(), client(dpop="on")
    assert bearer.get_token().token_type == "Bearer"
    assert dpop.get_token().token_type == "DPoP"
    assert bearer.tokens is not dpop.tokens
    assert dpop.dpop is not None and dpop.dpop.thumbprint != key.public_jwk.get("kid")
    # The proof key is not the assertion key.
    assert dpop.dpop.thumbprint != dpop.key.thumbprint()


def test_a_configured_dpop_key_file_signs_the_proofs(sandbox, tmp_path):
    proof_key = generate_client_key("EC-P384")
    path = tmp_path / "dpop.pem"
    path.write_text(proof_key.private_pem)
    client = _dpop_client(sandbox, dpop_key_file=str(path))
    assert client.dpop is not None and client.dpop.algorithm == "ES384"
    assert client.dpop.thumbprint == proof_key.kid  # RFC 7638, computed by jwcrypto
    assert client.get_token().dpop_bound


def test_the_triggers_driver_sends_dpop_proofs(sandbox):
    sandbox.settings.update(dpop_nonce=True)
    client = _dpop_client(sandbox)
    policy = client.bearer_policy()
    url = f"{sandbox.fhir_base}/Patient"

    async def fetch() -> list[int]:
        async with shared_session(True) as http:
            codes = []
            for _ in range(2):
                reply = await send_async(http, policy, "GET", url, timeout=10, max_bytes=1 << 20)
                codes.append(reply.status)
            sandbox.rotate_dpop_nonce()  # the next proof's nonce is stale: one 401, resent
            reply = await send_async(http, policy, "GET", url, timeout=10, max_bytes=1 << 20)
            codes.append(reply.status)
            return codes

    before = sandbox.stats["dpop"]["nonce_challenges"]
    assert asyncio.run(fetch()) == [200, 200, 200]
    # The token request's first proof, and the stale nonce after the rotation.
    assert sandbox.stats["dpop"]["nonce_challenges"] - before == 2
