"""Registered clients: their public keys (as jwcrypto JWKs) and the vendor rules they follow."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jwcrypto import jwk

from .vendor_rules import ASYMMETRIC_ALGS, VENDORS, VendorRules

DPOP_MODES = ("allow", "require")
KeyMaterial = Any  # JWKS/JWK dict, list of JWK dicts, PEM or JSON text/bytes, jwcrypto objects


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_public_keys(material: KeyMaterial) -> list[jwk.JWK]:
    """Turn whatever the caller has into public jwcrypto keys (private parts are dropped)."""
    keys: list[jwk.JWK]
    if isinstance(material, jwk.JWKSet):
        keys = list(material["keys"])
    elif isinstance(material, jwk.JWK):
        keys = [material]
    elif isinstance(material, bytes | str):
        text = material.decode("utf-8") if isinstance(material, bytes) else material
        if text.lstrip().startswith("{") or text.lstrip().startswith("["):
            return load_public_keys(json.loads(text))
        keys = [jwk.JWK.from_pem(text.encode("utf-8"))]
    elif isinstance(material, dict) and "keys" in material:
        keys = [jwk.JWK(**k) for k in material["keys"]]
    elif isinstance(material, dict):
        keys = [jwk.JWK(**material)]
    elif isinstance(material, list):
        keys = [k for item in material for k in load_public_keys(item)]
    else:
        raise TypeError(f"cannot load public keys from {type(material).__name__}")
    public: list[jwk.JWK] = []
    for key in keys:
        if key.get("kty") not in ("RSA", "EC"):
            raise ValueError("only RSA and EC public keys can be registered")
        exported = json.loads(key.export_public()) if key.has_private else dict(key)
        # export_public() drops non-key members such as kid/x5c on some versions; restore them.
        for member in ("kid", "alg", "use", "x5c", "x5t", "x5t#S256"):
            if member in key and member not in exported:
                exported[member] = key.get(member)
        public.append(jwk.JWK(**exported))
    if not public:
        raise ValueError("no keys given")
    return public


def certificate_thumbprints(key: jwk.JWK) -> set[str]:
    """Every ``x5t``/``x5t#S256`` value that identifies this key's certificate."""
    found: set[str] = set()
    for member in ("x5t", "x5t#S256"):
        value = key.get(member)
        if isinstance(value, str):
            found.add(value)
    chain = key.get("x5c")
    if isinstance(chain, list) and chain:
        der = base64.b64decode(chain[0])
        found.add(_b64url(hashlib.sha1(der).digest()))  # noqa: S324 - x5t is SHA-1 by definition
        found.add(_b64url(hashlib.sha256(der).digest()))
    return found


@dataclass
class ClientRegistration:
    """One client the token endpoint knows."""

    client_id: str
    keys: list[jwk.JWK]
    rules: VendorRules
    algorithms: tuple[str, ...]
    scopes: tuple[str, ...] | None = None
    jku: str | None = None
    token_requests_per_minute: int | None = None
    # DPoP (RFC 9449): "allow" binds the token when the request carries a proof, "require"
    # refuses a token request without one.
    dpop: str = "allow"
    _token_times: list[float] = field(default_factory=list, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "vendor": self.rules.name,
            "algorithms": list(self.algorithms),
            "scopes": None if self.scopes is None else list(self.scopes),
            "kids": [k.get("kid") for k in self.keys],
            "jku": self.jku,
            "token_requests_per_minute": self.token_requests_per_minute,
            "dpop": self.dpop,
        }


def make_registration(
    client_id: str,
    public_jwks: KeyMaterial,
    vendor: str = "smart",
    algorithms: Iterable[str] | None = None,
    scopes: Iterable[str] | str | None = None,
    jku: str | None = None,
    token_requests_per_minute: int | None = -1,
    dpop: str = "allow",
) -> ClientRegistration:
    """Validate the arguments of ``Sandbox.register_client`` and build the registration."""
    if not client_id:
        raise ValueError("client_id must not be empty")
    if dpop not in DPOP_MODES:
        raise ValueError(f"dpop must be one of {', '.join(DPOP_MODES)}, not {dpop!r}")
    try:
        rules = VENDORS[vendor]
    except KeyError:
        raise ValueError(
            f"unknown vendor '{vendor}'; choose one of {', '.join(sorted(VENDORS))}"
        ) from None
    algs = rules.algorithms if algorithms is None else tuple(algorithms)
    bad = [a for a in algs if a not in ASYMMETRIC_ALGS]
    if bad or not algs:
        raise ValueError(
            f"algorithms must be a non-empty subset of {', '.join(ASYMMETRIC_ALGS)}; "
            "'none' and HS* are never accepted"
        )
    scope_tuple = (
        tuple(scopes.split())
        if isinstance(scopes, str)
        else (None if scopes is None else tuple(scopes))
    )
    limit = (
        rules.token_requests_per_minute
        if token_requests_per_minute == -1
        else (token_requests_per_minute)
    )
    return ClientRegistration(
        client_id=client_id,
        keys=load_public_keys(public_jwks),
        rules=rules,
        algorithms=algs,
        scopes=scope_tuple,
        jku=jku,
        token_requests_per_minute=limit,
        dpop=dpop,
    )


class ClientRegistry:
    """Thread-safe map client_id -> registration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, ClientRegistration] = {}

    def add(self, registration: ClientRegistration) -> None:
        with self._lock:
            self._clients[registration.client_id] = registration

    def remove(self, client_id: str) -> bool:
        with self._lock:
            return self._clients.pop(client_id, None) is not None

    def get(self, client_id: str) -> ClientRegistration | None:
        with self._lock:
            return self._clients.get(client_id)

    def all(self) -> list[ClientRegistration]:
        with self._lock:
            return list(self._clients.values())

    def allow_token_request(self, registration: ClientRegistration, now: float) -> float | None:
        """Apply the client's per-minute token quota; return seconds to wait when over it."""
        limit = registration.token_requests_per_minute
        if limit is None:
            return None
        with self._lock:
            times = [t for t in registration._token_times if now - t < 60.0]
            if len(times) >= limit:
                registration._token_times = times
                return max(0.0, 60.0 - (now - times[0]))
            times.append(now)
            registration._token_times = times
            return None
