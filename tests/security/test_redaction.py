"""Finding 4: the access token in error text. Server text quoting the token (an
OperationOutcome "Token Bearer abc... is not valid", or the bare value) must not reach a
``FhirError``, the trigger's failure event or the task log; nor a client id that is a JWT an
``InvalidClientError``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.errors import BackendAuthError, FhirError
from airflow_provider_backendauth.core.redact import redact, remember_secret
from tests.security.hostile import HostileServer, Reply, Seen


def quoting_outcome(status: int = 400) -> Any:
    """An OperationOutcome whose diagnostics quote the request's own token, twice."""

    def reply(seen: Seen) -> Reply:
        header = seen.authorization or "Bearer none"
        value = header.split(" ", 1)[1]
        text = f"Token {header} is not valid; token={value} rejected"
        return Reply(
            status,
            body={
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "security", "diagnostics": text}],
            },
        )

    return reply


def assert_clean(text: str, good: HostileServer) -> None:
    assert good.tokens_issued, "the test should have obtained a token"
    for token in good.tokens_issued:
        assert token not in text
    assert "Bearer tok" not in text


def test_fhir_error_and_task_log(good, connect, tmp_path, caplog) -> None:
    from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

    good.routes["/fhir/Patient"] = quoting_outcome()
    op = FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=connect(),
        resource_type="Patient",
        destination=str(tmp_path / "out"),
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FhirError) as excinfo:
        op.execute({})
    assert "is not valid" in str(excinfo.value)  # the server's words are kept
    assert_clean(str(excinfo.value), good)
    assert_clean(excinfo.value.diagnostics or "", good)
    assert_clean(caplog.text, good)


def test_trigger_failure_event(good, connect, capfd) -> None:
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    good.routes["/status"] = quoting_outcome(400)
    trigger = BulkExportTrigger(
        connect(), f"{good.url}/status", poll_settings=PollSettings(poll_interval_min=0.05)
    )

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first(), 30))
    assert event["status"] == "error"
    assert "is not valid" in event["message"]
    assert_clean(event["message"], good)
    assert_clean(capfd.readouterr().out, good)


def test_invalid_client_error_does_not_print_a_jwt_client_id(good, client_key, monkeypatch):
    import json

    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    jwt_like = "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJzZWNyZXQtY2xpZW50In0.c2lnbmF0dXJlLXZhbHVl"
    good.routes["/token"] = Reply(
        400, body={"error": "invalid_client", "error_description": f"unknown {jwt_like}"}
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_JWTID",
        json.dumps(
            {
                "conn_type": "backendauth",
                "host": f"{good.url}/fhir",
                "login": jwt_like,
                "password": client_key.private_pem,
                "extra": {"profile": "custom", "auth_url": f"{good.url}/token", "retries": 0},
            }
        ),
    )
    with pytest.raises(BackendAuthError) as excinfo:
        BackendAuthHook("jwtid").get_token()
    assert jwt_like not in str(excinfo.value)
    assert "eyJzdWIi" not in str(excinfo.value)


@pytest.mark.parametrize(
    "text",
    [
        "Token Bearer abc.def-ghi is not valid",
        "authorization: bearer%20abc123456789",
        "see https://store.example/b/file.ndjson?X-Amz-Signature=deadbeef&X-Amz-Credential=AK",
        "access_token=abcdefghijkl&x=1",
    ],
)
def test_redact_by_shape(text: str) -> None:
    out = redact(text)
    for secret in ("abc.def-ghi", "abc123456789", "deadbeef", "X-Amz-Credential", "abcdefghijkl"):
        assert secret not in out


def test_redact_by_value() -> None:
    remember_secret("opaque-token-value-1234")
    assert redact("the server said: opaque-token-value-1234 expired") == (
        "the server said: [redacted] expired"
    )
    err = FhirError("GET x failed: opaque-token-value-1234", diagnostics="opaque-token-value-1234")
    assert "opaque-token-value-1234" not in str(err) + (err.diagnostics or "")


def test_prose_about_assertions_is_not_mangled() -> None:
    """Only a secret's name followed by its value is redacted: an explanation that mentions
    "the client assertion" stays readable in the Test button and in `backendauth check`."""
    from airflow_provider_backendauth.core.redact import redact

    prose = "The server rejected the client assertion for client id 'c2'."
    assert redact(prose) == prose
    assert redact("access_token=abc123&x=1") == "access_token=[redacted]&x=1"
    assert "s3cr3t" not in redact('{"access_token": "s3cr3t", "x": 1}')
    assert "xyz" not in redact("client_assertion: xyz")
