"""Helpers for tests and users: client key pairs, and jwcrypto-signed assertions.

Keys are generated with ``cryptography`` and described with jwcrypto (never pyjwt), so a test
that signs with the project's pyjwt client and verifies in the sandbox uses two independent
JOSE implementations.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws

KEY_KINDS = ("RSA", "EC-P256", "EC-P384", "EC-P521")
_CURVES: dict[str, ec.EllipticCurve] = {
    "EC-P256": ec.SECP256R1(),
    "EC-P384": ec.SECP384R1(),
    "EC-P521": ec.SECP521R1(),
}
_DEFAULT_ALG = {"RSA": "RS384", "EC-P256": "ES256", "EC-P384": "ES384", "EC-P521": "ES512"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ClientKey:
    """A client's key pair in every shape a test needs.

    ``private_pem`` is unencrypted PKCS#8; ``private_jwk``/``public_jwk`` carry the ``kid``;
    ``public_jwks`` is ``{"keys": [public_jwk]}``, ready for ``Sandbox.register_client``.
    With ``certificate=True`` there is also a self-signed certificate: ``certificate_pem``,
    ``x5t_s256`` (what Entra ID expects in the ``x5t#S256`` header) and ``x5c`` in the JWKs.
    """

    kind: str
    kid: str
    algorithm: str
    private_pem: str
    public_pem: str
    private_jwk: dict[str, Any]
    public_jwk: dict[str, Any]
    certificate_pem: str | None = None
    x5t_s256: str | None = None
    x5t: str | None = None
    _jwk: jwk.JWK | None = field(default=None, repr=False, compare=False)

    @property
    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.public_jwk)]}

    @property
    def jwcrypto_key(self) -> jwk.JWK:
        """The private key as a jwcrypto JWK."""
        return self._jwk if self._jwk is not None else jwk.JWK(**self.private_jwk)


def generate_client_key(
    kind: str = "RSA", kid: str | None = None, *, certificate: bool = False, rsa_bits: int = 2048
) -> ClientKey:
    """Generate a key pair: ``kind`` is "RSA", "EC-P256", "EC-P384" or "EC-P521".

    ``kid`` defaults to the RFC 7638 thumbprint of the public key.
    """
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(KEY_KINDS)}")
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "RSA":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    else:
        private_key = ec.generate_private_key(_CURVES[kind])
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = jwk.JWK.from_pem(private_pem)
    key_id = kid or key.thumbprint()
    private_jwk: dict[str, Any] = json.loads(key.export_private())
    public_jwk: dict[str, Any] = json.loads(key.export_public())
    private_jwk["kid"] = public_jwk["kid"] = key_id
    public_jwk["use"] = "sig"

    cert_pem = x5t_s256 = x5t = None
    if certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sandbox-client-{key_id}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(private_key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        x5t_s256 = _b64url(hashlib.sha256(der).digest())
        x5t = _b64url(hashlib.sha1(der).digest())  # noqa: S324 - x5t is SHA-1 by definition
        public_jwk["x5c"] = [base64.b64encode(der).decode("ascii")]
        public_jwk["x5t#S256"] = x5t_s256

    private_jwk_obj = jwk.JWK(**private_jwk)
    return ClientKey(
        kind=kind,
        kid=key_id,
        algorithm=_DEFAULT_ALG[kind],
        private_pem=private_pem.decode("ascii"),
        public_pem=public_pem.decode("ascii"),
        private_jwk=private_jwk,
        public_jwk=public_jwk,
        certificate_pem=cert_pem,
        x5t_s256=x5t_s256,
        x5t=x5t,
        _jwk=private_jwk_obj,
    )


def assertion_claims(
    client_id: str, aud: str, lifetime: int = 300, **overrides: Any
) -> dict[str, Any]:
    """The standard claim set (iss, sub, aud, exp, jti); pass ``name=None`` to drop a claim."""
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": int(time.time()) + lifetime,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign_assertion(
    key: ClientKey,
    claims: dict[str, Any],
    alg: str | None = None,
    *,
    typ: str | None = "JWT",
    kid: str | bool | None = True,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign ``claims`` with jwcrypto.

    ``kid=True`` uses the key's kid, ``False``/``None`` omits it, a string overrides it;
    ``typ=None`` omits ``typ``; ``headers`` adds or overrides header members.
    """
    header: dict[str, Any] = {"alg": alg or key.algorithm}
    if typ is not None:
        header["typ"] = typ
    if kid is True:
        header["kid"] = key.kid
    elif isinstance(kid, str):
        header["kid"] = kid
    header.update(headers or {})
    token = jws.JWS(json.dumps(claims).encode("utf-8"))
    token.allowed_algs = [header["alg"]]
    token.add_signature(key.jwcrypto_key, alg=None, protected=json.dumps(header))
    return str(token.serialize(compact=True))


def token_request_form(assertion: str, scope: str | None = None, **extra: str) -> dict[str, str]:
    """The form of a client-credentials token request carrying ``assertion``."""
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    if scope is not None:
        form["scope"] = scope
    form.update(extra)
    return form


def dpop_proof(
    key: ClientKey,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    iat: float | None = None,
    jti: str | None = None,
    typ: str = "dpop+jwt",
    alg: str | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    """A DPoP proof (RFC 9449) for one request, signed with jwcrypto: ``typ``, ``alg`` and
    the public ``jwk`` in the header; ``jti``, ``htm``, ``htu`` (``url`` as given), ``iat``,
    and ``ath`` (with ``access_token``) and ``nonce`` when given. ``claims`` adds or
    overrides claims (``None`` values drop them)."""
    body: dict[str, Any] = {
        "jti": jti or uuid.uuid4().hex,
        "htm": method,
        "htu": url,
        "iat": int(time.time() if iat is None else iat),
    }
    if access_token is not None:
        body["ath"] = _b64url(hashlib.sha256(access_token.encode("ascii")).digest())
    if nonce is not None:
        body["nonce"] = nonce
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    public = json.loads(key.jwcrypto_key.export_public())
    public.pop("kid", None)
    header = {"typ": typ, "alg": alg or key.algorithm, "jwk": public}
    token = jws.JWS(json.dumps(body).encode("utf-8"))
    token.allowed_algs = [header["alg"]]
    token.add_signature(key.jwcrypto_key, alg=None, protected=json.dumps(header))
    return str(token.serialize(compact=True))
