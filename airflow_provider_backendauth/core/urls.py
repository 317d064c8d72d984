"""URL checks: HTTPS by default, and which origins may receive a bearer token."""

from __future__ import annotations

import ipaddress
from urllib.parse import urljoin, urlsplit

from airflow_provider_backendauth.core.errors import ConfigurationError, InsecureURLError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, *, allow_insecure_http: bool = False) -> str:
    """Validate an absolute http(s) URL; plain HTTP only for loopback or when allowed.

    Args:
        url: the URL to check.
        what: how to name it in an error ("token URL", "base URL").
        allow_insecure_http: the connection explicitly accepts plain HTTP.

    Returns:
        The URL, stripped of surrounding spaces.
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"The {what} {url!r} is not an absolute http(s) URL (expected something like "
            "'https://fhir.example.org/api/FHIR/R4')."
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigurationError(f"The {what} {url!r} has an invalid port.") from None
    if parts.scheme == "http" and not (allow_insecure_http or is_loopback_host(parts.hostname)):
        raise InsecureURLError(
            f"The {what} {url!r} uses plain HTTP. Tokens and health data must travel over "
            "HTTPS; use https://, or set the 'allow_insecure_http' extra if this is a "
            "deliberate test setup."
        )
    return url


def origin_of(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit, lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{host}:{port}"


def join_url(base: str, endpoint: str) -> str:
    """Join an endpoint to a base URL the way users mean it: relative to the base *path*.

    ``join_url("https://h/fhir", "Patient")`` is ``https://h/fhir/Patient`` (``urljoin`` would
    drop ``fhir``). Absolute endpoints are returned unchanged.
    """
    if urlsplit(endpoint).scheme:
        return endpoint
    if not endpoint:
        return base
    return urljoin(base.rstrip("/") + "/", endpoint.lstrip("/"))


def resolve_endpoint(base_url: str | None, endpoint: str, *, owner: str = "the connection") -> str:
    """The absolute URL for ``endpoint``: joined to ``base_url`` (``join_url`` rules), or
    ``endpoint`` itself when it is already absolute."""
    if "://" in endpoint:
        return endpoint
    if base_url is None:
        raise ConfigurationError(
            f"Endpoint {endpoint!r} is relative but {owner} has no base URL (host)."
        )
    return join_url(base_url, endpoint)
