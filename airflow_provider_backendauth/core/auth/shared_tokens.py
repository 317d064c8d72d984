"""Token caches shared per process: one ``TokenCache`` per client configuration.

Hooks built for the same connection in many tasks and threads of one worker share a token
instead of each asking the server for their own; ``BackendAuthClient`` names the
configuration by a fingerprint of everything that makes two clients' tokens interchangeable
(``client.py``). ``LazyTokens`` defers the lookup to the first token wanted, because finding
the cache may need discovery (the network), which building an HTTP helper, or the
triggerer's event loop, should not do. Limits: per process only; a cache is never evicted
(one per configuration, and a worker has few).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from airflow_provider_backendauth.core.auth.dpop import GENERATED_DPOP_KEYS
from airflow_provider_backendauth.core.auth.tokens import AccessToken, TokenCache

if TYPE_CHECKING:
    from airflow_provider_backendauth.core.auth.client import BackendAuthClient

_shared_caches: dict[str, TokenCache] = {}
_shared_caches_lock = threading.Lock()


def shared_token_cache(
    fingerprint: str, fetch: Callable[[], AccessToken], *, reuse: str
) -> TokenCache:
    """The process's cache for this configuration, made (renewing with ``fetch``) by the
    first client that asks."""
    with _shared_caches_lock:
        cache = _shared_caches.get(fingerprint)
        if cache is None:
            cache = TokenCache(fetch, reuse=reuse)
            _shared_caches[fingerprint] = cache
    return cache


def clear_token_caches() -> None:
    """Forget every cached token in this process, and the DPoP keys they were bound to
    (tests; rotating keys)."""
    with _shared_caches_lock:
        _shared_caches.clear()
    GENERATED_DPOP_KEYS.clear()


class LazyTokens:
    """``client.tokens``, resolved when a token is first needed."""

    def __init__(self, client: BackendAuthClient) -> None:
        self._client = client

    @property
    def renewal_key(self) -> Hashable:
        """Equal for every client of one connection configuration: an event loop renews
        their tokens on one thread (``core/http/renewal.py``), however many policies, one
        per request, and clients, one per trigger, are built over them."""
        return self._client.settings_digest

    def fresh(self) -> AccessToken | None:
        """The cached token if fresh, without the network or a lock: None until the cache
        was resolved (that may need discovery) or when it holds no fresh token."""
        cache = self._client._tokens
        return cache.fresh() if cache is not None else None

    def get(self) -> AccessToken:
        return self._client.tokens.get()

    def invalidate(self, value: str | None = None) -> None:
        self._client.tokens.invalidate(value)
