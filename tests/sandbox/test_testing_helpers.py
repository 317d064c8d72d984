"""backendauth_sandbox.testing: key generation for tests and users."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from backendauth_sandbox.testing import generate_client_key


@pytest.mark.parametrize(
    ("kind", "alg", "crv"),
    [
        ("RSA", "RS384", None),
        ("EC-P256", "ES256", "P-256"),
        ("EC-P384", "ES384", "P-384"),
        ("EC-P521", "ES512", "P-521"),
    ],
)
def test_generate_client_key(kind: str, alg: str, crv: str | None) -> None:
    key = generate_client_key(kind)
    assert key.private_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    load_pem_private_key(key.private_pem.encode(), password=None)
    assert key.algorithm == alg
    assert key.public_jwks == {"keys": [key.public_jwk]}
    assert key.public_jwk["kid"] == key.private_jwk["kid"] == key.kid
    assert "d" in key.private_jwk and "d" not in key.public_jwk
    assert key.public_jwk.get("crv") == crv
    # pyjwt can sign with the PEM and verify with the public JWK: the shapes interoperate.
    token = pyjwt.encode({"x": 1}, key.private_pem, algorithm=alg)
    public = pyjwt.PyJWK(key.public_jwk, algorithm=alg)
    assert pyjwt.decode(token, public.key, algorithms=[alg]) == {"x": 1}


def test_kid_and_certificate() -> None:
    key = generate_client_key("RSA", kid="my-kid", certificate=True)
    assert key.kid == "my-kid"
    assert key.certificate_pem is not None and "BEGIN CERTIFICATE" in key.certificate_pem
    assert key.public_jwk["x5t#S256"] == key.x5t_s256
    assert len(key.public_jwk["x5c"]) == 1
    with pytest.raises(ValueError):
        generate_client_key("DSA")
