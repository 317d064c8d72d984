"""Builders for the response shapes the sandbox speaks: OAuth errors, FHIR JSON, plain text."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

from .httpd import Response

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
DPOP_ALGS = "ES256 ES384 ES512 RS256 RS384 RS512 PS256 PS384 PS512"


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(status: int, data: Any, content_type: str = "application/json") -> Response:
    return Response(status, dumps(data), content_type)


def fhir_response(status: int, resource: Any) -> Response:
    return Response(status, dumps(resource), FHIR_JSON)


def text_response(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


def oauth_error(status: int, error: str, description: str) -> Response:
    response = json_response(status, {"error": error, "error_description": description})
    response.header("Cache-Control", "no-store")
    return response


def operation_outcome(
    diagnostics: str, code: str = "processing", severity: str = "error"
) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def outcome_response(
    status: int, diagnostics: str, code: str = "processing", severity: str = "error"
) -> Response:
    return fhir_response(status, operation_outcome(diagnostics, code, severity))


def invalid_token(diagnostics: str) -> Response:
    """The 401 every protected FHIR/REST endpoint answers (RFC 6750 section 3)."""
    response = outcome_response(401, diagnostics, code="login")
    response.header(
        "WWW-Authenticate",
        f'Bearer error="invalid_token", error_description="{diagnostics}"',
    )
    return response


def dpop_challenge(error: str, diagnostics: str) -> Response:
    """The 401 for a DPoP request that failed (RFC 9449 section 7.1): the ``DPoP`` scheme in
    ``WWW-Authenticate``, with the algorithms proofs may use. (The current nonce goes out in
    ``DPoP-Nonce`` on every answer to a request with a proof, see ``Sandbox._handle``.)"""
    response = outcome_response(401, diagnostics, code="login")
    response.header(
        "WWW-Authenticate",
        f'DPoP error="{error}", error_description="{diagnostics}", algs="{DPOP_ALGS}"',
    )
    return response


def http_date(epoch_seconds: float | None = None) -> str:
    return formatdate(time.time() if epoch_seconds is None else epoch_seconds, usegmt=True)


def format_seconds(value: float) -> str:
    """Retry-After is an integer on the wire; tests may ask for fractions, sent as given."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
