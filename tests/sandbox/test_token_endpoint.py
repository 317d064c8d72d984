"""The token endpoint over HTTP: every vendor mode accepts a correct assertion and rejects
each wrong thing with a precise error."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt as pyjwt
import pytest
import requests

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import (
    ClientKey,
    assertion_claims,
    generate_client_key,
    sign_assertion,
    token_request_form,
)


def post(sb: Sandbox, form: dict[str, str]) -> requests.Response:
    return requests.post(sb.token_url, data=form, timeout=10)


def smart_request(
    sb: Sandbox,
    key: ClientKey,
    client_id: str = "smart-client",
    alg: str = "RS384",
    scope: str | None = "system/*.rs",
    header_kwargs: dict[str, Any] | None = None,
    **claims: Any,
) -> requests.Response:
    aud = claims.pop("aud", sb.token_url)
    assertion = sign_assertion(
        key, assertion_claims(client_id, aud, **claims), alg, **(header_kwargs or {})
    )
    return post(sb, token_request_form(assertion, scope))


def assert_rejected(
    response: requests.Response, fragment: str, error: str = "invalid_client", status: int = 401
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert fragment in body["error_description"], body["error_description"]


@pytest.fixture
def smart(sb: Sandbox, rsa_key: ClientKey, ec_keys: dict[str, ClientKey]) -> Sandbox:
    sb.register_client(
        "smart-client",
        {"keys": [rsa_key.public_jwk, ec_keys["EC-P384"].public_jwk]},
        vendor="smart",
    )
    return sb


# --- smart (the strict baseline) ------------------------------------------------------


def test_smart_accepts_rs384_and_es384(smart: Sandbox, rsa_key: ClientKey, ec_keys: Any) -> None:
    ok = smart_request(smart, rsa_key)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/*.rs"
    assert ok.headers["Cache-Control"] == "no-store"
    ok = smart_request(smart, ec_keys["EC-P384"], alg="ES384")
    assert ok.status_code == 200, ok.text


def test_smart_accepts_pyjwt_signed_assertion(smart: Sandbox, rsa_key: ClientKey) -> None:
    now = int(time.time())
    assertion = pyjwt.encode(
        {
            "iss": "smart-client",
            "sub": "smart-client",
            "aud": smart.token_url,
            "exp": now + 300,
            "jti": "pyjwt-1",
        },
        rsa_key.private_pem,
        algorithm="RS384",
        headers={"kid": rsa_key.kid, "typ": "JWT"},
    )
    response = post(smart, token_request_form(assertion, "system/*.read"))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/*.read"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"alg": "RS256"}, "alg 'RS256' is not allowed"),
        ({"alg": "PS384"}, "alg 'PS384' is not allowed"),
        ({"header_kwargs": {"kid": None}}, "missing 'kid'"),
        ({"header_kwargs": {"kid": "nope"}}, "no registered key has kid 'nope'"),
        ({"header_kwargs": {"typ": None}}, "missing 'typ'"),
        ({"header_kwargs": {"typ": "at+jwt"}}, "typ 'at+jwt' is not accepted"),
        ({"header_kwargs": {"headers": {"jku": "https://x.example/jwks"}}}, "no JWKS URL"),
        ({"aud": "https://elsewhere.example/token"}, "does not match the token endpoint"),
        ({"lifetime": 600}, "allows at most 300 s"),
        ({"lifetime": -120}, "assertion expired"),
        ({"exp": None}, "missing the 'exp' claim"),
        ({"exp": "soon"}, "must be a NumericDate"),
        ({"exp": int(time.time() * 1000)}, "milliseconds"),
        ({"jti": None}, "missing the 'jti' claim"),
        ({"sub": "someone-else"}, "iss and sub must both equal"),
        ({"sub": None}, "missing the 'sub' claim"),
        ({"iat": int(time.time()) + 3600}, "iat is"),
        ({"nbf": int(time.time()) + 3600}, "nbf is"),
    ],
)
def test_smart_rejects(
    smart: Sandbox, rsa_key: ClientKey, change: dict[str, Any], fragment: str
) -> None:
    change = dict(change)
    alg = change.pop("alg", "RS384")
    header_kwargs = change.pop("header_kwargs", None)
    assert_rejected(
        smart_request(smart, rsa_key, alg=alg, header_kwargs=header_kwargs, **change), fragment
    )
    assert smart.stats["token_failures"] == 1


def test_smart_rejects_wrong_key(smart: Sandbox, other_rsa_key: ClientKey) -> None:
    assert_rejected(smart_request(smart, other_rsa_key), "signature verification failed")


def test_smart_rejects_key_type_mismatch(smart: Sandbox, rsa_key: ClientKey, ec_keys: Any) -> None:
    ec_kid = ec_keys["EC-P384"].kid
    response = smart_request(smart, rsa_key, alg="RS384", header_kwargs={"kid": ec_kid})
    assert_rejected(response, "does not fit the registered key type (EC)")


def test_smart_rejects_replayed_jti(smart: Sandbox, rsa_key: ClientKey) -> None:
    assert smart_request(smart, rsa_key, jti="same").status_code == 200
    assert_rejected(smart_request(smart, rsa_key, jti="same"), "already used")


def test_smart_jku_must_match_registration(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("smart-client", rsa_key.public_jwks, jku="https://app.example/jwks.json")
    good = smart_request(
        sb, rsa_key, header_kwargs={"headers": {"jku": "https://app.example/jwks.json"}}
    )
    assert good.status_code == 200, good.text
    bad = smart_request(sb, rsa_key, header_kwargs={"headers": {"jku": "https://evil.example/j"}})
    assert_rejected(bad, "does not match the registered JWKS URL")


def test_alg_none_and_hs256_never_accepted(smart: Sandbox, rsa_key: ClientKey) -> None:
    claims = assertion_claims("smart-client", smart.token_url)
    header = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
        .rstrip(b"=")
        .decode()
    )
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_rejected(
        post(smart, token_request_form(f"{header}.{payload}.", "system/*.rs")), "never accepted"
    )
    hs = pyjwt.encode(
        claims, "secret-secret-secret-secret-secret!", algorithm="HS256", headers={"kid": "rsa-1"}
    )
    assert_rejected(post(smart, token_request_form(hs, "system/*.rs")), "never accepted")


def test_request_shape_errors(smart: Sandbox, rsa_key: ClientKey) -> None:
    assertion = sign_assertion(rsa_key, assertion_claims("smart-client", smart.token_url), "RS384")
    form = token_request_form(assertion, "system/*.rs")

    as_json = requests.post(smart.token_url, json=form, timeout=10)
    assert_rejected(as_json, "JSON body", "invalid_request", 400)
    in_query = requests.post(smart.token_url, params=form, timeout=10)
    assert_rejected(in_query, "URL query", "invalid_request", 400)
    wrong_grant = post(smart, {**form, "grant_type": "authorization_code"})
    assert_rejected(wrong_grant, "client_credentials", "unsupported_grant_type", 400)
    no_grant = post(smart, {k: v for k, v in form.items() if k != "grant_type"})
    assert_rejected(no_grant, "grant_type is missing", "invalid_request", 400)
    wrong_type = post(smart, {**form, "client_assertion_type": "jwt"})
    assert_rejected(wrong_type, "client_assertion_type must be", "invalid_request", 400)
    no_assertion = post(smart, {k: v for k, v in form.items() if k != "client_assertion"})
    assert_rejected(no_assertion, "client_assertion is missing", "invalid_request", 400)
    garbage = post(smart, {**form, "client_assertion": "not-a-jwt"})
    assert_rejected(garbage, "not a compact JWS")
    secret = post(smart, {**form, "client_secret": "s3cret"})
    assert_rejected(secret, "client_secret is not accepted")
    twice = requests.post(
        smart.token_url,
        data=[*form.items(), ("scope", "system/*.read")],
        timeout=10,
    )
    assert_rejected(twice, "more than once: scope", "invalid_request", 400)
    get = requests.get(smart.token_url, timeout=10)
    assert get.status_code == 405
    assert get.headers["Allow"] == "POST"


def test_unknown_client(smart: Sandbox, rsa_key: ClientKey) -> None:
    assert_rejected(smart_request(smart, rsa_key, client_id="ghost"), "unknown client_id 'ghost'")
    assert smart.stats["token_requests_by_client"] == {"ghost": 1}


@pytest.mark.parametrize(
    ("scope", "fragment"),
    [
        (None, "scope parameter is required"),
        ("", "scope parameter is required"),
        ("patient/*.rs", "only ask for system/ scopes"),
        ("launch openid", "not a SMART scope"),
    ],
)
def test_smart_scope_errors(
    smart: Sandbox, rsa_key: ClientKey, scope: str | None, fragment: str
) -> None:
    assert_rejected(smart_request(smart, rsa_key, scope=scope), fragment, "invalid_scope", 400)


def test_registered_scopes_limit_grant(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("smart-client", rsa_key.public_jwks, scopes=["system/Patient.rs"])
    ok = smart_request(sb, rsa_key, scope="system/Patient.r")
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "system/Patient.r"
    assert_rejected(
        smart_request(sb, rsa_key, scope="system/Observation.rs"),
        "not allowed for this client",
        "invalid_scope",
        400,
    )
    assert_rejected(
        smart_request(sb, rsa_key, scope="system/Patient.cruds"),
        "not allowed for this client",
        "invalid_scope",
        400,
    )


def test_token_lifetime_and_expiry_knobs(smart: Sandbox, rsa_key: ClientKey) -> None:
    smart.token_lifetime = 5
    assert smart_request(smart, rsa_key).json()["expires_in"] == 5
    assert smart.expire_tokens() == 1
    assert smart.expire_tokens() == 0


# --- the other vendors ---------------------------------------------------------------------


def vendor_request(
    sb: Sandbox,
    key: ClientKey,
    client_id: str,
    alg: str,
    scope: str | None = None,
    typ: str | None = "JWT",
    kid: bool = True,
    headers: dict[str, Any] | None = None,
    aud: str | None = None,
    form_extra: dict[str, str] | None = None,
    **claims: Any,
) -> requests.Response:
    assertion = sign_assertion(
        key,
        assertion_claims(client_id, aud or sb.token_url, **claims),
        alg,
        typ=typ,
        kid=kid,
        headers=headers,
    )
    return post(sb, token_request_form(assertion, scope, **(form_extra or {})))


def test_mydatahelps(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("MyDataHelps.1234.test", rsa_key.public_jwks, vendor="mydatahelps")
    cid = "MyDataHelps.1234.test"
    ok = vendor_request(sb, rsa_key, cid, "RS256", scope="api", kid=False, lifetime=200)
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"] == "Bearer"
    assert_rejected(
        vendor_request(sb, rsa_key, cid, "RS384", scope="api"),
        "alg 'RS384' is not allowed",
        status=400,
    )
    assert_rejected(
        vendor_request(sb, rsa_key, cid, "RS256", scope="system/*.rs"),
        "exactly 'api'",
        "invalid_scope",
        400,
    )
    assert_rejected(
        vendor_request(sb, rsa_key, cid, "RS256", scope="api", typ=None),
        "missing 'typ'",
        status=400,
    )


def test_koppeltaal_plain_text_errors(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("kt-app", rsa_key.public_jwks, vendor="koppeltaal")
    ok = vendor_request(sb, rsa_key, "kt-app", "RS512", scope="")
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "system/*.cruds"  # set by the server, not the client
    bad = vendor_request(sb, rsa_key, "kt-app", "RS384", scope="")
    assert bad.status_code == 401
    assert bad.headers["Content-Type"].startswith("text/plain")
    assert bad.text == "Access Denied"
    assert "RS384" in bad.headers["X-Sandbox-Reason"]
    no_scope = vendor_request(sb, rsa_key, "kt-app", "RS512", scope=None)
    assert no_scope.status_code == 400
    assert no_scope.text == "Bad Request"
    assert "must be present" in no_scope.headers["X-Sandbox-Reason"]


def test_helseid(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("helse-1", rsa_key.public_jwks, vendor="helseid")
    now = int(time.time())
    good: dict[str, Any] = {
        "scope": "nhn:cppa/access",
        "typ": "client-authentication+jwt",
        "form_extra": {"client_id": "helse-1"},
        "iat": now,
        "nbf": now,
        "lifetime": 60,
    }
    ok = vendor_request(sb, rsa_key, "helse-1", "RS512", **good)
    assert ok.status_code == 200, ok.text
    ok = vendor_request(sb, rsa_key, "helse-1", "PS256", aud=sb.issuer, **{**good, "typ": "JWT"})
    assert ok.status_code == 200, ok.text
    no_form_id = vendor_request(sb, rsa_key, "helse-1", "RS512", **{**good, "form_extra": {}})
    assert_rejected(no_form_id, "client_id must be sent as a form field", "invalid_request", 400)
    other_id = vendor_request(
        sb, rsa_key, "helse-1", "RS512", **{**good, "form_extra": {"client_id": "x"}}
    )
    assert_rejected(other_id, "does not match the assertion iss", status=400)
    assert_rejected(
        vendor_request(sb, rsa_key, "helse-1", "RS512", **{**good, "nbf": None}),
        "missing the 'nbf' claim",
        status=400,
    )
    assert_rejected(
        vendor_request(sb, rsa_key, "helse-1", "RS512", **{**good, "iat": None}),
        "missing the 'iat' claim",
        status=400,
    )
    assert_rejected(
        vendor_request(sb, rsa_key, "helse-1", "RS512", **{**good, "lifetime": 200}),
        "allows at most 60 s",
        status=400,
    )
    assert_rejected(
        vendor_request(sb, rsa_key, "helse-1", "RS512", **{**good, "scope": "api"}),
        "not an nhn: scope",
        "invalid_scope",
        400,
    )
    no_scope = vendor_request(sb, rsa_key, "helse-1", "RS512", **{**good, "scope": None})
    assert no_scope.status_code == 200, no_scope.text
    assert no_scope.json()["scope"] == "nhn:sandbox/read"
    assert_rejected(
        vendor_request(sb, rsa_key, "helse-1", "RS512", kid=False, **good),
        "missing 'kid'",
        status=400,
    )


def test_redox(sb: Sandbox, rsa_key: ClientKey, ec_keys: Any) -> None:
    sb.register_client(
        "redox-1", {"keys": [rsa_key.public_jwk, ec_keys["EC-P384"].public_jwk]}, vendor="redox"
    )
    now = int(time.time())
    assert vendor_request(sb, rsa_key, "redox-1", "RS384", iat=now).status_code == 200
    ok = vendor_request(sb, ec_keys["EC-P384"], "redox-1", "ES384", iat=now)
    assert ok.status_code == 200, ok.text
    assert_rejected(vendor_request(sb, rsa_key, "redox-1", "RS384"), "missing the 'iat' claim")
    assert_rejected(
        vendor_request(sb, rsa_key, "redox-1", "RS384", kid=False, iat=now), "missing 'kid'"
    )
    assert_rejected(
        vendor_request(sb, rsa_key, "redox-1", "RS384", iat=now, lifetime=900), "at most 300 s"
    )


def test_nhs_england(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("nhs-api-key", rsa_key.public_jwks, vendor="nhs_england")
    sb.token_lifetime = 599
    ok = vendor_request(sb, rsa_key, "nhs-api-key", "RS512", lifetime=305)
    assert ok.status_code == 200, ok.text
    assert ok.json()["expires_in"] == "599"
    assert_rejected(
        vendor_request(sb, rsa_key, "nhs-api-key", "RS512", lifetime=320), "at most 300 s"
    )
    assert_rejected(vendor_request(sb, rsa_key, "nhs-api-key", "RS512", typ=None), "missing 'typ'")
    assert_rejected(vendor_request(sb, rsa_key, "nhs-api-key", "RS512", kid=False), "missing 'kid'")
    assert_rejected(vendor_request(sb, rsa_key, "nhs-api-key", "RS384"), "not allowed")


def test_entra_id(sb: Sandbox, rsa_cert_key: ClientKey) -> None:
    sb.register_client("entra-app", rsa_cert_key.public_jwks, vendor="entra_id")
    key = rsa_cert_key
    good: dict[str, Any] = {
        "scope": "https://fhir.example/.default",
        "kid": False,
        "headers": {"x5t#S256": key.x5t_s256},
        "form_extra": {"client_id": "entra-app"},
    }
    ok = vendor_request(sb, key, "entra-app", "PS256", **good)
    assert ok.status_code == 200, ok.text
    legacy = vendor_request(sb, key, "entra-app", "RS256", **{**good, "headers": {"x5t": key.x5t}})
    assert legacy.status_code == 200, legacy.text
    assert_rejected(
        vendor_request(sb, key, "entra-app", "PS256", **{**good, "headers": {}}), "x5t#S256"
    )
    assert_rejected(
        vendor_request(sb, key, "entra-app", "PS256", **{**good, "headers": {"x5t#S256": "AAAA"}}),
        "matches no registered certificate",
    )
    assert_rejected(
        vendor_request(sb, key, "entra-app", "PS256", **{**good, "scope": "https://fhir.example"}),
        "/.default",
        "invalid_scope",
        400,
    )


def test_oracle_health_refuses_v2_scopes(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("cerner-1", rsa_key.public_jwks, vendor="oracle_health")
    assert_rejected(
        vendor_request(sb, rsa_key, "cerner-1", "RS384", scope="system/*.rs"),
        "only supports SMART v1",
        "invalid_scope",
        400,
    )
    ok = vendor_request(sb, rsa_key, "cerner-1", "RS384", scope="system/Patient.read")
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("vendor", "alg", "scope", "kid"),
    [
        ("medplum", "ES384", None, False),
        ("epic", "RS384", None, True),
        ("cms_dpc", "RS384", "system/*.*", True),
        ("athenahealth", "RS256", "athena/service/Athenanet.MDP.*", False),
    ],
)
def test_other_vendors_accept(
    sb: Sandbox,
    rsa_key: ClientKey,
    ec_keys: Any,
    vendor: str,
    alg: str,
    scope: str | None,
    kid: bool,
) -> None:
    key = ec_keys["EC-P384"] if alg.startswith("ES") else rsa_key
    sb.register_client("c", key.public_jwks, vendor=vendor)
    response = vendor_request(sb, key, "c", alg, scope=scope, kid=kid)
    assert response.status_code == 200, response.text


def test_cms_dpc_scope(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("dpc", rsa_key.public_jwks, vendor="cms_dpc")
    assert_rejected(
        vendor_request(sb, rsa_key, "dpc", "RS384", scope="system/*.rs"),
        "exactly 'system/*.*'",
        "invalid_scope",
        400,
    )


def test_token_rate_limit(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client(
        "athena", rsa_key.public_jwks, vendor="athenahealth", token_requests_per_minute=2
    )
    for _ in range(2):
        assert vendor_request(sb, rsa_key, "athena", "RS384", scope="x").status_code == 200
    limited = vendor_request(sb, rsa_key, "athena", "RS384", scope="x")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "60"
    assert limited.json()["error"] == "rate_limited"


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("RSA", a) for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")]
    + [("EC-P256", "ES256"), ("EC-P384", "ES384"), ("EC-P521", "ES512")],
)
def test_any_vendor_accepts_every_algorithm(
    sb: Sandbox, rsa_key: ClientKey, ec_keys: Any, kind: str, alg: str
) -> None:
    key = rsa_key if kind == "RSA" else ec_keys[kind]
    sb.register_client("any", key.public_jwks, vendor="any")
    response = vendor_request(sb, key, "any", alg, kid=False)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"


def test_algorithms_override(sb: Sandbox, rsa_key: ClientKey) -> None:
    sb.register_client("c", rsa_key.public_jwks, vendor="smart", algorithms=["RS512"])
    assert vendor_request(sb, rsa_key, "c", "RS512", scope="system/*.rs").status_code == 200
    rejected = vendor_request(sb, rsa_key, "c", "RS384", scope="system/*.rs")
    assert_rejected(rejected, "allowed: RS512")
    with pytest.raises(ValueError, match="never accepted"):
        sb.register_client("c", rsa_key.public_jwks, algorithms=["HS256"])
    with pytest.raises(ValueError, match="unknown vendor"):
        sb.register_client("c", rsa_key.public_jwks, vendor="acme")


def test_register_client_accepts_pem_and_private_jwk(sb: Sandbox) -> None:
    key = generate_client_key("EC-P256", kid="ec-kid")
    sb.register_client("pem", key.public_pem, vendor="any")
    assert vendor_request(sb, key, "pem", "ES256", kid=False).status_code == 200
    sb.register_client("jwk", key.private_jwk, vendor="smart", algorithms=["ES256"])
    registered = sb.clients.get("jwk")
    assert registered is not None
    assert "d" not in registered.keys[0]
    ok = vendor_request(sb, key, "jwk", "ES256", scope="system/*.rs")
    assert ok.status_code == 200, ok.text
