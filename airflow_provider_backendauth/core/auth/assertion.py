"""Signed JWT client assertions (RFC 7523 ``private_key_jwt``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_backendauth.core.auth.keys import SigningKey, check_algorithm
from airflow_provider_backendauth.core.errors import ConfigurationError

_RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "jti"})


@dataclass(frozen=True)
class AssertionSpec:
    """Everything that goes into one client assertion, except the time and the jti.

    Attributes:
        client_id: becomes ``iss`` and ``sub``.
        audience: the ``aud`` claim.
        algorithm: checked against the key on construction.
        lifetime: seconds until ``exp``.
        typ: header ``typ`` or None to omit it.
        kid, jku, x5t, x5t_s256: optional header members.
        x5c: the certificate chain (base64 DER, leaf first) for the ``x5c`` header.
        include_iat, include_nbf: add those claims.
        extra_claims: added as given; may not replace iss/sub/aud/exp/jti.
    """

    client_id: str
    audience: str
    algorithm: str
    lifetime: int = 300
    typ: str | None = "JWT"
    kid: str | None = None
    jku: str | None = None
    x5t: str | None = None
    x5t_s256: str | None = None
    x5c: tuple[str, ...] = ()
    include_iat: bool = True
    include_nbf: bool = False
    extra_claims: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ConfigurationError("No client id: set the connection's Client ID (login) field.")
        if self.lifetime <= 0:
            raise ConfigurationError("The assertion lifetime must be a positive number of seconds.")
        clash = _RESERVED_CLAIMS & set(self.extra_claims)
        if clash:
            raise ConfigurationError(
                f"extra_claims may not set {', '.join(sorted(clash))}: those come from the "
                "client id, audience and lifetime settings."
            )

    def headers(self) -> dict[str, Any]:
        header: dict[str, Any] = {"typ": self.typ}
        for name, value in (
            ("kid", self.kid),
            ("jku", self.jku),
            ("x5t", self.x5t),
            ("x5t#S256", self.x5t_s256),
        ):
            if value:
                header[name] = value
        if self.x5c:
            header["x5c"] = list(self.x5c)
        return header


class ClientAssertionSigner:
    """Signs a fresh assertion each call: new ``jti``, new ``exp``, same spec and key."""

    def __init__(self, key: SigningKey, spec: AssertionSpec) -> None:
        self._key = key
        self.spec = spec
        self.algorithm = check_algorithm(spec.algorithm, key)

    def __repr__(self) -> str:
        key = self._key.describe()
        return f"ClientAssertionSigner({self.spec.client_id!r}, {self.algorithm}, {key})"

    def sign(self, now: float | None = None) -> str:
        import jwt  # local: pyjwt + cryptography backends are not needed for DAG parsing

        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = dict(self.spec.extra_claims)
        claims.update(
            iss=self.spec.client_id,
            sub=self.spec.client_id,
            aud=self.spec.audience,
            exp=issued + self.spec.lifetime,
            jti=secrets.token_urlsafe(24),
        )
        if self.spec.include_iat:
            claims["iat"] = issued
        if self.spec.include_nbf:
            claims["nbf"] = issued
        return jwt.encode(
            claims, self._key.key, algorithm=self.algorithm, headers=self.spec.headers()
        )
