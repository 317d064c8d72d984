"""The plugin that lets the UI's Test button work on connections saved without a port."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_backendauth.plugins import (
    ConnectionTestPortMiddleware,
    airflow_rejects_port_zero,
    rewrite_test_body,
)

UI_BODY = {  # what Airflow 3.3's connection list posts for a connection saved through the form
    "conn_type": "backendauth",
    "connection_id": "fhir",
    "description": "",
    "extra": "{}",
    "host": "https://fhir.example.org/r4",
    "login": "client",
    "password": "***",
    "port": 0,
    "schema": "",
}


def _call(body: bytes, path: str = "/api/v2/connections/test", method: str = "POST"):
    seen: dict[str, Any] = {}

    async def app(scope, receive, send):
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen["body"] = b"".join(chunks)
        seen["headers"] = dict(scope["headers"])

    async def run():
        parts = [body[: len(body) // 2], body[len(body) // 2 :]]  # two chunks, as ASGI allows
        messages = [
            {"type": "http.request", "body": parts[0], "more_body": True},
            {"type": "http.request", "body": parts[1], "more_body": False},
        ]

        async def receive():
            return messages.pop(0)

        async def send(message):
            pass

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
        await ConnectionTestPortMiddleware(app)(scope, receive, send)

    asyncio.run(run())
    return seen


@pytest.mark.skipif(not airflow_rejects_port_zero(), reason="this Airflow accepts port 0 already")
def test_port_zero_becomes_null_for_backendauth():
    seen = _call(json.dumps(UI_BODY).encode())
    assert json.loads(seen["body"]) == {**UI_BODY, "port": None}
    assert seen["headers"][b"content-length"] == str(len(seen["body"])).encode()


@pytest.mark.parametrize(
    ("body", "path", "method"),
    [
        ({**UI_BODY, "conn_type": "http"}, "/api/v2/connections/test", "POST"),  # not ours
        ({**UI_BODY, "port": 8443}, "/api/v2/connections/test", "POST"),  # a real port
        (UI_BODY, "/api/v2/connections", "POST"),  # saving, not testing
        (UI_BODY, "/api/v2/connections/test", "GET"),
    ],
)
def test_everything_else_passes_through_unchanged(body, path, method):
    raw = json.dumps(body).encode()
    assert _call(raw, path, method)["body"] == raw


def test_rewrite_ignores_what_it_does_not_understand():
    assert rewrite_test_body(b"not json") is None
    assert rewrite_test_body(b"[1]") is None
    assert rewrite_test_body(json.dumps({**UI_BODY, "port": False}).encode()) is None


def test_a_deeply_nested_body_passes_through_instead_of_breaking_the_request():
    raw = b'{"conn_type": "backendauth", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert rewrite_test_body(raw) is None  # before: RecursionError inside the middleware
    assert _call(raw, "/api/v2/connections/test", "POST")["body"] == raw


def test_the_rewritten_port_passes_airflows_own_check():
    """The check is Airflow's: port 0 against a stored NULL fails it, null passes."""
    try:
        from airflow.api_fastapi.core_api.routes.public.connections import _same_endpoint
    except ImportError:
        pytest.skip("this Airflow has no destination check (3.1, 3.2)")
    rewritten = json.loads(rewrite_test_body(json.dumps(UI_BODY).encode()) or b"{}")
    assert _same_endpoint(rewritten["port"], None)
    assert _same_endpoint(0, None) == (not airflow_rejects_port_zero())
