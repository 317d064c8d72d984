"""Property tests for the one URL model: whatever string a server sends, ``parse_url``
either refuses it with the provider's own error or returns the origin that requests
(urllib3) and aiohttp (yarl) would both connect to."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url as urllib3_parse_url
from yarl import URL as YarlURL

from airflow_provider_backendauth.core.errors import BackendAuthError, UnsafeURLError
from airflow_provider_backendauth.core.urls import (
    check_url,
    display_url,
    is_loopback_host,
    origin_of,
    parse_url,
    redirect_target,
)

# Characters that matter to URL parsers, plus some ordinary ones.
_TRICKY = st.sampled_from(
    [*list("\\@:/?#[]%.-_ \t\r\n\x00\x7fAaZz09"), "127.0.0.1", "example.org", "%2e", "%40", "::1"]
)
_AUTHORITY = st.lists(_TRICKY, max_size=12).map("".join)
_URLS = st.builds(
    lambda scheme, authority, path: f"{scheme}://{authority}{path}",
    st.sampled_from(["http", "https", "HTTP", "ftp", "file"]),
    _AUTHORITY,
    st.lists(_TRICKY, max_size=8).map("".join),
)
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _connect_origin_urllib3(url: str) -> tuple[str, str, int]:
    u = urllib3_parse_url(url)
    scheme = (u.scheme or "").lower()
    port = u.port or {"http": 80, "https": 443}[scheme]
    return scheme, (u.host or "").strip("[]").lower(), port


@FAST
@given(_URLS | st.text(max_size=40))
@example("http://127.0.0.1:1\\@127.0.0.1:2/x")
@example("http://good.example\\@evil.example/")
@example("http://evil.example%2f@good.example/")
@example("http://good.example\t.evil/")
@example("https://[::1]:8443/x")
@example("http://.?@")  # an "@" in the query is no user info
@example("http://.A")  # yarl keeps the case of a host it is given encoded
def test_parse_url_refuses_or_agrees_with_every_http_stack(url: str) -> None:
    try:
        parsed = parse_url(url)
    except UnsafeURLError:
        return
    # Accepted: the origin it reports is the one requests and aiohttp connect to.
    assert _connect_origin_urllib3(url) == (parsed.scheme, parsed.host, parsed.port)
    yu = YarlURL(url, encoded=True)  # as the triggerer's driver sends it (host case kept)
    assert (yu.scheme, (yu.host or "").lower(), yu.port or parsed.port) == (
        parsed.scheme,
        parsed.host,
        parsed.port,
    )
    # No user info: the authority (up to the first "/", "?" or "#") holds no "@".
    assert "@" not in re.split(r"[/?#]", url.split("//", 1)[1], maxsplit=1)[0]
    assert "\\" not in url


@FAST
@given(st.text(max_size=60), st.text(max_size=60))
def test_redirect_target_never_crashes_and_never_downgrades(current: str, location: str) -> None:
    base = "https://fhir.example.org/base/" + "".join(c for c in current if c.isalnum())[:10]
    try:
        target = redirect_target(base, location)
    except BackendAuthError:
        return
    assert target.scheme == "https"


@FAST
@given(st.text(max_size=60))
def test_check_url_and_helpers_raise_only_provider_errors(url: str) -> None:
    display_url(url)  # never raises
    for call in (lambda: check_url(url, "base URL"), lambda: origin_of(url)):
        with contextlib.suppress(BackendAuthError):
            call()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("[::1]", True),
        ("evil.localhost", False),  # resolver-dependent: not treated as loopback
        ("localhost.evil.example", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_plain_http_to_a_localhost_subdomain_is_refused() -> None:
    from airflow_provider_backendauth.core.errors import InsecureURLError

    with pytest.raises(InsecureURLError):
        check_url("http://api.localhost/fhir", "base URL")
    assert check_url("http://localhost:8080/fhir", "base URL")
