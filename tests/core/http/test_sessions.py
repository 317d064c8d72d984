"""``ClientSession`` reads the proxy environment once per origin, yet routes every request as
requests itself would: through a real forward proxy on loopback when ``HTTP_PROXY`` says so,
direct when ``NO_PROXY`` or a changed environment says so."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import certifi
import pytest
import requests

from airflow_provider_backendauth.core.http import sessions
from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
from airflow_provider_backendauth.core.http.sessions import USER_AGENT, ClientSession, plain_session


def test_requests_follow_the_environment_as_it_changes(
    servers: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, proxy, proxied = servers
    ours, theirs = plain_session(), requests.Session()

    def answers() -> tuple[str, str]:
        return ours.get(url, timeout=10).text, theirs.get(url, timeout=10).text

    assert answers() == ("server", "server")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    assert answers() == ("proxy", "proxy")
    assert proxied == [url, url]  # the proxy was asked for the target's absolute URI
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert answers() == ("server", "server")
    monkeypatch.delenv("NO_PROXY")
    assert answers() == ("proxy", "proxy")
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # a CGI process: HTTP_PROXY is not trusted
    assert answers() == ("server", "server")
    monkeypatch.delenv("REQUEST_METHOD")
    monkeypatch.delenv("HTTP_PROXY")
    assert answers() == ("server", "server")
    # Per-request proxies and trust_env = False are requests' own paths.
    assert ours.get(url, proxies={"http": proxy}, timeout=10).text == "proxy"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    ours.trust_env = False
    assert ours.get(url, timeout=10).text == "server"


def test_the_environment_is_read_once_per_origin(
    servers: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, _ = servers
    reads = {"n": 0}
    original = urllib.request.getproxies_environment

    def counted() -> dict[str, str]:
        reads["n"] += 1
        return original()

    monkeypatch.setattr(urllib.request, "getproxies_environment", counted)
    monkeypatch.setattr(requests.utils, "getproxies", counted)  # what requests calls on Linux

    def reads_for(session: requests.Session) -> int:
        reads["n"] = 0
        for _ in range(20):
            session.get(url, timeout=10)
        return reads["n"]

    assert reads_for(requests.Session()) >= 20  # requests: at least once per request
    assert reads_for(plain_session()) <= 2  # ours: once for the origin
    other = url.replace("/data", "/other?x=1")
    session = plain_session()
    session.get(url, timeout=10)
    reads["n"] = 0
    session.get(other, timeout=10)  # same origin, other path and query: no new read
    assert reads["n"] == 0


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.example:3128"},
        {"https_proxy": "http://a:3128", "no_proxy": "fhir.example"},
        {"ALL_PROXY": "socks5://p:1080", "NO_PROXY": "*"},
        {"REQUESTS_CA_BUNDLE": "/etc/ssl/bundle.pem"},
        {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem"},
    ],
)
@pytest.mark.parametrize(
    "url", ["https://fhir.example/R4/Patient", "https://other.example:8443/x", "http://h/"]
)
def test_the_settings_are_requests_own(
    environment: dict[str, str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in sessions.ENVIRONMENT_KEYS:
        monkeypatch.delenv(name, raising=False)
    ours = ClientSession()
    ours.merge_environment_settings(url, {}, None, None, None)  # fill the cache first
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for verify in (None, True, False, "/custom.pem"):
        for _ in range(2):  # a miss, then a hit
            got = ours.merge_environment_settings(url, {}, None, verify, None)
            expected = requests.Session().merge_environment_settings(url, {}, None, verify, None)
            assert got == expected
    got["proxies"]["https"] = "http://changed"  # what requests does with it stays local
    assert ours.merge_environment_settings(url, {}, None, None, None) == (
        requests.Session().merge_environment_settings(url, {}, None, None, None)
    )


def test_the_cache_stays_small(monkeypatch: pytest.MonkeyPatch) -> None:
    session = ClientSession()
    for index in range(sessions._CACHE_SIZE * 3):
        session.merge_environment_settings(f"https://h{index}.example/", {}, None, None, None)
    assert len(session._environment) <= sessions._CACHE_SIZE


def test_plain_session_sets_tls_and_user_agent_and_no_token() -> None:
    session = plain_session("/ca.pem")
    assert (session.verify, session.headers["User-Agent"]) == ("/ca.pem", USER_AGENT)
    # Redirects follow the one redirect rule, with no token to attach anywhere.
    assert isinstance(session.auth, BackendAuth)
    assert session.auth.tokens is None


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_the_connections_tls_setting_wins_over_the_ca_bundle_environment(
    https_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that sets REQUESTS_CA_BUNDLE (to the system bundle, say) must still use the
    connection's ca_bundle: requests alone would verify against the environment's bundle."""
    url, cert = https_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # does not know our CA
    assert plain_session(str(cert)).get(url, timeout=10).text == "tls"
    assert plain_session(False).get(url, timeout=10).text == "tls"
    with pytest.raises(requests.exceptions.SSLError):
        requests.Session().get(url, verify=None, timeout=10)  # what requests does instead
    with pytest.raises(requests.exceptions.SSLError):
        plain_session(True).get(url, timeout=10)  # the default follows the environment...
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert plain_session(True).get(url, timeout=10).text == "tls"  # ...either way
