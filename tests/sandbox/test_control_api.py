"""The /_sandbox control API drives a sandbox exactly like the Python API does."""

from __future__ import annotations

import requests

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import (
    ClientKey,
    assertion_claims,
    sign_assertion,
    token_request_form,
)


def control(sb: Sandbox, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, sb.url + "/_sandbox" + path, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_register_client_and_get_token(sb: Sandbox, rsa_key: ClientKey) -> None:
    created = control(
        sb,
        "POST",
        "/clients",
        json={
            "client_id": "remote",
            "public_jwks": rsa_key.public_jwks,
            "vendor": "nhs_england",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["algorithms"] == ["RS512"]
    assertion = sign_assertion(rsa_key, assertion_claims("remote", sb.token_url), "RS512")
    token = requests.post(sb.token_url, data=token_request_form(assertion), timeout=10)
    assert token.status_code == 200, token.text
    listed = control(sb, "GET", "/clients").json()
    assert [c["client_id"] for c in listed] == ["remote"]
    assert control(sb, "DELETE", "/clients/remote").json() == {"removed": True}


def test_register_client_with_pem(sb: Sandbox, rsa_key: ClientKey) -> None:
    created = control(
        sb,
        "POST",
        "/clients",
        json={
            "client_id": "pem",
            "pem": rsa_key.public_pem,
            "vendor": "any",
            "scopes": ["x"],
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == ["x"]


def test_bad_control_requests(sb: Sandbox) -> None:
    assert control(sb, "POST", "/clients", json={"client_id": "x"}).status_code == 400
    assert (
        control(
            sb,
            "POST",
            "/clients",
            json={"client_id": "x", "public_jwks": {"keys": []}, "vendor": "smart"},
        ).status_code
        == 400
    )
    assert control(sb, "POST", "/faults", json={"path": "/", "bogus": 1}).status_code == 400
    assert control(sb, "POST", "/settings", json={"nope": 1}).status_code == 400
    assert control(sb, "POST", "/settings", json={"bulk_file_origin": "mars"}).status_code == 400
    assert control(sb, "POST", "/faults", data="not json").status_code == 400
    assert control(sb, "GET", "/nothing").status_code == 404


def test_faults_via_control(sb: Sandbox) -> None:
    created = control(
        sb,
        "POST",
        "/faults",
        json={"path": "/fhir/.well-known", "status": 429, "retry_after": 3, "times": None},
    )
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    answer = requests.get(sb.fhir_base + "/.well-known/smart-configuration", timeout=10)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert [r["id"] for r in control(sb, "GET", "/faults").json()] == [rule_id]
    assert control(sb, "DELETE", f"/faults/{rule_id}").json() == {"removed": True}
    control(sb, "POST", "/faults", json={"path": "/", "status": 500})
    assert control(sb, "DELETE", "/faults").status_code == 200
    assert sb.faults.rules == []


def test_tokens_lifetime_settings_stats(sb: Sandbox) -> None:
    assert control(sb, "POST", "/token-lifetime", json={"seconds": 7}).json() == {
        "token_lifetime": 7
    }
    assert sb.token_lifetime == 7
    assert control(sb, "POST", "/token-lifetime", json={"seconds": "x"}).status_code == 400
    minted = control(sb, "POST", "/tokens", json={"client_id": "c", "scope": "system/*.rs"})
    assert minted.status_code == 201
    assert control(sb, "POST", "/expire-tokens").json() == {"expired": 1}
    settings = control(sb, "POST", "/settings", json={"bulk_gzip": False, "bulk_job_seconds": 2})
    assert settings.json()["bulk_gzip"] is False
    assert sb.settings.bulk_gzip is False
    assert sb.bulk_job_seconds == 2
    stats = control(sb, "GET", "/stats").json()
    assert stats["requests_by_kind"]["control"] >= 5
    assert control(sb, "POST", "/stats/reset").status_code == 200
    assert control(sb, "GET", "/stats").json()["requests"] == 1
    info = control(sb, "GET", "/info").json()
    assert info["token_url"] == sb.token_url
    assert info["fhir_base"] == sb.fhir_base
