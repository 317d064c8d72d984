"""New client key pairs, in every form vendors ask you to register.

Generation lives here, next to ``keys.py`` (which loads keys and derives kids and
thumbprints): the CLI only writes files and prints. Nothing here touches the network.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from airflow_provider_backendauth.core.auth.keys import (
    MIN_RSA_BITS,
    RSA_ALGORITHMS,
    SigningKey,
    check_algorithm,
    pem_note,
)
from airflow_provider_backendauth.core.auth.profiles import Profile
from airflow_provider_backendauth.core.errors import ConfigurationError, KeyLoadError

DEFAULT_RSA_BITS = 3072
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


@dataclass(frozen=True)
class GeneratedKey:
    """A fresh key pair plus its public forms.

    Attributes:
        signing_key: the private key as the rest of the provider uses it (with certificate).
        algorithm: the algorithm the key was made for (goes into the JWKS ``alg``).
        kid: the key id published in the JWKS.
    """

    signing_key: SigningKey = field(repr=False)
    algorithm: str
    kid: str

    def private_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given,
        after a note naming the algorithm and kid (``keys.pem_note``): the connection then
        signs with the algorithm the published JWKS pins, without an 'algorithm' extra."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return pem_note(self.algorithm, self.kid) + self.signing_key.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def public_pem(self) -> bytes:
        return self.signing_key.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def certificate_pem(self) -> bytes:
        assert self.signing_key.certificate is not None
        return self.signing_key.certificate.public_bytes(serialization.Encoding.PEM)

    def public_jwks(self) -> dict[str, Any]:
        return self.signing_key.public_jwks(kid=self.kid, alg=self.algorithm)

    @property
    def x5t_s256(self) -> str:
        value = self.signing_key.certificate_thumbprint(sha256=True)
        assert value is not None
        return value

    @property
    def x5t(self) -> str:
        value = self.signing_key.certificate_thumbprint(sha256=False)
        assert value is not None
        return value


def default_algorithm(profile: Profile) -> str:
    """The algorithm a new key for ``profile`` should be made for (its preferred one)."""
    return profile.algorithms[0]


def generate_key(
    profile: Profile,
    *,
    algorithm: str | None = None,
    kid: str | None = None,
    rsa_bits: int = DEFAULT_RSA_BITS,
    common_name: str | None = None,
    valid_days: int = 365,
    now: datetime.datetime | None = None,
) -> GeneratedKey:
    """Generate a key pair fit for ``profile`` and a self-signed certificate for it.

    Args:
        profile: decides the default algorithm and which algorithms are acceptable.
        algorithm: one of the profile's algorithms (default: its preferred one).
        kid: the key id to publish (default: the RFC 7638 thumbprint).
        rsa_bits: RSA modulus size (at least 2048).
        common_name: the certificate's subject CN (default: ``backendauth <kid prefix>``).
        valid_days: the certificate's validity (Entra ID shows and enforces it).

    Raises:
        ConfigurationError: the algorithm is unknown, refused, or not one the profile uses.
    """
    alg = (algorithm or default_algorithm(profile)).strip().upper()
    # The profile's list holds only asymmetric algorithms, so this also refuses none/HS*.
    if alg not in profile.algorithms:
        raise ConfigurationError(
            f"Profile {profile.name!r} signs with {', '.join(profile.algorithms)}, not {alg}; "
            "pick one of those with --alg (or use --profile custom)."
        )
    if rsa_bits < MIN_RSA_BITS:
        raise ConfigurationError(f"RSA keys need at least {MIN_RSA_BITS} bits, not {rsa_bits}.")
    if valid_days < 1:
        raise ConfigurationError("The certificate must be valid for at least one day.")
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg in RSA_ALGORITHMS:
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    else:
        private = ec.generate_private_key(_CURVES[alg]())
    bare = SigningKey(key=private)
    check_algorithm(alg, bare)  # the fit is by construction; keep the one rule in one place
    key_id = kid.strip() if kid and kid.strip() else bare.thumbprint()
    certificate = _self_signed(
        private, common_name or f"backendauth {key_id[:16]}", valid_days, now
    )
    return GeneratedKey(
        signing_key=SigningKey(key=private, kid=key_id, named_alg=alg, certificate=certificate),
        algorithm=alg,
        kid=key_id,
    )


def merge_jwks(existing: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Add the keys of ``new`` to a published JWKS, for rotation (old and new side by side).

    A key already present under the same kid is kept once; a *different* key under a kid
    that is already taken is refused (servers pick keys by kid, so that would break one of
    them). Private members in the existing document are refused: it is meant to be public.

    Raises:
        KeyLoadError: ``existing`` is not a public JWKS, or a kid clashes.
    """
    if not isinstance(existing, dict) or not isinstance(existing.get("keys"), list):
        raise KeyLoadError('The file to merge into is not a JWKS (a JSON object with "keys").')
    keys = [k for k in existing["keys"] if isinstance(k, dict)]
    refuse_secret_members(keys, "The JWKS to merge into")
    refuse_secret_members(new["keys"], "The key to add")
    merged = list(keys)
    for key in new["keys"]:
        same_kid = [k for k in merged if k.get("kid") == key.get("kid")]
        if not same_kid:
            merged.append(key)
        elif _public_members(same_kid[0]) != _public_members(key):
            raise KeyLoadError(
                f"The JWKS already has a different key with kid {key.get('kid')!r}; give the "
                "new key another kid (--kid)."
            )
    return {**existing, "keys": merged}


# Every JWK member that is secret (RFC 7518 section 6: the RSA and EC private parts and the
# symmetric key value). A published key set holds none of them.
SECRET_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def refuse_secret_members(keys: list[Any], what: str) -> None:
    """Raise unless every JWK in ``keys`` is public (no member of ``SECRET_JWK_MEMBERS``).

    Refused rather than stripped: a secret in the document means the wrong file was named
    (the private JWKS, or a shared secret), which the user should see, not have repaired.

    Raises:
        KeyLoadError: naming the key (its kid) and the secret members, never their values.
    """
    for key in keys:
        if not isinstance(key, dict):
            continue
        found = [m for m in SECRET_JWK_MEMBERS if m in key]
        if found:
            raise KeyLoadError(
                f"{what} holds secret member(s) {', '.join(found)} in the key with kid "
                f"{key.get('kid')!r}: a published JWKS holds public keys only; use the public "
                "JWKS (keygen's jwks.json, or 'backendauth jwks' of the private key)."
            )


def _public_members(jwk: dict[str, Any]) -> str:
    members = ("kty", "n", "e", "crv", "x", "y")
    return json.dumps({m: jwk.get(m) for m in members}, sort_keys=True)


def _self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    common_name: str,
    valid_days: int,
    now: datetime.datetime | None,
) -> x509.Certificate:
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    # SHA-256 for every key type: certificate signatures are independent of the JWT algorithm.
    return builder.sign(key, hashes.SHA256())


__all__ = [
    "DEFAULT_RSA_BITS",
    "SECRET_JWK_MEMBERS",
    "GeneratedKey",
    "default_algorithm",
    "generate_key",
    "merge_jwks",
    "refuse_secret_members",
]
