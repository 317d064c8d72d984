"""SMART discovery: find the token endpoint from ``{base}/.well-known/smart-configuration``.

The document decides where the client assertion goes, so its request is confined: redirects
are followed only within the base URL's origin and the connection's allowed origins (never
HTTPS -> HTTP, at most a few hops: ``core/http/redirects.py``), and the answer is read within
``MAX_DISCOVERY_BYTES`` (decoded) and parsed with ``parse_json`` (deep nesting is refused).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests

from airflow_provider_backendauth.core.auth.cache import CacheInfo, SingleFlightCache
from airflow_provider_backendauth.core.errors import BackendAuthError, DiscoveryError
from airflow_provider_backendauth.core.http.bodies import MAX_DISCOVERY_BYTES, parse_json
from airflow_provider_backendauth.core.http.requests_auth import get_confined
from airflow_provider_backendauth.core.http.sessions import plain_session
from airflow_provider_backendauth.core.network import describe_network_error
from airflow_provider_backendauth.core.urls import join_url, origin_of


@dataclass(frozen=True)
class SmartConfiguration:
    """The parts of a SMART configuration document this client uses."""

    token_endpoint: str
    signing_algorithms: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    issuer: str | None = None

    @classmethod
    def from_document(
        cls, document: dict[str, Any], source_url: str, base_url: str
    ) -> SmartConfiguration:
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise DiscoveryError(
                f"{source_url} has no 'token_endpoint'; set the connection's 'auth_url' extra."
            )

        def strings(name: str) -> tuple[str, ...]:
            value = document.get(name) or ()
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        return cls(
            # SMART: relative endpoint URLs resolve against the FHIR base URL.
            token_endpoint=join_url(base_url, endpoint),
            signing_algorithms=strings("token_endpoint_auth_signing_alg_values_supported"),
            scopes_supported=strings("scopes_supported"),
            capabilities=strings("capabilities"),
            issuer=document.get("issuer") if isinstance(document.get("issuer"), str) else None,
        )


def discover(
    base_url: str,
    *,
    path: str = ".well-known/smart-configuration",
    session: requests.Session | None = None,
    timeout: float = 30.0,
    allowed_origins: Iterable[str] = (),
) -> SmartConfiguration:
    """Fetch (once per process and base URL) the server's discovery document.

    Single flight: threads asking at the same time for a document not yet cached wait for
    one request and share its answer, or its error (a failure is not cached).

    Args:
        allowed_origins: origins besides the base URL's that a redirect may lead to.
    """
    url = join_url(base_url, path)
    origins = frozenset({origin_of(base_url), *allowed_origins})
    return _cache.get(
        (url, base_url, origins),
        lambda: _fetch(url, base_url, session=session, timeout=timeout, origins=origins),
    )


def _fetch(
    url: str,
    base_url: str,
    *,
    session: requests.Session | None,
    timeout: float,
    origins: frozenset[str],
) -> SmartConfiguration:
    try:
        response, body = get_confined(
            session or plain_session(),
            url,
            origins,
            timeout=timeout,
            max_bytes=MAX_DISCOVERY_BYTES,
            what="SMART discovery",
            error=DiscoveryError,
        )
    except BackendAuthError as exc:
        raise DiscoveryError(
            f"Could not use {url} to discover the token URL: {exc} Set the connection's "
            "'auth_url' extra to the token URL instead."
        ) from None
    except requests.RequestException as exc:
        raise DiscoveryError(
            f"Could not fetch {url} to discover the token URL: {describe_network_error(exc)}. "
            "Check the base URL, or set the 'auth_url' extra."
        ) from None
    if response.status_code != 200:
        raise DiscoveryError(
            f"{url} answered HTTP {response.status_code}; the server may not support SMART "
            "discovery. Set the connection's 'auth_url' extra."
        )
    try:
        document = parse_json(body)
    except ValueError as exc:
        raise DiscoveryError(
            f"{url} did not return usable JSON ({exc}); set the 'auth_url' extra."
        ) from None
    if not isinstance(document, dict):
        raise DiscoveryError(f"{url} did not return a JSON object; set the 'auth_url' extra.")
    return SmartConfiguration.from_document(document, url, base_url)


# Per process, keyed by the document's URL and the base URL relative endpoints resolve
# against.
_cache: SingleFlightCache[SmartConfiguration] = SingleFlightCache(maxsize=256)


def discovery_cache_info() -> CacheInfo:
    return _cache.info()


def clear_discovery_cache() -> None:
    _cache.clear()
