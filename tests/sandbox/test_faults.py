"""Fault rules over HTTP: status answers, Retry-After, delays, dropped connections."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
import requests

from backendauth_sandbox import Sandbox

DISCOVERY = "/fhir/.well-known/smart-configuration"


def get(sb: Sandbox, path: str = DISCOVERY) -> requests.Response:
    return requests.get(sb.url + path, timeout=10)


def test_status_once_then_normal(sb: Sandbox) -> None:
    rule = sb.faults.add(DISCOVERY, status=503)
    first = get(sb)
    assert first.status_code == 503
    outcome = first.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert get(sb).status_code == 200
    assert rule.hits == 1
    assert sb.faults.rules == []
    assert sb.stats["faults_applied"] == 1


def test_oauth_error_on_token_endpoint(sb: Sandbox) -> None:
    sb.faults.add("/auth/token", status=500, error="server_error", body="boom")
    response = requests.post(sb.token_url, data={"grant_type": "client_credentials"}, timeout=10)
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "error_description": "boom"}


def test_plain_text_401(sb: Sandbox) -> None:
    sb.faults.add("/fhir", status=401, body_kind="text", body="Access Denied")
    response = get(sb)
    assert response.status_code == 401
    assert response.text == "Access Denied"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sb.stats["unauthorized"] == 1


def test_operation_outcome_fields(sb: Sandbox) -> None:
    sb.faults.add("/fhir", status=500, issue_code="processing", severity="fatal", body="bad")
    issue = get(sb).json()["issue"][0]
    assert issue == {"severity": "fatal", "code": "processing", "diagnostics": "bad"}


def test_429_retry_after_seconds_and_http_date(sb: Sandbox) -> None:
    sb.faults.add("/fhir", status=429, retry_after=2)
    sb.faults.add("/fhir", status=429, retry_after=120, retry_after_http_date=True)
    first = get(sb)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    second = get(sb)
    when = parsedate_to_datetime(second.headers["Retry-After"])
    assert 100 < when.timestamp() - time.time() <= 121
    assert get(sb).status_code == 200


def test_times_none_until_removed_and_method_filter(sb: Sandbox) -> None:
    rule = sb.faults.add("/fhir", status=503, times=None, method="GET")
    assert [get(sb).status_code for _ in range(3)] == [503, 503, 503]
    assert requests.head(sb.url + DISCOVERY, timeout=10).status_code == 200
    assert sb.faults.remove(rule)
    assert get(sb).status_code == 200


def test_count_alias(sb: Sandbox) -> None:
    sb.faults.add("/fhir", status=502, count=2)
    assert [get(sb).status_code for _ in range(3)] == [502, 502, 200]


def test_delay(sb: Sandbox) -> None:
    sb.faults.add(DISCOVERY, delay=0.4)
    start = time.monotonic()
    assert get(sb).status_code == 200
    assert time.monotonic() - start >= 0.4
    with pytest.raises(requests.exceptions.ReadTimeout):
        sb.faults.add(DISCOVERY, delay=2.0)
        requests.get(sb.url + DISCOVERY, timeout=0.3)


def test_drop_connection(sb: Sandbox) -> None:
    sb.faults.add(DISCOVERY, drop=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        get(sb)
    assert get(sb).status_code == 200
    assert sb.stats["faults_applied"] == 1


def test_drop_mid_body(sb: Sandbox) -> None:
    sb.faults.add(DISCOVERY, drop_after_bytes=20)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(sb)
    assert get(sb).status_code == 200


def test_hold_after_bytes_stalls_until_released(sb: Sandbox) -> None:
    full = get(sb).content
    rule = sb.faults.add(DISCOVERY, hold_after_bytes=20)
    with requests.get(sb.url + DISCOVERY, stream=True, timeout=10) as held:
        assert held.raw.read(20) == full[:20]  # the first bytes arrive...
        deadline = time.monotonic() + 10
        while sb.stats.get("responses_held", 0) < 1:  # ...then the server holds the rest
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert requests.get(sb.url + DISCOVERY, timeout=10).content == full  # once only
        released = requests.post(sb.url + f"/_sandbox/faults/{rule.id}/release", timeout=10)
        assert released.json() == {"released": True}
        assert held.raw.read() == full[20:]
    assert sb.stats["responses_released"] == 1
    assert not sb.faults.release(rule)


def test_extra_headers(sb: Sandbox) -> None:
    sb.faults.add(DISCOVERY, headers={"X-Injected": "yes"})
    assert get(sb).headers["X-Injected"] == "yes"


def test_bad_rules_rejected(sb: Sandbox) -> None:
    with pytest.raises(ValueError):
        sb.faults.add("/", status=42)
    with pytest.raises(ValueError):
        sb.faults.add("/", retry_after=3)
    with pytest.raises(ValueError):
        sb.faults.add("/", times=0)
    with pytest.raises(TypeError):
        sb.faults.add("/", stauts=500)


def test_control_api_is_never_faulted(sb: Sandbox) -> None:
    sb.faults.add("/", status=500, times=None)
    assert requests.get(sb.url + "/_sandbox/stats", timeout=10).status_code == 200
    sb.faults.clear()
