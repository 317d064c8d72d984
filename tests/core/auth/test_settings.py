from __future__ import annotations

import email.utils
import time

import pytest

from airflow_provider_backendauth.core.auth.profiles import PROFILES, get_profile
from airflow_provider_backendauth.core.auth.settings import EXTRA_KEYS, ClientSettings
from airflow_provider_backendauth.core.errors import ConfigurationError, InsecureURLError
from airflow_provider_backendauth.core.retry import parse_retry_after
from airflow_provider_backendauth.core.urls import check_url, join_url, origin_of

REQUIRED_PROFILES = {
    "smart",
    "mydatahelps",
    "koppeltaal",
    "helseid",
    "redox",
    "nhs_england",
    "epic",
    "oracle_health",
    "entra_id",
    "medplum",
    "athenahealth",
    "cms_dpc",
    "custom",
}


def settings(**extra):
    return ClientSettings.from_connection_fields(
        host="https://h/fhir", login="c", password=None, extra=extra
    )


def test_all_required_profiles_exist():
    assert set(PROFILES) >= REQUIRED_PROFILES


@pytest.mark.parametrize(
    ("name", "token_url", "alg", "typ", "scope", "client_id_in_form"),
    [
        (
            "mydatahelps",
            "https://mydatahelps.org/identityserver/connect/token",
            "RS256",
            "JWT",
            "api",
            False,
        ),
        (
            "koppeltaal",
            "https://auth-service.koppeltaal.headease.nl/oauth2/token",
            "RS512",
            "JWT",
            "",
            False,
        ),
        (
            "helseid",
            "https://helseid-sts.nhn.no/connect/token",
            "RS512",
            "client-authentication+jwt",
            None,
            True,
        ),
        ("redox", "https://api.redoxengine.com/v2/auth/token", "RS384", "JWT", None, False),
        ("nhs_england", "https://api.service.nhs.uk/oauth2/token", "RS512", "JWT", None, False),
        ("smart", None, "RS384", "JWT", "system/*.rs", False),
    ],
)
def test_seed_vendor_presets(name, token_url, alg, typ, scope, client_id_in_form):
    profile = get_profile(name)
    assert profile.token_url == token_url
    assert profile.algorithms[0] == alg
    assert profile.typ == typ
    assert profile.scope == scope
    assert profile.client_id_in_form is client_id_in_form
    assert profile.lifetime <= profile.max_lifetime


def test_helseid_sends_iat_nbf_and_short_lifetime():
    profile = get_profile("helseid")
    assert profile.include_iat and profile.include_nbf and profile.max_lifetime == 60


def test_profile_lookup_is_forgiving_and_explains():
    assert get_profile("NHS-England").name == "nhs_england"
    assert get_profile(None).name == "smart"
    with pytest.raises(ConfigurationError, match="Unknown provider profile 'acme'.*smart"):
        get_profile("acme")


def test_settings_parse_strings_as_secrets_backends_deliver_them():
    s = settings(
        profile="redox",
        assertion_lifetime="120",
        verify_ssl="false",
        timeout="10",
        retries="0",
        extra_claims='{"tenant": "t"}',
        reuse_policy="per_request",
        allowed_hosts="https://files.example.org other.example.org",
    )
    assert (s.assertion_lifetime, s.verify_ssl, s.timeout, s.retries) == (120, False, 10.0, 0)
    assert s.extra_claims == {"tenant": "t"}
    assert s.allowed_hosts == ("https://files.example.org", "other.example.org")


def test_empty_scope_is_kept_distinct_from_unset():
    assert settings(scope="").scope == ""
    assert settings().scope is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"verify_ssl": "maybe"}, "true or false"),
        ({"timeout": "soon"}, "whole number"),
        ({"retries": "-1"}, "at least 0"),
        ({"extra_claims": "[1]"}, "JSON object"),
        ({"extra_claims": "{nope"}, "JSON object"),
        ({"reuse_policy": "forever"}, "cache, per_request"),
        ({"privat_key_file": "/x"}, "Unknown connection extra"),
    ],
)
def test_bad_extras_are_explained(extra, message):
    with pytest.raises(ConfigurationError, match=message):
        settings(**extra)


def test_every_extra_key_is_in_the_connection_form():
    from airflow_provider_backendauth.provider_info import CONN_FIELDS

    assert set(CONN_FIELDS) == set(EXTRA_KEYS)


def test_secrets_are_not_in_repr_or_describe():
    s = ClientSettings.from_connection_fields(
        host="h",
        login="c",
        password="-----BEGIN PRIVATE KEY-----SECRET",
        extra={"private_key_passphrase": "pw"},
    )
    assert "SECRET" not in repr(s) and "pw" not in repr(s)
    assert s.describe()["private_key"] == "***"


def test_base_url_from_uri_style_fields():
    s = ClientSettings.from_connection_fields(
        host="fhir.example.org/api/R4", login="c", password=None, extra={}, port=8443
    )
    assert s.base_url == "https://fhir.example.org:8443/api/R4"
    s = ClientSettings.from_connection_fields(
        host="https://fhir.example.org/r4/", login="c", password=None, extra={}
    )
    assert s.base_url == "https://fhir.example.org/r4"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x", "https://a.org"]
)
def test_secure_or_loopback_urls_pass(url):
    assert check_url(url, "base URL") == url


def test_plain_http_elsewhere_is_refused_unless_allowed():
    with pytest.raises(InsecureURLError, match="plain HTTP"):
        check_url("http://fhir.example.org", "base URL")
    assert check_url("http://fhir.example.org", "base URL", allow_insecure_http=True)


@pytest.mark.parametrize("url", ["fhir.example.org", "ftp://x.org", "https://", "https://h:99999"])
def test_bad_urls_are_explained(url):
    with pytest.raises(ConfigurationError):
        check_url(url, "token URL")


def test_origin_and_join():
    assert origin_of("https://A.org/x") == origin_of("https://a.org:443/y") == "https://a.org:443"
    assert origin_of("http://a.org:8080") != origin_of("https://a.org:8080")
    assert join_url("https://h/fhir", "Patient") == "https://h/fhir/Patient"
    assert join_url("https://h/fhir/", "/metadata") == "https://h/fhir/metadata"
    assert join_url("https://h/fhir", "https://o/x") == "https://o/x"


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 1.5 ") == 1.5
    now = time.time()
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert 115 <= parse_retry_after(date, now=now) <= 121
    assert parse_retry_after(email.utils.formatdate(now - 50, usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"retries": 10**9},
        {"retries": "1000000000"},
        {"retries": 101},
        {"timeout": 10**9},
        {"timeout": "1000000000"},
        {"timeout": 3601},
        {"timeout": 0},
        {"retries": -1},
    ],
)
def test_absurd_retries_and_timeouts_are_refused(extra: dict[str, object]) -> None:
    name = next(iter(extra))
    with pytest.raises(ConfigurationError, match=f"{name}.*(at most|at least)"):
        settings(**extra)


def test_the_bounds_themselves_are_accepted() -> None:
    assert settings(retries=100, timeout=3600).retries == 100
    assert settings(retries=0, timeout=1).timeout == 1.0


@pytest.mark.parametrize(
    "values",
    [{"retries": 10**9}, {"timeout": 1e9}, {"timeout": float("nan")}, {"retries": 2.5}],
)
def test_settings_made_in_code_are_checked_too(values: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ClientSettings(base_url="https://fhir.example", client_id="c", **values)  # type: ignore[arg-type]
