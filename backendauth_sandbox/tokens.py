"""Issued access tokens (Bearer, or DPoP-bound to a key thumbprint) and the ``jti`` replay
cache."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

_PURGE_EVERY = 1000


@dataclass
class AccessToken:
    value: str
    client_id: str
    scope: str
    issued_at: float
    expires_at: float
    used: bool = False
    # The RFC 7638 thumbprint of the DPoP key the token is bound to (its cnf.jkt), or None
    # for a Bearer token.
    jkt: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


class TokenStore:
    """Opaque bearer tokens, remembered with client, scope and expiry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, AccessToken] = {}
        self._issued = 0

    def issue(
        self, client_id: str, scope: str, lifetime: float, jkt: str | None = None
    ) -> AccessToken:
        now = time.time()
        token = AccessToken(
            secrets.token_urlsafe(32), client_id, scope, now, now + lifetime, jkt=jkt
        )
        with self._lock:
            self._tokens[token.value] = token
            self._issued += 1
            if self._issued % _PURGE_EVERY == 0:
                # Keep expired tokens for an hour so a late use is reported as "expired".
                cutoff = now - 3600
                self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > cutoff}
        return token

    def check(self, value: str | None, *, consume: bool = False) -> tuple[AccessToken | None, str]:
        """Return (token, "") when valid, else (None or the expired token, reason).

        ``consume``: the API accepts each token once (HelseID's CPPA API): a second use is
        refused like an expired token.
        """
        if not value:
            return None, "no bearer token in the Authorization header"
        with self._lock:
            token = self._tokens.get(value)
            if token is None:
                return None, "unknown access token"
            if token.expired():
                return token, "access token expired"
            if consume:
                if token.used:
                    return token, "access token already used (this API accepts each token once)"
                token.used = True
        return token, ""

    def expire_all(self) -> int:
        now = time.time()
        with self._lock:
            count = 0
            for token in self._tokens.values():
                if token.expires_at > now:
                    token.expires_at = now
                    count += 1
            return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


class JtiCache:
    """Remembers (client, jti) until the assertion could no longer be accepted anyway."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}

    def use(self, client_id: str, jti: str, keep_until: float) -> bool:
        """Record a jti; False if it was already used and is still remembered."""
        now = time.time()
        key = (client_id, jti)
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            until = self._seen.get(key)
            if until is not None and until > now:
                return False
            self._seen[key] = keep_until
            return True
