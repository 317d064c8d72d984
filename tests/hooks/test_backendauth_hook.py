"""The hook as a DAG author and the UI's Test button use it, with connections from env vars."""

from __future__ import annotations

import pytest

from airflow_provider_backendauth.core.errors import FhirError
from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook
from backendauth_sandbox.testing import generate_client_key
from tests.conftest import connection_json
from tests.support import servers
from tests.support.clients import register, vendor_extra


@pytest.fixture
def closed_port():
    with servers.refusing_port() as port:
        yield port


@pytest.fixture
def silent_server():
    with servers.silent_server() as url:
        yield url


@pytest.fixture
def self_signed_https():
    with servers.self_signed_https() as url:
        yield url


@pytest.fixture
def conn(sandbox, monkeypatch):
    """Register a client and expose it as AIRFLOW_CONN_<ID>; returns a factory."""

    def make(conn_id: str = "fhir", vendor: str = "smart", password: str | None = None, **extra):
        client_id, key = register(sandbox, vendor)
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            connection_json(
                host=sandbox.fhir_base,
                login=client_id,
                password=password if password is not None else key.private_pem,
                **{**vendor_extra(sandbox, vendor), **extra},
            ),
        )
        return conn_id, client_id

    return make


def test_construction_does_no_io(sandbox):
    before = sandbox.stats["requests"]
    hook = BackendAuthHook("does_not_exist_yet")
    assert hook.backendauth_conn_id == "does_not_exist_yet"
    assert sandbox.stats["requests"] == before


def test_default_conn_id_and_keyword():
    assert BackendAuthHook().backendauth_conn_id == "backendauth_default"
    assert BackendAuthHook(backendauth_conn_id="x").backendauth_conn_id == "x"


def test_get_token_and_session(sandbox, conn):
    conn_id, client_id = conn()
    hook = BackendAuthHook(conn_id)
    token = hook.get_token()
    session = hook.get_session()
    response = session.get(f"{hook.base_url}/metadata")
    assert response.status_code == 200
    assert hook.get_token() == token
    assert sandbox.stats["token_requests_by_client"][client_id] == 1


def test_connection_is_read_once(sandbox, conn, monkeypatch):
    conn_id, _ = conn()
    hook = BackendAuthHook(conn_id)
    hook.get_token()
    monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}")
    assert hook.get_session() is not None  # still works: settings were read once


def test_run_relative_endpoint_and_errors(sandbox, conn):
    conn_id, _ = conn()
    hook = BackendAuthHook(conn_id)
    assert hook.run("GET", "metadata").json()["resourceType"] == "CapabilityStatement"
    sandbox.faults.add(
        "/fhir/metadata", status=422, body="the thing is broken", issue_code="processing"
    )
    with pytest.raises(FhirError, match="HTTP 422: error/processing: the thing is broken"):
        hook.run("GET", "metadata")


def test_tokens_are_masked(sandbox, conn):
    from airflow.sdk._shared.secrets_masker import redact

    conn_id, _ = conn()
    token = BackendAuthHook(conn_id).get_token()
    assert token not in str(redact(f"the token is {token}"))


def test_test_connection_success(sandbox, conn):
    conn_id, _ = conn(vendor="redox")
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert ok, message
    assert message.startswith(
        f"Token obtained from {sandbox.token_url} (a Bearer token, not DPoP-bound; expires in "
    )
    assert f"GET {sandbox.fhir_base}/metadata answered 200" in message


def test_test_connection_reports_the_values_used(sandbox, conn):
    """The profile's effective values, which an admin cannot see while the fields are empty."""
    conn_id, _ = conn(vendor="redox")
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert ok, message
    assert "Used: profile Redox, RS384, kid " in message
    assert "scope none" in message
    # A failure says the same, with the token URL (the registered kid is not "test-1").
    conn_id, _ = conn(conn_id="nhs", vendor="nhs_england", key_id="test-1")
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok
    assert (
        f"Used: profile NHS England APIs, token URL {sandbox.token_url}, RS512, kid test-1, "
        "scope none." in message
    )


def test_test_connection_does_a_real_exchange_each_time(sandbox, conn):
    """A cached token from an earlier call would prove nothing about the connection now."""
    conn_id, client_id = conn(vendor="redox")
    hook = BackendAuthHook(conn_id)
    hook.get_token()
    assert hook.test_connection()[0]
    assert hook.test_connection()[0]
    assert sandbox.stats["token_requests_by_client"][client_id] == 3


def test_test_connection_never_retries(sandbox, conn):
    """Task runs retry a 503 five times; the Test button answers after the first."""
    conn_id, _ = conn(vendor="redox", retries=5)
    rule = sandbox.faults.add("/auth/token", status=503, times=None)
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok and "had a server error (HTTP 503" in message
    assert rule.hits == 1


def test_test_connection_refused_token_url_is_plain(sandbox, conn, closed_port):
    url = f"http://127.0.0.1:{closed_port}/token"
    conn_id, _ = conn(vendor="redox", auth_url=url)
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok
    assert f"Could not reach the token URL {url}: connection refused." in message
    assert "Max retries" not in message and "HTTPConnectionPool" not in message


def test_test_connection_timed_out_token_url(sandbox, conn, silent_server):
    conn_id, _ = conn(vendor="redox", auth_url=f"{silent_server}/token", timeout=1)
    ok, message = BackendAuthHook(conn_id).test_connection()
    # The connection's timeout is a total deadline (core/http/deadline.py).
    assert not ok and f"{silent_server}/token: did not answer within 1 s (total" in message


def test_test_connection_untrusted_certificate(sandbox, conn, self_signed_https):
    conn_id, _ = conn(vendor="redox", auth_url=f"{self_signed_https}/token")
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok
    assert f"{self_signed_https}/token: TLS certificate not trusted (" in message
    assert "set 'ca_bundle'" in message


def test_test_connection_wrong_key(sandbox, conn):
    conn_id, _ = conn(vendor="nhs_england", password=generate_client_key("RSA").private_pem)
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok
    assert "rejected the client assertion" in message
    assert "application's API key" in message  # the NHS England hint


def test_test_connection_bad_configuration(sandbox, conn):
    conn_id, _ = conn(vendor="redox", algorithm="ES384")
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok and "needs an EC P-384 key" in message


def test_test_connection_api_refuses_token(sandbox, conn):
    conn_id, _ = conn(vendor="redox")
    sandbox.faults.add("/fhir/metadata", status=403, times=2)
    ok, message = BackendAuthHook(conn_id).test_connection()
    assert not ok and "the API refused the token" in message


def test_test_connection_unknown_profile(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BAD",
        connection_json(host="https://h.example", login="c", password="x", profile="nope"),
    )
    ok, message = BackendAuthHook("bad").test_connection()
    assert not ok and "Unknown provider profile 'nope'" in message


def test_connection_uri_form(sandbox, monkeypatch):
    """AIRFLOW_CONN_* as a URI, the other form secrets backends use."""
    from urllib.parse import quote

    client_id, key = register(sandbox, "redox")
    uri = (
        f"backendauth://{quote(client_id, safe='')}:{quote(key.private_pem, safe='')}"
        f"@{quote(sandbox.fhir_base, safe='')}"
        f"?profile=redox&auth_url={quote(sandbox.token_url, safe='')}"
    )
    monkeypatch.setenv("AIRFLOW_CONN_URI_FORM", uri)
    hook = BackendAuthHook("uri_form")
    assert hook.base_url == sandbox.fhir_base
    assert hook.get_token()
    # host, port and path as separate URI parts: https unless the schema says otherwise
    monkeypatch.setenv(
        "AIRFLOW_CONN_URI_PARTS", "backendauth://c:k@fhir.example.org:8443/api%2FR4?profile=redox"
    )
    from airflow_provider_backendauth.core.auth.settings import ClientSettings

    settings = ClientSettings.from_connection(BackendAuthHook.get_connection("uri_parts"))
    assert settings.base_url == "https://fhir.example.org:8443/api/R4"


def test_usable_as_the_http_providers_auth_type(sandbox, conn, monkeypatch):
    import functools

    from airflow.providers.http.hooks.http import HttpHook

    from airflow_provider_backendauth.hooks.http_auth import BackendAuthHttpAuth

    conn_id, client_id = conn()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PLAIN_HTTP", f'{{"conn_type": "http", "host": "{sandbox.fhir_base}"}}'
    )
    http = HttpHook(
        method="GET",
        http_conn_id="plain_http",
        auth_type=functools.partial(BackendAuthHttpAuth, conn_id),
    )
    response = http.run("Patient", data={"_count": 2})
    assert response.json()["resourceType"] == "Bundle"
    assert sandbox.stats["token_requests_by_client"][client_id] == 1


# -- granted scope vs requested (SMART v1 and v2 spellings are one grant) -----------------


def _granting(sandbox, scope: str) -> None:
    # The token endpoint answers with this scope (a real 200 from the loopback server).
    sandbox.faults.add(
        "/auth/token",
        status=200,
        body_kind="json",
        body={"access_token": "t" * 24, "token_type": "Bearer", "expires_in": 300, "scope": scope},
    )


def test_a_v1_spelling_of_the_requested_v2_scope_is_no_narrowing(sandbox, conn, caplog):
    conn_id, _ = conn(vendor="smart")
    _granting(sandbox, "system/*.read")
    _, message = BackendAuthHook(conn_id).test_connection()
    assert "granted scope 'system/*.read')" in message, message
    assert "does not cover" not in message + caplog.text


def test_a_narrower_grant_is_said(sandbox, conn, caplog):
    conn_id, _ = conn(vendor="smart")
    _granting(sandbox, "system/Patient.read")
    _, message = BackendAuthHook(conn_id).test_connection()
    assert "which does not cover system/*.rs" in message, message
    assert "does not cover system/*.rs" in caplog.text
