"""Token exchange against the sandbox's strict token server (assertions verified by jwcrypto)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.keys import SUPPORTED_ALGORITHMS
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import (
    ConfigurationError,
    InvalidClientError,
    InvalidScopeError,
    KeyLoadError,
    TokenRequestError,
)
from backendauth_sandbox.testing import generate_client_key
from tests.support.clients import make_client, register

SEED_VENDORS = ["mydatahelps", "koppeltaal", "helseid", "redox", "nhs_england"]
KIND_FOR_ALG = {"ES256": "EC-P256", "ES384": "EC-P384", "ES512": "EC-P521"}


@pytest.mark.parametrize("vendor", [*SEED_VENDORS, "smart", "epic", "medplum", "oracle_health"])
def test_client_id_key_and_profile_are_enough(sandbox, vendor):
    client = make_client(sandbox, vendor)
    token = client.get_token()
    assert token.value and token.expires_in() > 0
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 1


def test_cms_dpc_uses_the_registered_key_id(sandbox):
    client_id, key = register(sandbox, "cms_dpc")
    settings = ClientSettings.from_connection_fields(
        host=sandbox.fhir_base,
        login=client_id,
        password=key.private_pem,
        extra={"profile": "cms_dpc", "auth_url": sandbox.token_url, "key_id": key.kid},
    )
    assert BackendAuthClient(settings).get_token().value


def test_nhs_england_string_expires_in_is_parsed(sandbox):
    client = make_client(sandbox, "nhs_england")
    token = client.get_token()
    assert 250 < token.lifetime <= 301


def test_koppeltaal_sends_the_empty_scope(sandbox):
    client = make_client(sandbox, "koppeltaal")
    assert client.scope == ""
    assert client.get_token().value


def test_smart_discovers_token_url_and_prefers_server_algorithms(sandbox):
    for kind, expected in (("RSA", "RS384"), ("EC-P384", "ES384")):
        client_id, key = register(sandbox, "smart", kind)
        settings = ClientSettings.from_connection_fields(
            host=sandbox.fhir_base, login=client_id, password=key.private_pem, extra={}
        )
        client = BackendAuthClient(settings)
        assert client.token_url == sandbox.token_url
        assert client.algorithm == expected
        assert client.get_token().value


@pytest.mark.parametrize("alg", SUPPORTED_ALGORITHMS)
def test_every_algorithm_is_accepted_by_the_independent_verifier(sandbox, alg):
    client = make_client(
        sandbox, "any", profile="custom", kind=KIND_FOR_ALG.get(alg, "RSA"), algorithm=alg
    )
    assert client.algorithm == alg
    assert client.get_token().value


def test_wrong_key_is_rejected_with_an_explanation(sandbox):
    other = generate_client_key("RSA")
    client = make_client(sandbox, "redox", password=other.private_pem, key_id=None)
    with pytest.raises(InvalidClientError) as caught:
        client.get_token()
    message = str(caught.value)
    assert "rejected the client assertion" in message and "private key is the pair" in message
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 1  # no retry


def test_wrong_algorithm_for_vendor_is_explained(sandbox):
    client = make_client(sandbox, "mydatahelps", algorithm="RS384")
    with pytest.raises(InvalidClientError, match="only RS256 is supported"):
        client.get_token()


def test_invalid_scope(sandbox):
    client = make_client(
        sandbox, "smart", scope="user/*.cruds", registration={"scopes": "system/Patient.rs"}
    )
    with pytest.raises(InvalidScopeError, match="refused the requested scope"):
        client.get_token()


def test_retries_5xx_then_succeeds(sandbox):
    client = make_client(sandbox, "redox")
    sandbox.faults.add("/auth/token", status=503, times=2)
    assert client.get_token().value
    assert sandbox.stats["token_requests_by_client"].get(client.settings.client_id) == 1
    assert client.endpoint.requests_made == 3


def test_429_honours_retry_after(sandbox):
    client = make_client(sandbox, "redox")
    sandbox.faults.add("/auth/token", status=429, retry_after=1, times=1)
    started = time.monotonic()
    assert client.get_token().value
    assert time.monotonic() - started >= 0.9
    assert client.endpoint.requests_made == 2


def test_retry_after_as_http_date(sandbox):
    client = make_client(sandbox, "redox")
    sandbox.faults.add("/auth/token", status=429, retry_after=2, retry_after_http_date=True)
    started = time.monotonic()
    assert client.get_token().value
    assert time.monotonic() - started >= 0.9  # HTTP-date has 1 s resolution


def test_dropped_connection_and_slow_answer_are_retried(sandbox):
    client = make_client(sandbox, "redox", timeout="1")
    sandbox.faults.add("/auth/token", drop=True, times=1)
    sandbox.faults.add("/auth/token", delay=2.5, times=1)
    assert client.get_token().value
    assert client.endpoint.requests_made == 3


def test_retries_give_up_with_a_clear_error(sandbox):
    client = make_client(sandbox, "redox")
    sandbox.faults.add("/auth/token", status=502, times=None)
    with pytest.raises(TokenRequestError, match="had a server error.*HTTP 502") as caught:
        client.get_token()
    assert caught.value.retryable
    assert client.endpoint.requests_made == client.retry.attempts


def test_retries_setting_from_the_connection(sandbox):
    client = make_client(sandbox, "redox", retries="0", fast_retry=False)
    sandbox.faults.add("/auth/token", status=503, times=1)
    with pytest.raises(TokenRequestError):
        client.get_token()
    assert client.endpoint.requests_made == 1


def test_plain_text_401_is_quoted(sandbox):
    client = make_client(sandbox, "koppeltaal")
    sandbox.faults.add("/auth/token", status=401, body_kind="text", body="Access Denied")
    with pytest.raises(InvalidClientError, match="HTTP 401: Access Denied.*plain-text"):
        client.get_token()


def test_unreachable_token_url(sandbox):
    client = make_client(sandbox, "redox", auth_url="http://127.0.0.1:9/token")
    with pytest.raises(TokenRequestError, match="Could not reach the token URL"):
        client.get_token()


def test_bad_configuration_fails_before_any_request(sandbox):
    before = sandbox.stats["requests"]
    _, rsa = register(sandbox, "redox")
    ec = generate_client_key("EC-P256")
    cases = [
        ({"profile": "redox", "algorithm": "ES384"}, rsa.private_pem, KeyLoadError),
        ({"profile": "redox", "algorithm": "ES384"}, ec.private_pem, KeyLoadError),
        ({"profile": "redox", "algorithm": "HS256"}, rsa.private_pem, ConfigurationError),
        ({"profile": "redox", "algorithm": "none"}, rsa.private_pem, ConfigurationError),
        ({"profile": "mydatahelps"}, ec.private_pem, KeyLoadError),
        (
            {"profile": "redox", "auth_url": "http://example.org/token"},
            rsa.private_pem,
            ConfigurationError,
        ),
        (
            {"profile": "nhs_england", "assertion_lifetime": 900},
            rsa.private_pem,
            ConfigurationError,
        ),
        ({"profile": "cms_dpc"}, rsa.private_pem, ConfigurationError),  # kid required, not derived
        (
            {"profile": "entra_id", "auth_url": "https://login.example/t"},
            rsa.private_pem,
            KeyLoadError,
        ),
        ({"profile": "redox"}, "garbage", KeyLoadError),
    ]
    for extra, password, error in cases:
        settings = ClientSettings.from_connection_fields(
            host=sandbox.fhir_base, login="someone", password=password, extra=extra
        )
        with pytest.raises(error):
            BackendAuthClient(settings)
    assert sandbox.stats["requests"] == before


def test_entra_id_certificate_thumbprint(sandbox):
    key = generate_client_key("RSA", certificate=True)
    sandbox.register_client("entra-app", key.public_jwks, vendor="entra_id")
    settings = ClientSettings.from_connection_fields(
        host=sandbox.fhir_base,
        login="entra-app",
        password=key.private_pem + "\n" + key.certificate_pem,
        extra={
            "profile": "entra_id",
            "auth_url": sandbox.token_url,
            "scope": f"{sandbox.fhir_base}/.default",
        },
    )
    client = BackendAuthClient(settings)
    assert client.algorithm == "PS256"
    assert client.get_token().value


def test_token_is_cached_and_renewed_before_expiry(sandbox):
    sandbox.token_lifetime = 2
    client = make_client(sandbox, "redox")
    first = client.get_token()
    assert client.get_token() is first
    time.sleep(1.6)  # inside the renewal margin (a quarter of 2 s)
    second = client.get_token()
    assert second.value != first.value
    assert client.endpoint.requests_made == 2


def test_single_flight_under_concurrency(sandbox):
    client = make_client(sandbox, "redox")
    sandbox.faults.add("/auth/token", delay=0.5, times=1)  # make the race window wide
    barrier = threading.Barrier(16)
    values: list[str] = []

    def worker() -> None:
        barrier.wait()
        values.append(client.get_token().value)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(values)) == 1 and len(values) == 16
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 1


def test_clients_for_the_same_connection_share_one_token(sandbox):
    client = make_client(sandbox, "redox")
    twin = BackendAuthClient(client.settings)
    assert client.get_token().value == twin.get_token().value
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 1


def test_per_request_reuse_gets_a_token_per_call(sandbox):
    client = make_client(sandbox, "helseid", reuse_policy="per_request")
    session = client.new_session()
    for _ in range(3):
        assert session.get(f"{sandbox.fhir_base}/Patient", params={"_count": 1}).status_code == 200
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 3


def test_401_renews_the_token_and_retries_once(sandbox):
    client = make_client(sandbox, "smart")
    session = client.new_session()
    assert session.get(f"{sandbox.fhir_base}/Patient").status_code == 200
    sandbox.expire_tokens()
    response = session.get(f"{sandbox.fhir_base}/Patient")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 2


def test_persistent_401_is_returned_after_one_retry(sandbox):
    client = make_client(sandbox, "smart")
    session = client.new_session()
    sandbox.faults.add("/fhir/Patient", status=401, times=None)
    response = session.get(f"{sandbox.fhir_base}/Patient")
    assert response.status_code == 401
    assert len(response.history) == 1


def test_many_threads_hitting_401_renew_once(sandbox):
    client = make_client(sandbox, "smart")
    session_token = client.get_token()
    sandbox.expire_tokens()
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def worker() -> None:
        s = client.new_session()
        barrier.wait()
        statuses.append(s.get(f"{sandbox.fhir_base}/Patient", params={"_count": 1}).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert client.get_token().value != session_token.value
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 2


def test_token_goes_only_to_the_configured_origin(sandbox, recording_server):
    client = make_client(sandbox, "smart")
    session = client.new_session()
    session.get(recording_server.url + "/anything")
    assert recording_server.authorization_headers == [None]
    # An allowed extra host does get it.
    allowed = make_client(sandbox, "smart", allowed_hosts=recording_server.url)
    allowed.new_session().get(recording_server.url + "/anything")
    assert recording_server.authorization_headers[-1].startswith("Bearer ")


def test_redirect_to_another_origin_drops_the_token(sandbox, recording_server):
    client = make_client(sandbox, "smart")
    session = client.new_session()
    target = recording_server.url + "/landing"
    response = session.get(recording_server.url + "/redirect", params={"to": target})
    assert response.status_code == 200
    assert recording_server.authorization_headers == [None, None]


def test_no_secret_in_logs_or_errors(sandbox, caplog):
    caplog.set_level("DEBUG")
    client = make_client(sandbox, "redox")
    token = client.get_token().value
    sandbox.faults.add(
        "/auth/token", status=400, body={"error": "invalid_client", "error_description": "bad"}
    )
    client.tokens.invalidate()
    with pytest.raises(InvalidClientError) as caught:
        client.get_token()
    text = caplog.text + str(caught.value) + repr(client.tokens.current) + repr(client.settings)
    assert token not in text
    assert "PRIVATE KEY" not in text and "eyJ" not in text
    assert client.settings.private_key and client.settings.private_key.split("\n")[1] not in text


def test_server_text_that_echoes_secrets_is_redacted(sandbox):
    client = make_client(sandbox, "redox")
    sandbox.faults.add(
        "/auth/token",
        status=400,
        body_kind="text",
        body="bad request: client_assertion=eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJ4In0.c2ln",
    )
    with pytest.raises(InvalidClientError) as caught:
        client.get_token()
    assert "eyJ" not in str(caught.value) and "[redacted]" in str(caught.value)


def test_json_body_instead_of_form_is_what_the_server_rejects(sandbox):
    """The sandbox enforces the classic mistake the client must not make: posting JSON."""
    client = make_client(sandbox, "mydatahelps")
    form = client.endpoint._form()
    response = requests.post(
        sandbox.token_url, data=json.dumps(form), headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 401)
    assert requests.post(sandbox.token_url, data=form).status_code == 200


def test_smart_v2_scope_falls_back_to_v1_when_refused(sandbox):
    """Oracle Health advertises v2 but rejects v2 scopes: the profile default degrades to v1."""
    client = make_client(sandbox, "oracle_health", profile="smart", auth_url=sandbox.token_url)
    assert client.scope == "system/*.rs"
    token = client.get_token()
    assert token.scope == "system/*.read"
    assert client.endpoint.requests_made == 2


def test_no_scope_fallback_for_a_scope_the_user_chose(sandbox):
    client = make_client(
        sandbox,
        "oracle_health",
        profile="smart",
        auth_url=sandbox.token_url,
        scope="system/Patient.rs",
    )
    with pytest.raises(InvalidScopeError):
        client.get_token()


@pytest.mark.parametrize(
    ("v2", "v1"),
    [
        ("system/*.rs", "system/*.read"),
        ("system/Patient.r system/Observation.cud", "system/Patient.read system/Observation.write"),
        ("system/*.cruds launch", "system/*.* launch"),
        ("system/*.read", None),
        ("api", None),
        ("", None),
    ],
)
def test_smart_v1_scope_mapping(v2, v1):
    from airflow_provider_backendauth.core.auth.scopes import smart_v1_scope

    assert smart_v1_scope(v2) == v1


def test_fresh_reads_the_cached_token_without_waiting_for_a_renewal() -> None:
    # An event loop asks fresh() first and goes to a thread only without one: it must never
    # block, even while another thread renews under the cache's lock.
    from airflow_provider_backendauth.core.auth.tokens import AccessToken, TokenCache

    issued = iter(["first", "second"])
    cache = TokenCache(lambda: AccessToken(next(issued), time.time() + 300))
    assert cache.fresh() is None  # nothing cached yet
    assert cache.get().value == "first"
    with cache._lock:  # a renewal in progress
        fresh = cache.fresh()
        assert fresh is not None and fresh.value == "first"
    cache.invalidate("first")
    assert cache.fresh() is None
    per_request = TokenCache(lambda: AccessToken("x", time.time() + 300), reuse="per_request")
    per_request.get()
    assert per_request.fresh() is None  # every request needs its own token
    now = time.time()  # 100 s tokens with 10 s left: within the leeway (30 s, a quarter: 25)
    stale = TokenCache(lambda: AccessToken("y", now + 10, obtained_at=now - 90), leeway=30)
    stale.get()
    assert stale.fresh() is None  # within the leeway: renew, don't use


def test_certificate_headers_x5t_s256_and_x5c_from_the_connection(sandbox):
    import base64

    from cryptography import x509

    key = generate_client_key("RSA", certificate=True)
    sandbox.register_client("cert-app", key.public_jwks, vendor="smart")
    settings = ClientSettings.from_connection_fields(
        host=sandbox.fhir_base,
        login="cert-app",
        password=key.private_pem + "\n" + key.certificate_pem,
        extra={"certificate_headers": "x5t#S256 x5c"},
    )
    client = BackendAuthClient(settings)
    header = client.assertion_spec().headers()
    assert header["x5t#S256"] == key.x5t_s256
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert leaf == x509.load_pem_x509_certificate(key.certificate_pem.encode())
    assert client.get_token().value  # the sandbox matched both against the registered x5c
    other = generate_client_key("RSA", certificate=True)
    wrong = ClientSettings.from_connection_fields(
        host=sandbox.fhir_base,
        login="cert-app",
        password=key.private_pem + "\n" + other.certificate_pem,
        extra={"certificate_headers": "x5c"},
    )
    with pytest.raises(InvalidClientError, match="thumbprint matches no registered certificate"):
        BackendAuthClient(wrong).get_token()


def test_certificate_headers_need_a_certificate_and_known_names(sandbox):
    key = generate_client_key("RSA")
    for extra, match in (
        ({"certificate_headers": "x5c"}, "certificate PEM after the private key"),
        ({"certificate_headers": "x5u"}, "takes x5t#S256, x5t, x5c"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            settings = ClientSettings.from_connection_fields(
                host=sandbox.fhir_base, login="c", password=key.private_pem, extra=extra
            )
            BackendAuthClient(settings)
