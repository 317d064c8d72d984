"""Private keys in every shape a user may paste, made fresh for the tests."""

from __future__ import annotations

import functools
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk


@functools.cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(curve: str = "P-384") -> ec.EllipticCurvePrivateKey:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[curve])


def pem(key: Any, fmt: str = "pkcs8", passphrase: bytes | None = None) -> str:
    formats = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,  # RSA: PKCS#1, EC: SEC1
    }
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, formats[fmt], encryption).decode()


def private_jwk(key: Any, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    """The private JWK exported by jwcrypto (independent of the code under test)."""
    exported = jwk.JWK.from_pem(pem(key).encode())
    data: dict[str, Any] = json.loads(exported.export_private())
    if kid:
        data["kid"] = kid
    if alg:
        data["alg"] = alg
    return data


def public_jwks(key: Any, kid: str) -> dict[str, Any]:
    exported = jwk.JWK.from_pem(pem(key).encode())
    data: dict[str, Any] = json.loads(exported.export_public())
    data["kid"] = kid
    return {"keys": [data]}
