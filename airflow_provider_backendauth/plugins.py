"""An Airflow plugin that makes the UI's Test button work on ``backendauth`` connections.

Why this exists: the connection list's *Test* button posts the stored connection back with
``port: Number(connection.port)``, and ``Number(null)`` is ``0``. Airflow 3.3.0-3.3.2 then
compares that ``0`` with the stored NULL port, finds "a different destination" and answers
400 "The host or port to test differs from the stored connection" without ever calling the
hook. Our form hides the port (the base URL carries it), so every connection saved through the
form hit this, and no provider_info setting can give a hidden standard field a value.

The fix is the one Airflow itself adopted later (port 0 is no destination, so it means the same
as "no port"), applied only where it is needed: a root ASGI middleware rewrites ``port: 0`` to
``null`` in ``POST .../connections/test`` bodies whose ``conn_type`` is ``backendauth``, and
only on Airflow versions whose endpoint check still rejects it. It never makes the check
weaker: a stored non-NULL port still differs from NULL, and the host check is untouched.
Everything else passes through unchanged. This module stays import-light: every Airflow
component that loads plugins imports it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# The documented import on every supported Airflow 3.x (plugins_manager itself imports us).
from airflow.plugins_manager import AirflowPlugin

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONN_TYPE = "backendauth"
TEST_PATH_SUFFIX = "/api/v2/connections/test"
# A connection test body is a few KiB at most (a PEM key and the extras); anything larger is
# passed through untouched rather than buffered.
MAX_BODY = 256 * 1024


@functools.cache
def airflow_rejects_port_zero() -> bool:
    """Whether this Airflow's Test endpoint treats ``port: 0`` as different from NULL."""
    try:
        from airflow.api_fastapi.core_api.routes.public.connections import _same_endpoint
    except ImportError:
        return False  # no destination check at all (Airflow 3.1, 3.2)
    try:
        return not _same_endpoint(0, None)
    except Exception:
        return False


def rewrite_test_body(body: bytes) -> bytes | None:
    """The body with ``port: 0`` replaced by ``null`` for a backendauth connection, or None
    when nothing needs to change."""
    from airflow_provider_backendauth.core.http.bodies import parse_json

    try:
        data = parse_json(body)  # a deeply nested body is "not understood", not a crash
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE:
        return None
    port = data.get("port")
    if port != 0 or isinstance(port, bool):
        return None
    data["port"] = None
    return json.dumps(data).encode()


class ConnectionTestPortMiddleware:
    """Root ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message.get("type") != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > MAX_BODY:
                break
        complete = (
            messages[-1].get("type") == "http.request"
            and not messages[-1].get("more_body", False)
            and len(body) <= MAX_BODY
        )
        new_body = rewrite_test_body(body) if complete else None
        if new_body is not None:
            messages = [{"type": "http.request", "body": new_body, "more_body": False}]
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"
            ] + [(b"content-length", str(len(new_body)).encode())]

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _applies(scope: Scope) -> bool:
        return (
            scope.get("type") == "http"
            and scope.get("method") == "POST"
            and str(scope.get("path", "")).rstrip("/").endswith(TEST_PATH_SUFFIX)
            and airflow_rejects_port_zero()
        )


class BackendAuthPlugin(AirflowPlugin):
    """Registered as the ``airflow.plugins`` entry point ``backendauth`` (provider-info plugins
    load only with ``lazy_discover_providers = False``); adds the middleware to the API server."""

    name = "backendauth"
    fastapi_root_middlewares = [
        {
            "middleware": ConnectionTestPortMiddleware,
            "args": [],
            "kwargs": {},
            "name": "backendauth: Test button on connections without a port",
        }
    ]
