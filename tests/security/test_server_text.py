"""Issue 17: server text is made safe once before it reaches an exception, a log line, XCom
or a trigger event: redacted (by value and by shape) and its control characters escaped
(CR/LF would forge log lines; ANSI escapes reach whoever reads the log in a terminal).
Also the redaction gaps: a bare signature segment of the client assertion, a JSON-escaped
assertion in a token error, and a REST answer that echoes the request's headers into XCom.
And the audience rule: a fixed ``audience`` with a discovered token URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.errors import BackendAuthError, ConfigurationError
from tests.security.hostile import HostileServer, Reply, Seen

FORGED = "ok\r\n2026-01-01 INFO forged line\x1b[31m red \x1b]0;title\x07\x85end"
RAW_CONTROLS = ("\r", "\n", "\x1b", "\x07", "\x85")


def outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


def assert_safe(text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, repr(text)
    # Shown, escaped (or, where the text was folded to one line, its CR/LF became spaces).
    assert "forged line" in text and "\\x1b" in text


def test_rest_error_diagnostics(good, connect, caplog) -> None:
    from airflow_provider_backendauth.operators.http import BackendAuthHttpOperator

    good.routes["/fhir/Patient"] = Reply(400, body=outcome(FORGED))
    op = BackendAuthHttpOperator(task_id="rest", endpoint="Patient", backendauth_conn_id=connect())
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as excinfo:
        op.execute({})
    error = excinfo.value
    error = error if isinstance(error, BackendAuthError) else error.__cause__
    assert isinstance(error, BackendAuthError)
    assert_safe(str(error))
    assert_safe(error.diagnostics or "")
    assert "\x1b" not in caplog.text


@pytest.mark.parametrize("body", ["plain", "outcome"])
def test_a_502_body_and_a_kickoff_error(body, good, connect) -> None:
    from airflow_provider_backendauth.core.bulk.client import BulkExportClient
    from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    payload: Any = FORGED if body == "plain" else outcome(FORGED)
    good.routes["/fhir/$export"] = Reply(502, {"Content-Type": "text/plain"}, payload)
    client = BulkExportClient(
        BackendAuthHook(connect()).client.authorized_sessions(),
        f"{good.url}/fhir",
        poll_settings=PollSettings(max_transient_errors=0),
    )
    with pytest.raises(BackendAuthError) as excinfo:
        client.kickoff(BulkExportRequest())
    assert_safe(str(excinfo.value))


def test_a_token_error_description(good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/token"] = Reply(
        400, body={"error": "invalid_client", "error_description": FORGED}
    )
    with pytest.raises(BackendAuthError) as excinfo:
        BackendAuthHook(connect()).get_token()
    assert_safe(str(excinfo.value))
    assert_safe(getattr(excinfo.value, "error_description", None) or "")


def progress_then_done(good: HostileServer) -> Any:
    answers = iter(
        [
            Reply(202, {"X-Progress": "50%\x1b[2J\x1b]0;pwned\x07 done", "Retry-After": "1"}),
            Reply(
                200,
                body={
                    "transactionTime": "2026-01-01T00:00:00Z",
                    "request": f"{good.url}/fhir/$export",
                    "requiresAccessToken": True,
                    "output": [],
                    "error": [],
                },
            ),
        ]
    )
    return lambda seen: next(answers)


def test_x_progress_on_a_worker_and_in_the_triggerer(good, connect, caplog, capfd) -> None:
    from airflow_provider_backendauth.core.bulk.client import BulkExportClient
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook
    from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

    fast = PollSettings(poll_interval_min=0.05, poll_interval_max=0.05)
    caplog.set_level(logging.DEBUG)
    good.routes["/status"] = progress_then_done(good)
    client = BulkExportClient(
        BackendAuthHook(connect()).client.authorized_sessions(),
        f"{good.url}/fhir",
        poll_settings=fast,
    )
    client.wait(f"{good.url}/status")
    good.routes["/status"] = progress_then_done(good)
    trigger = BulkExportTrigger(connect(), f"{good.url}/status", poll_settings=fast)

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first(), 30))
    assert event["status"] == "complete", event
    logged = caplog.text + capfd.readouterr().out
    assert "pwned" in logged  # the progress is logged ...
    assert "\x1b" not in logged and "\x07" not in logged  # ... escaped
    assert "\x1b" not in json.dumps(event)


# -- redaction gaps ------------------------------------------------------------------------


def assertion_quoting(part: str) -> Any:
    """A token endpoint that quotes the posted client assertion (or one segment of it)."""

    def reply(seen: Seen) -> Reply:
        form = dict(p.split("=", 1) for p in seen.body.decode().split("&"))
        assertion = form["client_assertion"]
        if part == "signature":
            quoted = {"error": "invalid_client", "error_description": assertion.split(".")[2]}
            body: bytes = json.dumps(quoted).encode()
        else:  # the whole assertion, every character JSON-escaped, in a non-OAuth field
            escaped = "".join(f"\\u{ord(c):04x}" for c in assertion)
            body = b'{"detail": "bad assertion ' + escaped.encode() + b'"}'
        return Reply(400, {"Content-Type": "application/json"}, body)

    return reply


@pytest.mark.parametrize("part", ["signature", "json-escaped"])
def test_a_quoted_assertion_is_redacted(part, good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/token"] = assertion_quoting(part)
    with pytest.raises(BackendAuthError) as excinfo:
        BackendAuthHook(connect()).get_token()
    [seen] = [r for r in good.requests if r.path == "/token"]
    assertion = dict(p.split("=", 1) for p in seen.body.decode().split("&"))["client_assertion"]
    text = str(excinfo.value) + str(getattr(excinfo.value, "error_description", ""))
    assert "[redacted]" in text, text
    for segment in assertion.split(".")[1:]:
        assert segment not in text  # before: the signature, or the whole decoded assertion


def test_an_echoed_authorization_header_never_reaches_xcom(good, connect, caplog) -> None:
    from airflow_provider_backendauth.operators.http import BackendAuthHttpOperator

    def echo(seen: Seen) -> Reply:
        return Reply(200, body={"headers": seen.headers, "note": f"you sent {seen.authorization}"})

    good.routes["/fhir/echo"] = echo
    op = BackendAuthHttpOperator(
        task_id="echo", endpoint="echo", backendauth_conn_id=connect(), log_response=True
    )
    caplog.set_level(logging.DEBUG)
    result = op.execute({})
    assert good.tokens_issued
    for token in good.tokens_issued:
        assert token not in json.dumps(result)  # before: the access token in XCom
        assert token not in caplog.text
    assert result["headers"]["authorization"] == "Bearer [redacted]"


# -- the audience rule ---------------------------------------------------------------------


def test_a_fixed_audience_and_a_discovered_token_url_elsewhere_are_refused(
    good, other, connect
) -> None:
    from airflow_provider_backendauth.core.auth.discovery import clear_discovery_cache
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    clear_discovery_cache()
    real_as = f"{good.url}/token"
    good.routes["/fhir/.well-known/smart-configuration"] = Reply(
        200, body={"token_endpoint": f"{other.url}/token"}
    )
    conn_id = connect(auth_url=None, audience=real_as, allowed_hosts=[other.url])
    with pytest.raises(ConfigurationError, match="not at the audience's origin"):
        BackendAuthHook(conn_id).get_token()
    # Before: the other origin received an assertion whose aud is the real server.
    assert other.requests == []
    assert good.tokens_issued == []


def test_a_fixed_audience_at_the_discovered_origin_works(good, connect) -> None:
    from airflow_provider_backendauth.core.auth.discovery import clear_discovery_cache
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    clear_discovery_cache()
    good.routes["/fhir/.well-known/smart-configuration"] = Reply(
        200, body={"token_endpoint": f"{good.url}/token"}
    )
    conn_id = connect(auth_url=None, audience=f"{good.url}/oauth2")
    assert BackendAuthHook(conn_id).get_token() in good.tokens_issued
