"""The one URL model: HTTPS rules, origins, and which URLs the provider refuses to follow.

Every origin decision (may this URL receive the bearer token? is this ``next`` link, manifest
file URL, redirect ``Location`` or ``Content-Location`` on an allowed server?) goes through
``parse_url``. The danger it closes: two URL parsers reading one string differently. For
``http://127.0.0.1:OTHER\\@127.0.0.1:GOOD/`` ``urllib.parse`` sees host GOOD (with a
user-info part), while urllib3, which requests uses to *connect*, sees host OTHER. An origin
check done with the first and a connection made with the second sends the token to OTHER.

So a URL is accepted only when it is unambiguous: no backslash, whitespace or control
character anywhere, no user info (``@``) and no percent-encoding in the authority, a plain
host (letters, digits, ``.``, ``-``, ``_``; or an IP literal) and a numeric port; and then
urllib, urllib3 (requests, on the workers) and yarl (aiohttp, in the triggerer) must all
agree on its scheme, host and port. Anything else is refused, never "cleaned up": a
legitimate server has no reason to send such URLs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

from airflow_provider_backendauth.core.errors import (
    BackendAuthError,
    ConfigurationError,
    InsecureURLError,
    UnsafeURLError,
)

DEFAULT_PORTS = {"http": 80, "https": 443}

# Backslash, whitespace, C0 controls and DEL: parsers disagree on all of them (WHATWG turns
# "\" into "/", RFC 3986 parsers keep it; some strip tabs/newlines, others stop there).
_AMBIGUOUS_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_SPLIT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.S
)
_REG_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PORT = re.compile(r"[0-9]{1,5}")
# A URL every parser splits alike: http(s), a host of letters, digits, dots and hyphens whose
# last label starts with a letter (so no parser reads it as an IPv4 number) or a dotted-quad,
# an optional port, then printable ASCII without a backslash. The authority ends at the first
# '/', '?' or '#' for all of them; see _parsers_disagree.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_URL = re.compile(
    r"(?i:https?)://(?:(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*"
    rf"|(?:{_OCTET}\.){{3}}{_OCTET})"
    r"(?::[0-9]{1,5})?(?:[/?#][!-\[\]-~]*)?"
)


@dataclass(frozen=True)
class URL:
    """An absolute http(s) URL that every parser reads the same way.

    Attributes:
        url: the URL as given (already known to be unambiguous).
        scheme: ``http`` or ``https``.
        host: lower-cased host; IPv6 literals without brackets.
        port: the port, the scheme's default made explicit.
    """

    url: str
    scheme: str
    host: str
    port: int

    @property
    def origin(self) -> str:
        """``scheme://host:port``: what token decisions compare."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def _refuse(error: type[BackendAuthError], what: str, url: str, why: str) -> BackendAuthError:
    return error(f"The {what} {display_url(url)!r} is refused: {why}.")


def parse_url(
    url: str, what: str = "URL", *, error: type[BackendAuthError] = UnsafeURLError
) -> URL:
    """Parse an absolute http(s) URL, refusing any that two parsers could read differently.

    Args:
        url: the URL.
        what: how to name it in the error ("next link", "redirect target", "base URL").
        error: the exception class to raise (configuration values use
            ``ConfigurationError``; URLs a server sent use ``UnsafeURLError``).

    Raises:
        error: the URL is not absolute http(s), or is ambiguous (see the module docstring).
    """
    if not isinstance(url, str):
        raise error(f"The {what} is not a string ({type(url).__name__}).")
    if _AMBIGUOUS_CHARS.search(url):
        raise _refuse(error, what, url, "it contains a backslash, whitespace or control character")
    match = _SPLIT.fullmatch(url)
    if match is None:
        raise _refuse(error, what, url, "it is not an absolute http(s) URL")
    scheme = match["scheme"].lower()
    authority = match["authority"]
    if scheme not in DEFAULT_PORTS:
        raise _refuse(error, what, url, "it is not an absolute http(s) URL")
    if "@" in authority:
        raise _refuse(error, what, url, "it carries user info ('@' before the host)")
    if "%" in authority:
        raise _refuse(error, what, url, "its host is percent-encoded")
    if not authority.isascii():
        raise _refuse(error, what, url, "its host is not ASCII (use the IDNA 'xn--' form)")
    host, port_text = _split_authority(authority)
    if host is None:
        raise _refuse(error, what, url, "it has no valid host")
    if port_text is None or port_text == "":
        port = DEFAULT_PORTS[scheme]
    elif _PORT.fullmatch(port_text) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise _refuse(error, what, url, "its port is not a number from 1 to 65535")
    parsed = URL(url=url, scheme=scheme, host=host, port=port)
    disagreement = _parsers_disagree(parsed)
    if disagreement:
        raise _refuse(error, what, url, f"URL parsers read it differently ({disagreement})")
    return parsed


def _split_authority(authority: str) -> tuple[str | None, str | None]:
    """(host, port text) of an authority without user info; host None when invalid."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None, None
        literal, after = authority[1:end], authority[end + 1 :]
        if after and not after.startswith(":"):
            return None, None
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            return None, None
        return address.compressed, (after[1:] if after else None)
    host, colon, port = authority.partition(":")
    if not host or not _REG_NAME.fullmatch(host) or ":" in port:
        return None, None
    return host.lower(), (port if colon else None)


def _parsers_disagree(parsed: URL) -> str | None:
    """Which HTTP stack would connect elsewhere than ``parsed`` says, if any."""
    if _PLAIN_URL.fullmatch(parsed.url):
        # Nothing here for parsers to disagree on; skipping three re-parses saves ~0.2 ms
        # per call, which FHIR paging pays twice a page (next link, token decision).
        return None
    return _stacks_disagree(parsed)


def _stacks_disagree(parsed: URL) -> str | None:
    """``_parsers_disagree`` without the fast path: asks every parser."""
    reads: dict[str, tuple[str, str, int]] = {}
    split = urlsplit(parsed.url)
    try:
        reads["urllib"] = (split.scheme.lower(), (split.hostname or ""), split.port or 0)
    except ValueError:
        return "urllib: invalid port"
    try:
        from urllib3.util import parse_url as urllib3_parse  # what requests connects with

        u3 = urllib3_parse(parsed.url)
        reads["urllib3"] = (
            (u3.scheme or "").lower(),
            (u3.host or "").strip("[]").lower(),
            u3.port or 0,
        )
    except Exception as exc:  # LocationParseError and friends
        return f"urllib3: {type(exc).__name__}"
    try:
        from yarl import URL as YarlURL  # what the triggerer connects with (aiohttp)

        # As the triggerer sends it: encoded=True, the string taken as it is.
        yu = YarlURL(parsed.url, encoded=True)
        reads["yarl"] = ((yu.scheme or "").lower(), (yu.host or "").lower(), yu.port or 0)
    except Exception as exc:  # ValueError and friends
        return f"yarl: {type(exc).__name__}"
    for name, (scheme, host, port) in reads.items():
        with contextlib.suppress(ValueError):
            host = ipaddress.ip_address(host).compressed
        if (scheme, host, port or DEFAULT_PORTS.get(scheme, 0)) != (
            parsed.scheme,
            parsed.host,
            parsed.port,
        ):
            return f"{name} sees {scheme}://{host}:{port}"
    return None


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal. ``*.localhost`` names are *not* loopback here:
    whether they resolve to 127.0.0.1 depends on the resolver, so plain HTTP to them could
    leave the machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, *, allow_insecure_http: bool = False) -> str:
    """Validate a configured absolute http(s) URL; plain HTTP only for loopback or when allowed.

    Args:
        url: the URL to check.
        what: how to name it in an error ("token URL", "base URL").
        allow_insecure_http: the connection explicitly accepts plain HTTP.

    Returns:
        The URL, stripped of surrounding spaces.
    """
    url = url.strip() if isinstance(url, str) else url
    parsed = parse_url(url, what, error=ConfigurationError)
    if parsed.scheme == "http" and not (allow_insecure_http or is_loopback_host(parsed.host)):
        raise InsecureURLError(
            f"The {what} {display_url(url)!r} uses plain HTTP. Tokens and health data must "
            "travel over HTTPS; use https://, or set the 'allow_insecure_http' extra if this is "
            "a deliberate test setup."
        )
    return url


def origin_of(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit, lower-cased.

    Raises:
        UnsafeURLError: the URL is ambiguous (see ``parse_url``).
    """
    return parse_url(url).origin


def redirect_target(
    current: str, location: str, *, error: type[BackendAuthError] = UnsafeURLError
) -> URL:
    """The URL a redirect (or ``Content-Location``) leads to, parsed; refuses ambiguous
    targets, non-HTTP schemes and HTTPS → HTTP downgrades."""
    location = location.strip()
    if _AMBIGUOUS_CHARS.search(location):
        raise _refuse(error, "redirect target", location, "it contains a backslash or control char")
    target = parse_url(urljoin(current, location), "redirect target", error=error)
    if urlsplit(current).scheme.lower() == "https" and target.scheme == "http":
        raise error(
            f"{display_url(current)} redirected from HTTPS to plain HTTP "
            f"({display_url(target.url)}); refused."
        )
    return target


def display_url(url: str) -> str:
    """A URL fit for logs and error messages: no query string or fragment (signed storage URLs
    carry credentials there), no user info, control characters escaped. Never raises.

    An ambiguous authority (``127.0.0.1:OTHER\\@127.0.0.1:GOOD``) is shown whole: its "user
    info" is no credential, and hiding it would hide where the connection would have gone.
    """
    text = str(url)
    match = _SPLIT.fullmatch(text)
    if match is None:
        shown = re.split(r"[?#]", text, maxsplit=1)[0]
    else:
        authority = match["authority"]
        user, at, host = authority.rpartition("@")
        if at and not _AMBIGUOUS_CHARS.search(user):
            authority = host
        path = re.split(r"[?#]", match["rest"], maxsplit=1)[0]
        shown = f"{match['scheme']}://{authority}{path}"
    shown = _AMBIGUOUS_CHARS.sub(lambda m: f"%{ord(m.group()):02X}", shown)
    return shown[:200] + ("..." if len(shown) > 200 else "")


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


def with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to its query string."""
    query = urlencode(list(params))
    if not query:
        return url
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"
