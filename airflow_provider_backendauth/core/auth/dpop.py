"""DPoP (RFC 9449): the client's proof-of-possession key, its proofs, and server nonces.

A DPoP-bound access token is useless without the private key it is bound to: each request
carries ``Authorization: DPoP <token>`` and a ``DPoP`` header, a JWT signed with that key for
this one request (``htm``/``htu``), at this time (``iat``), once (``jti``), for this token
(``ath``), and, when the server asks, with its nonce. So a token copied from a log, a proxy or
a hostile server that received it is refused elsewhere.

Guarantees:
- the DPoP key is never the assertion key: by default a fresh EC P-256 key per process and
  connection (``DpopKeys``), or the key file the connection names (``dpop_key_file``);
- ``htu`` is the request URL without query and fragment (RFC 9449 section 4.2), so a proof
  never carries search parameters (PHI) and matches what the server compares;
- each proof has a fresh random ``jti`` and the current time; nonces are remembered per origin
  (``scheme://host:port``), never sent to another origin.

Limits: proofs are signed with ES256 (P-256) or, for a configured key, the algorithm that fits
it (ES384/ES512 for those curves, PS256 for RSA). Nothing here touches the network: the token
exchange (``tokens.py``) and the transport's policy (``core/http/policy.py``) decide when a
proof is sent and read the nonces servers answer with.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow_provider_backendauth.core.urls import parse_url

if TYPE_CHECKING:  # the key machinery (cryptography) loads only when a proof is made
    from airflow_provider_backendauth.core.auth.keys import SigningKey

DpopMode = Literal["off", "on", "auto"]
DPOP_MODES: tuple[DpopMode, ...] = ("off", "on", "auto")
PROOF_TYPE = "dpop+jwt"
# OAuth error codes a server answers when it wants (another) proof (RFC 9449 sections 5, 8).
DPOP_ERRORS = frozenset({"invalid_dpop_proof", "use_dpop_nonce"})
# Server nonces are opaque strings; refuse anything that could break a JSON claim or a log.
_MAX_NONCE_LENGTH = 512
_ALG_FOR_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def access_token_hash(token: str) -> str:
    """``ath``: base64url(SHA-256(ASCII token)) (RFC 9449 section 4.2)."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def proof_target(url: str) -> str:
    """The ``htu`` for ``url``: scheme, authority and path, no query or fragment (the URL is
    checked as unambiguous first, so this split reads it as the HTTP client does)."""
    parse_url(url, "request URL")
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}"


class DpopProofs:
    """Signs DPoP proofs with one key and remembers server nonces per origin (thread-safe).

    Args:
        key: the proof key (never the client assertion key unless the user configured so).
    """

    def __init__(self, key: SigningKey) -> None:
        from airflow_provider_backendauth.core.auth.keys import check_algorithm

        self.key = key
        if key.kty == "EC":
            self.algorithm = _ALG_FOR_CURVE[key.curve or ""]
        else:
            self.algorithm = check_algorithm(key.named_alg or "PS256", key)
        self.thumbprint = key.thumbprint()
        # Set when a token endpoint asked for DPoP ("auto" mode): every client of this
        # connection in the process sends proofs from then on, not each after a refusal.
        self.server_asked = False
        self._jwk = key.public_jwk()
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DpopProofs({self.algorithm}, jkt={self.thumbprint[:12]}...)"

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        """A fresh proof for one request (with the origin's nonce when one is known)."""
        import jwt  # local: pyjwt + cryptography are not needed to import this module

        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": proof_target(url),
            "iat": int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        nonce = self.nonce_for(url)
        if nonce is not None:
            claims["nonce"] = nonce
        header = {"typ": PROOF_TYPE, "jwk": self._jwk}
        return jwt.encode(claims, self.key.key, algorithm=self.algorithm, headers=header)

    def nonce_for(self, url: str) -> str | None:
        with self._lock:
            return self._nonces.get(parse_url(url, "request URL").origin)

    def remember_nonce(self, url: str, nonce: str | None) -> bool:
        """Remember a ``DPoP-Nonce`` the server at ``url``'s origin sent; True when it is new.
        A value that is not a short visible-ASCII string is ignored (it is server data)."""
        if not nonce or len(nonce) > _MAX_NONCE_LENGTH or not _visible_ascii(nonce):
            return False
        origin = parse_url(url, "request URL").origin
        with self._lock:
            new = self._nonces.get(origin) != nonce
            self._nonces[origin] = nonce
            return new


def _visible_ascii(text: str) -> bool:
    return all("\x21" <= ch <= "\x7e" for ch in text)


class DpopKeys:
    """One fresh EC P-256 proof key per process and connection, made on first use.

    Keyed by the connection's fingerprint (its token URL, client id, assertion key...): every
    hook and client built for one connection in a process shares the key, and with it the
    DPoP-bound token the shared token cache holds.
    """

    def __init__(self) -> None:
        self._keys: dict[str, DpopProofs] = {}
        self._lock = threading.Lock()

    def for_connection(self, fingerprint: str) -> DpopProofs:
        from cryptography.hazmat.primitives.asymmetric import ec

        from airflow_provider_backendauth.core.auth.keys import SigningKey

        with self._lock:
            proofs = self._keys.get(fingerprint)
            if proofs is None:
                proofs = DpopProofs(SigningKey(key=ec.generate_private_key(ec.SECP256R1())))
                self._keys[fingerprint] = proofs
            return proofs

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


GENERATED_DPOP_KEYS = DpopKeys()
