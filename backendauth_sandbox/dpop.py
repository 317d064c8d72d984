"""DPoP (RFC 9449): proof verification, server nonces and the proof ``jti`` replay cache.

A DPoP proof is a JWS the client signs with a key of its own, sent in the ``DPoP`` header of
the token request (binding the token to that key: ``cnf.jkt``) and of every resource request
(proving possession of the key the token is bound to). Verified here with jwcrypto, like the
client assertions, never with the client's code. Checked, in RFC 9449 section 4.3 order:
one ``DPoP`` header; a compact JWS with ``typ: dpop+jwt``, an asymmetric ``alg`` that fits a
public ``jwk`` (no private members); the signature; ``jti``; ``htm`` = the method; ``htu`` =
the request URI without query or fragment (a proof whose ``htu`` carries either is refused:
stricter than the RFC's "ignoring", so a client that sends them is caught); ``iat`` within
``dpop_proof_max_age`` (and not beyond the clock skew in the future); the server nonce when
``dpop_nonce`` is on; ``ath`` = base64url(SHA-256(access token)) at resources; and the ``jti``
not seen before for that key.

Nonces: one current nonce for the whole sandbox (the token endpoint and the FHIR endpoints
share an origin, as the client remembers nonces per origin). ``dpop_nonce_rotate_after``
proofs accepted with a nonce retire it: the answer that retires it carries the next one in
``DPoP-Nonce``, and the old one is refused with ``use_dpop_nonce`` from then on.
``rotate_nonce()`` retires it without telling anyone, as a server restart would.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from jwcrypto import jwk, jws

from .httpd import Request
from .settings import SandboxSettings
from .stats import Stats
from .tokens import JtiCache
from .vendor_rules import ASYMMETRIC_ALGS

PROOF_TYPE = "dpop+jwt"
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DpopRejected(Exception):
    """A proof was refused. ``error`` is ``invalid_dpop_proof`` or ``use_dpop_nonce``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """The ``ath`` a proof must carry for ``token`` (RFC 9449 section 4.2)."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


def _normalised(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path or "/"


class DpopVerifier:
    """Verifies proofs for the token endpoint and the resource endpoints of one sandbox."""

    def __init__(self, settings: SandboxSettings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.jtis = JtiCache()
        self._lock = threading.Lock()
        self._nonce = secrets.token_urlsafe(16)
        self._nonce_uses = 0

    # --- nonces ---------------------------------------------------------------------------

    @property
    def nonce(self) -> str:
        """The nonce a proof must carry now (when ``dpop_nonce`` is on)."""
        with self._lock:
            return self._nonce

    def rotate_nonce(self) -> str:
        """Retire the current nonce at once; proofs carrying it get ``use_dpop_nonce``."""
        with self._lock:
            self._nonce = secrets.token_urlsafe(16)
            self._nonce_uses = 0
            self.stats.incr("dpop_nonces_rotated")
            return self._nonce

    def _spend_nonce(self, nonce: Any) -> None:
        with self._lock:
            if nonce is None:
                raise DpopRejected("use_dpop_nonce", "a DPoP nonce is required: use DPoP-Nonce")
            if nonce != self._nonce:
                raise DpopRejected("use_dpop_nonce", "the DPoP nonce is stale: use DPoP-Nonce")
            self._nonce_uses += 1
            limit = self.settings.dpop_nonce_rotate_after
            if limit is not None and self._nonce_uses >= limit:
                self._nonce = secrets.token_urlsafe(16)
                self._nonce_uses = 0
                self.stats.incr("dpop_nonces_rotated")

    # --- proofs ---------------------------------------------------------------------------

    def verify(self, request: Request, access_token: str | None = None) -> str:
        """Check the request's proof; return the proof key's RFC 7638 thumbprint (``jkt``).

        Args:
            access_token: the token the request presents (resource requests): ``ath`` must
                be its hash. None at the token endpoint, where ``ath`` must be absent.

        Raises:
            DpopRejected: with the reason, in words a test can match.
        """
        try:
            jkt = self._verify(request, access_token)
        except DpopRejected as rejected:
            name = "dpop_nonce_challenges" if rejected.error == "use_dpop_nonce" else None
            self.stats.dpop_failure(rejected.error, rejected.description, name)
            raise
        self.stats.incr("dpop_proofs_accepted")
        return jkt

    def _verify(self, request: Request, access_token: str | None) -> str:
        values = request.headers.get_all("DPoP") or []
        if len(values) != 1:
            raise DpopRejected(
                "invalid_dpop_proof",
                "DPoP proof JWT not provided"
                if not values
                else "more than one DPoP header (send exactly one proof)",
            )
        proof = str(values[0]).strip()
        header, claims = self._signed_parts(proof)
        self._check_claims(request, claims, access_token)
        jkt = jkt_of(header)
        if self.settings.dpop_nonce:
            self._spend_nonce(claims.get("nonce"))
        keep_until = float(claims["iat"]) + self.settings.dpop_proof_max_age
        if not self.jtis.use(jkt, str(claims["jti"]), keep_until):
            raise DpopRejected("invalid_dpop_proof", f"proof jti '{claims['jti']}' was replayed")
        return jkt

    def _signed_parts(self, proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
        parts = proof.split(".")
        if len(parts) != 3:
            raise DpopRejected("invalid_dpop_proof", "the DPoP proof is not a compact JWS")
        try:
            header = json.loads(_b64decode(parts[0]))
        except (ValueError, binascii.Error):
            raise DpopRejected("invalid_dpop_proof", "the proof header is not JSON") from None
        if not isinstance(header, dict):
            raise DpopRejected("invalid_dpop_proof", "the proof header is not a JSON object")
        if header.get("typ") != PROOF_TYPE:
            raise DpopRejected(
                "invalid_dpop_proof", f"proof typ must be '{PROOF_TYPE}', got {header.get('typ')!r}"
            )
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGS:
            raise DpopRejected(
                "invalid_dpop_proof", f"proof alg {alg!r} is not an asymmetric JWS algorithm"
            )
        key = _public_key(header.get("jwk"), str(alg))
        token = jws.JWS()
        token.allowed_algs = [str(alg)]
        try:
            token.deserialize(proof)
            token.verify(key, alg=str(alg))
            claims = json.loads(token.payload)
        except Exception:
            raise DpopRejected(
                "invalid_dpop_proof", "the proof signature does not verify with its jwk"
            ) from None
        if not isinstance(claims, dict):
            raise DpopRejected("invalid_dpop_proof", "the proof claims are not a JSON object")
        return header, claims

    def _check_claims(
        self, request: Request, claims: dict[str, Any], access_token: str | None
    ) -> None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise DpopRejected("invalid_dpop_proof", "the proof has no usable 'jti'")
        if claims.get("htm") != request.method:
            raise DpopRejected(
                "invalid_dpop_proof",
                f"proof htm {claims.get('htm')!r} is not the request method {request.method}",
            )
        htu = claims.get("htu")
        if not isinstance(htu, str):
            raise DpopRejected("invalid_dpop_proof", "the proof has no 'htu'")
        if "?" in htu or "#" in htu:
            raise DpopRejected("invalid_dpop_proof", "proof htu must not carry a query or fragment")
        targets = {request.base_url + request.path}
        host = request.header("Host")
        if host:
            targets.add(f"{urlsplit(request.base_url).scheme}://{host}{request.path}")
        if _normalised(htu) not in {_normalised(t) for t in targets}:
            raise DpopRejected(
                "invalid_dpop_proof",
                f"proof htu {htu!r} is not this request's URI ({request.base_url}{request.path})",
            )
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise DpopRejected("invalid_dpop_proof", "the proof has no numeric 'iat'")
        now = time.time()
        if iat > now + self.settings.clock_skew_seconds:
            raise DpopRejected("invalid_dpop_proof", f"proof iat is {int(iat - now)} s ahead")
        if now - iat > self.settings.dpop_proof_max_age:
            raise DpopRejected(
                "invalid_dpop_proof",
                f"the proof is {int(now - iat)} s old (at most "
                f"{self.settings.dpop_proof_max_age} s: sign a fresh proof per request)",
            )
        ath = claims.get("ath")
        if access_token is None:
            if ath is not None:
                raise DpopRejected("invalid_dpop_proof", "ath is for resource requests only")
        elif ath != access_token_hash(access_token):
            raise DpopRejected(
                "invalid_dpop_proof",
                "proof ath is missing or is not the hash of the presented access token",
            )


def jkt_of(header: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of a (checked) proof header's ``jwk``."""
    return str(jwk.JWK(**header["jwk"]).thumbprint())


def _public_key(value: Any, alg: str) -> jwk.JWK:
    if not isinstance(value, dict):
        raise DpopRejected("invalid_dpop_proof", "the proof header has no 'jwk' object")
    secret = [m for m in _PRIVATE_MEMBERS if m in value]
    if secret:
        raise DpopRejected(
            "invalid_dpop_proof", f"the proof jwk holds private member(s) {', '.join(secret)}"
        )
    try:
        key = jwk.JWK(**value)
    except Exception:
        raise DpopRejected("invalid_dpop_proof", "the proof jwk is not a valid JWK") from None
    kty = key.get("kty")
    fits = (
        kty == "RSA"
        if alg.startswith(("RS", "PS"))
        else (kty == "EC" and key.get("crv") == _EC_CURVES.get(alg))
    )
    if not fits:
        raise DpopRejected("invalid_dpop_proof", f"proof alg {alg} does not fit its {kty} jwk")
    return key
