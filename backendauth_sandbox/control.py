"""The out-of-process control API under ``/_sandbox/`` (JSON in, JSON out, no auth).

It lets a test drive a sandbox started as a separate process (the demo, users' DAG tests)
exactly like ``Sandbox`` methods do in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .httpd import Request, Response
from .responses import json_response

if TYPE_CHECKING:
    from .server import Sandbox

PREFIX = "/_sandbox"


class _BadControlRequest(Exception):
    pass


def _body(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        data = request.json()
    except ValueError:
        raise _BadControlRequest("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _BadControlRequest("body must be a JSON object")
    return data


def handle_control(sandbox: Sandbox, request: Request) -> Response:
    try:
        return _route(sandbox, request)
    except (_BadControlRequest, ValueError, TypeError, KeyError) as exc:
        return json_response(400, {"error": str(exc) or type(exc).__name__})


def _route(sandbox: Sandbox, request: Request) -> Response:
    path = request.path[len(PREFIX) :].rstrip("/")
    method = request.method
    if path == "/info" and method == "GET":
        return json_response(200, sandbox.info())
    if path == "/stats" and method == "GET":
        return json_response(200, sandbox.stats)
    if path in ("/stats/reset", "/stats") and method in ("POST", "DELETE"):
        sandbox.reset_stats()
        return json_response(200, {"reset": True})
    if path == "/settings":
        if method == "GET":
            return json_response(200, sandbox.settings.as_dict())
        if method in ("POST", "PATCH", "PUT"):
            sandbox.settings.update(**_body(request))
            return json_response(200, sandbox.settings.as_dict())
    if path == "/token-lifetime" and method == "POST":
        body = _body(request)
        seconds = body.get("seconds", body.get("token_lifetime"))
        if not isinstance(seconds, int) or seconds < 0:
            raise _BadControlRequest('send {"seconds": <non-negative integer>}')
        sandbox.token_lifetime = seconds
        return json_response(200, {"token_lifetime": seconds})
    if path == "/dpop-nonce/rotate" and method == "POST":
        sandbox.rotate_dpop_nonce()
        return json_response(200, {"rotated": True})
    if path == "/expire-tokens" and method == "POST":
        return json_response(200, {"expired": sandbox.expire_tokens()})
    if path == "/tokens" and method == "POST":
        body = _body(request)
        token = sandbox.issue_token(
            str(body.get("client_id", "sandbox-control")),
            scope=str(body.get("scope", "system/*.rs")),
            lifetime=body.get("lifetime"),
        )
        return json_response(201, {"access_token": token, "token_type": "Bearer"})
    if path == "/clients":
        if method == "GET":
            return json_response(200, [c.describe() for c in sandbox.clients.all()])
        if method == "POST":
            body = _body(request)
            keys = next((body[k] for k in ("public_jwks", "jwks", "jwk", "pem") if k in body), None)
            if keys is None:
                raise _BadControlRequest("send the client's public key as public_jwks or pem")
            registration = sandbox.register_client(
                str(body["client_id"]),
                keys,
                vendor=str(body.get("vendor", "smart")),
                algorithms=body.get("algorithms"),
                scopes=body.get("scopes"),
                jku=body.get("jku"),
                dpop=str(body.get("dpop", "allow")),
                **(
                    {"token_requests_per_minute": body["token_requests_per_minute"]}
                    if "token_requests_per_minute" in body
                    else {}
                ),
            )
            return json_response(201, registration.describe())
    if path.startswith("/clients/") and method == "DELETE":
        removed = sandbox.clients.remove(path[len("/clients/") :])
        return json_response(200 if removed else 404, {"removed": removed})
    if path == "/faults":
        if method == "GET":
            return json_response(200, [r.as_dict() for r in sandbox.faults.rules])
        if method == "POST":
            body = _body(request)
            rule = sandbox.faults.add(**body)
            return json_response(201, rule.as_dict())
        if method == "DELETE":
            sandbox.faults.clear()
            return json_response(200, {"cleared": True})
    if path == "/faults/clear" and method == "POST":
        sandbox.faults.clear()
        return json_response(200, {"cleared": True})
    if path.startswith("/faults/") and path.endswith("/release") and method == "POST":
        released = sandbox.faults.release(path[len("/faults/") : -len("/release")])
        return json_response(200 if released else 404, {"released": released})
    if path.startswith("/faults/") and method == "DELETE":
        removed = sandbox.faults.remove(path[len("/faults/") :])
        return json_response(200 if removed else 404, {"removed": removed})
    return json_response(404, {"error": f"no control endpoint {method} {request.path}"})
