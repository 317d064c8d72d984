"""The sandbox's DPoP mode (RFC 9449), driven with raw requests and jwcrypto-signed proofs
(``backendauth_sandbox.testing.dpop_proof``): no client code is involved, so these tests say
what the server checks, and the client's tests can rely on it."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import (
    ClientKey,
    assertion_claims,
    dpop_proof,
    generate_client_key,
    sign_assertion,
    token_request_form,
)


@pytest.fixture(scope="module")
def dpop_key() -> ClientKey:
    return generate_client_key("EC-P256")


def _register(sb: Sandbox, rsa_key: ClientKey, dpop: str = "require") -> str:
    client_id = f"dpop-{dpop}-{time.monotonic_ns()}"
    sb.register_client(client_id, rsa_key.public_jwks, vendor="smart", dpop=dpop)
    return client_id


def _token_request(
    sb: Sandbox, client_id: str, key: ClientKey, proof: str | None, assertion: str | None = None
) -> requests.Response:
    assertion = assertion or sign_assertion(key, assertion_claims(client_id, sb.token_url))
    headers = {} if proof is None else {"DPoP": proof}
    return requests.post(
        sb.token_url,
        data=token_request_form(assertion, "system/*.rs"),
        headers=headers,
        timeout=10,
    )


def _token(sb: Sandbox, client_id: str, key: ClientKey, dpop_key: ClientKey) -> str:
    nonce = sb.dpop.nonce if sb.settings.dpop_nonce else None
    proof = dpop_proof(dpop_key, "POST", sb.token_url, nonce=nonce)
    answer = _token_request(sb, client_id, key, proof)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"
    token: str = answer.json()["access_token"]
    return token


def _get(url: str, token: str, proof: str | None, scheme: str = "DPoP") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return requests.get(url, headers=headers, timeout=10)


def _reason(response: requests.Response) -> str:
    return str(response.headers.get("WWW-Authenticate", "")) + response.text


# -- the token endpoint ------------------------------------------------------------------------


def test_a_client_that_requires_dpop_gets_no_token_without_a_proof(sb, rsa_key):
    client_id = _register(sb, rsa_key)
    answer = _token_request(sb, client_id, rsa_key, None)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_dpop_proof"
    assert "DPoP proof JWT not provided" in answer.json()["error_description"]


def test_a_proof_binds_the_token_and_allow_mode_still_issues_bearer(sb, rsa_key, dpop_key):
    client_id = _register(sb, rsa_key, dpop="allow")
    bearer = _token_request(sb, client_id, rsa_key, None)
    assert bearer.status_code == 200 and bearer.json()["token_type"].lower() == "bearer"
    assert _get(f"{sb.fhir_base}/Patient", bearer.json()["access_token"], None, "Bearer").ok
    token = _token(sb, client_id, rsa_key, dpop_key)
    assert sb.stats["dpop"]["tokens_issued"] == 1
    # Bound: the same token as Bearer is refused even for a client that may use either.
    assert _get(f"{sb.fhir_base}/Patient", token, None, "Bearer").status_code == 401


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"typ": "JWT"}, "typ must be 'dpop+jwt'"),
        ({"method": "GET"}, "htm"),
        ({"url": "http://127.0.0.1:1/auth/token"}, "htu"),
        ({"query": True}, "query or fragment"),
        ({"iat": -3600}, "s old"),
        ({"iat": 3600}, "ahead"),
        ({"claims": {"jti": None}}, "jti"),
        ({"claims": {"ath": "x"}}, "ath is for resource requests only"),
        ({"alg": "HS256"}, "not an asymmetric"),
    ],
    ids=["typ", "htm", "htu", "htu-query", "old", "future", "no-jti", "ath", "hs256"],
)
def test_the_token_endpoint_refuses_a_bad_proof(sb, rsa_key, dpop_key, change, reason):
    client_id = _register(sb, rsa_key)
    url = sb.token_url + ("?x=1" if change.get("query") else "")
    iat = time.time() + change.get("iat", 0)
    if change.get("alg") == "HS256":
        proof = dpop_proof(dpop_key, "POST", url).split(".")
        import base64
        import json

        header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}
        proof[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        text = ".".join(proof)
    else:
        text = dpop_proof(
            dpop_key,
            change.get("method", "POST"),
            change.get("url", url),
            iat=iat,
            typ=change.get("typ", "dpop+jwt"),
            claims=change.get("claims"),
        )
    answer = _token_request(sb, client_id, rsa_key, text)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_dpop_proof"
    assert reason in answer.json()["error_description"]


def test_a_proof_with_a_private_jwk_is_refused(sb, rsa_key):
    client_id = _register(sb, rsa_key)
    key = generate_client_key("EC-P256")
    import base64
    import json

    parts = dpop_proof(key, "POST", sb.token_url).split(".")
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    header["jwk"] = key.private_jwk
    parts[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    answer = _token_request(sb, client_id, rsa_key, ".".join(parts))
    assert answer.status_code == 400 and "private member" in answer.json()["error_description"]


def test_a_replayed_proof_is_refused(sb, rsa_key, dpop_key):
    client_id = _register(sb, rsa_key)
    proof = dpop_proof(dpop_key, "POST", sb.token_url)
    assert _token_request(sb, client_id, rsa_key, proof).status_code == 200
    again = _token_request(sb, client_id, rsa_key, proof)
    assert again.status_code == 400 and "replayed" in again.json()["error_description"]


def test_nonce_at_the_token_endpoint_spends_the_assertion(sb, rsa_key, dpop_key):
    sb.settings.dpop_nonce = True
    client_id = _register(sb, rsa_key)
    assertion = sign_assertion(rsa_key, assertion_claims(client_id, sb.token_url))
    first = _token_request(
        sb, client_id, rsa_key, dpop_proof(dpop_key, "POST", sb.token_url), assertion
    )
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    # The same assertion again, now with the nonce: its jti was spent by the first attempt.
    replay = _token_request(
        sb, client_id, rsa_key, dpop_proof(dpop_key, "POST", sb.token_url, nonce=nonce), assertion
    )
    assert replay.status_code == 401 and "already used" in replay.json()["error_description"]
    fresh = _token_request(
        sb, client_id, rsa_key, dpop_proof(dpop_key, "POST", sb.token_url, nonce=nonce)
    )
    assert fresh.status_code == 200 and fresh.json()["token_type"] == "DPoP"
    assert fresh.headers["DPoP-Nonce"] == sb.dpop.nonce


# -- the resource endpoints ---------------------------------------------------------------------


def test_resource_requests_need_the_dpop_scheme_a_proof_with_ath_and_the_bound_key(
    sb, rsa_key, dpop_key
):
    client_id = _register(sb, rsa_key)
    token = _token(sb, client_id, rsa_key, dpop_key)
    url = f"{sb.fhir_base}/Patient"
    good = _get(url + "?_count=2", token, dpop_proof(dpop_key, "GET", url, access_token=token))
    assert good.status_code == 200, good.text
    as_bearer = _get(url, token, None, "Bearer")
    assert as_bearer.status_code == 401 and "sent as Bearer" in _reason(as_bearer)
    assert _get(url, token, None).status_code == 401  # no proof
    no_ath = _get(url, token, dpop_proof(dpop_key, "GET", url))
    assert no_ath.status_code == 401 and "ath" in _reason(no_ath)
    other = generate_client_key("EC-P256")
    stolen = _get(url, token, dpop_proof(other, "GET", url, access_token=token))
    assert stolen.status_code == 401 and "bound to" in _reason(stolen)
    wrong_url = _get(url, token, dpop_proof(dpop_key, "GET", url + "/x", access_token=token))
    assert wrong_url.status_code == 401 and "htu" in _reason(wrong_url)
    assert 'DPoP error="invalid_dpop_proof"' in wrong_url.headers["WWW-Authenticate"]


def test_resource_nonce_is_issued_and_rotated(sb, rsa_key, dpop_key):
    sb.settings.update(dpop_nonce=True, dpop_nonce_rotate_after=2)
    client_id = _register(sb, rsa_key)
    token = _token(sb, client_id, rsa_key, dpop_key)  # spends one use of the nonce
    url = f"{sb.fhir_base}/metadata"
    patients = f"{sb.fhir_base}/Patient"
    missing = _get(patients, token, dpop_proof(dpop_key, "GET", patients, access_token=token))
    assert missing.status_code == 401
    assert 'DPoP error="use_dpop_nonce"' in missing.headers["WWW-Authenticate"]
    nonce = missing.headers["DPoP-Nonce"]
    second = _get(
        patients, token, dpop_proof(dpop_key, "GET", patients, access_token=token, nonce=nonce)
    )
    assert second.status_code == 200
    # The second use retired it: the answer already carries the next nonce.
    assert second.headers["DPoP-Nonce"] != nonce
    stale = _get(
        patients, token, dpop_proof(dpop_key, "GET", patients, access_token=token, nonce=nonce)
    )
    assert stale.status_code == 401 and "stale" in _reason(stale)
    sb.rotate_dpop_nonce()
    assert sb.stats["dpop"]["nonces_rotated"] >= 2
    assert requests.get(url, timeout=10).ok  # metadata stays public


def test_bulk_status_and_file_downloads_check_proofs(sb, rsa_key, dpop_key):
    client_id = _register(sb, rsa_key)
    token = _token(sb, client_id, rsa_key, dpop_key)

    def call(method: str, url: str, **kwargs: Any) -> requests.Response:
        proof = dpop_proof(dpop_key, method, url.split("?")[0], access_token=token)
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof, **kwargs.pop("headers", {})}
        return requests.request(method, url, headers=headers, timeout=10, **kwargs)

    kickoff = call(
        "GET",
        f"{sb.fhir_base}/Patient/$export",
        headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
    )
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["Content-Location"]
    for _ in range(200):
        status = call("GET", status_url)
        if status.status_code == 200:
            break
        time.sleep(0.05)
    assert status.status_code == 200, status.text
    file_url = status.json()["output"][0]["url"]
    assert _get(file_url, token, None, "Bearer").status_code == 401
    downloaded = call("GET", file_url)
    assert downloaded.status_code == 200 and downloaded.content


def test_the_control_api_registers_dpop_clients_and_rotates_the_nonce(sb, rsa_key):
    answer = requests.post(
        f"{sb.url}/_sandbox/clients",
        json={"client_id": "ctl-dpop", "public_jwks": rsa_key.public_jwks, "dpop": "require"},
        timeout=10,
    )
    assert answer.status_code == 201 and answer.json()["dpop"] == "require"
    before = sb.dpop.nonce
    assert requests.post(f"{sb.url}/_sandbox/dpop-nonce/rotate", timeout=10).ok
    assert sb.dpop.nonce != before
    refused = requests.post(
        f"{sb.url}/_sandbox/clients",
        json={"client_id": "x", "public_jwks": rsa_key.public_jwks, "dpop": "sometimes"},
        timeout=10,
    )
    assert refused.status_code == 400 and "dpop must be one of" in refused.text
