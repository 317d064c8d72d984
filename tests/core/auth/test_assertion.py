"""Assertions are verified with jwcrypto, a JOSE library independent of pyjwt (the signer)."""

from __future__ import annotations

import json
import time

import pytest
from jwcrypto import jwk, jws

from airflow_provider_backendauth.core.auth.assertion import AssertionSpec, ClientAssertionSigner
from airflow_provider_backendauth.core.auth.keys import SUPPORTED_ALGORITHMS, load_signing_key
from airflow_provider_backendauth.core.errors import ConfigurationError
from tests.support.keyfactory import ec_key, pem, rsa_key

KEY_FOR = {
    "RS": rsa_key,
    "PS": rsa_key,
    "ES256": lambda: ec_key("P-256"),
    "ES384": lambda: ec_key("P-384"),
    "ES512": lambda: ec_key("P-521"),
}


def verify(token: str, original) -> tuple[dict, dict]:
    """Verify signature with jwcrypto and return (header, claims)."""
    public = jwk.JWK.from_pem(pem(original).encode())
    signed = jws.JWS()
    signed.deserialize(token)
    signed.verify(public)  # raises on a bad signature
    header = signed.jose_header
    return header, json.loads(signed.payload)


def original_for(alg: str):
    return KEY_FOR.get(alg, KEY_FOR.get(alg[:2]))()


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_every_algorithm_signs_verifiably(alg):
    original = original_for(alg)
    spec = AssertionSpec(client_id="c1", audience="https://as/token", algorithm=alg, kid="k1")
    header, claims = verify(
        ClientAssertionSigner(load_signing_key(pem(original)), spec).sign(), original
    )
    assert header == {"alg": alg, "typ": "JWT", "kid": "k1"}
    assert claims["iss"] == claims["sub"] == "c1"
    assert claims["aud"] == "https://as/token"


def test_claims_and_lifetime():
    spec = AssertionSpec(
        client_id="c1",
        audience="https://as/token",
        algorithm="RS384",
        lifetime=60,
        include_nbf=True,
        extra_claims={"tenant": "t1"},
    )
    now = 1_800_000_000
    _, claims = verify(
        ClientAssertionSigner(load_signing_key(pem(rsa_key())), spec).sign(now=now), rsa_key()
    )
    assert claims["exp"] == now + 60
    assert claims["iat"] == claims["nbf"] == now
    assert claims["tenant"] == "t1"


def test_jti_is_fresh_every_time():
    spec = AssertionSpec(client_id="c1", audience="a", algorithm="ES384")
    signer = ClientAssertionSigner(load_signing_key(pem(ec_key("P-384"))), spec)
    jtis = {verify(signer.sign(), ec_key("P-384"))[1]["jti"] for _ in range(20)}
    assert len(jtis) == 20
    assert all(len(j) >= 20 for j in jtis)


def test_headers_typ_absent_and_optional_members():
    spec = AssertionSpec(
        client_id="c1",
        audience="a",
        algorithm="PS256",
        typ=None,
        jku="https://example.org/jwks.json",
        x5t_s256="abc",
    )
    header, _ = verify(
        ClientAssertionSigner(load_signing_key(pem(rsa_key())), spec).sign(), rsa_key()
    )
    assert "typ" not in header
    assert header["jku"] == "https://example.org/jwks.json"
    assert header["x5t#S256"] == "abc"
    assert "kid" not in header


def test_custom_typ():
    spec = AssertionSpec(
        client_id="c", audience="a", algorithm="RS512", typ="client-authentication+jwt"
    )
    header, _ = verify(
        ClientAssertionSigner(load_signing_key(pem(rsa_key())), spec).sign(), rsa_key()
    )
    assert header["typ"] == "client-authentication+jwt"


def test_exp_is_in_the_near_future():
    spec = AssertionSpec(client_id="c", audience="a", algorithm="RS384")
    _, claims = verify(
        ClientAssertionSigner(load_signing_key(pem(rsa_key())), spec).sign(), rsa_key()
    )
    assert 0 < claims["exp"] - time.time() <= 300


def test_extra_claims_cannot_override_reserved_ones():
    with pytest.raises(ConfigurationError, match="may not set aud, exp"):
        AssertionSpec(
            client_id="c", audience="a", algorithm="RS384", extra_claims={"aud": "x", "exp": 1}
        )


def test_mismatched_algorithm_fails_on_construction():
    spec = AssertionSpec(client_id="c", audience="a", algorithm="ES256")
    with pytest.raises(ConfigurationError):
        ClientAssertionSigner(load_signing_key(pem(rsa_key())), spec)


def test_empty_client_id_is_refused():
    with pytest.raises(ConfigurationError, match="client id"):
        AssertionSpec(client_id="", audience="a", algorithm="RS384")
