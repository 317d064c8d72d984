"""Turn failed HTTP responses into errors that quote the server's OperationOutcome."""

from __future__ import annotations

from typing import Any

import requests

from airflow_provider_backendauth.core.errors import ApiError, FhirError
from airflow_provider_backendauth.core.http.bodies import error_body_of, parse_json
from airflow_provider_backendauth.core.redact import redact


def operation_outcome_text(body: Any) -> tuple[str | None, bool]:
    """(diagnostics text, transient?) from an OperationOutcome dict, or (None, False)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None, False
    texts = []
    transient = False
    for issue in body.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        transient = transient or issue.get("code") == "transient"
        detail = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
        parts = [str(issue.get("severity") or "error"), str(issue.get("code") or "unknown")]
        texts.append(f"{'/'.join(parts)}: {detail}" if detail else "/".join(parts))
    return ("; ".join(texts) or None), transient


def check_response(response: requests.Response, what: str | None = None) -> requests.Response:
    """Return the response if it succeeded, else raise an error explaining why: ``FhirError``
    when the server answered with an OperationOutcome, ``ApiError`` otherwise."""
    if response.ok:
        return response
    raw = error_body_of(response)
    try:
        body = parse_json(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    diagnostics, transient = operation_outcome_text(body)
    if diagnostics is None:
        text = " ".join(raw.decode(response.encoding or "utf-8", "replace").split())[:300]
        diagnostics = redact(text) if text else None
    request = response.request
    target = what or f"{request.method} {response.url}"
    hint = {
        401: " The access token was rejected even after renewing it: check the client's scopes.",
        403: " The client is not allowed to do this: check its scopes and the vendor's grants.",
        404: " Check the endpoint path and the base URL.",
    }.get(response.status_code, "")
    return_message = f"{target} failed with HTTP {response.status_code}"
    if diagnostics:
        return_message += f": {diagnostics}"
    speaks_fhir = isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
    error = FhirError if speaks_fhir else ApiError
    raise error(
        return_message + "." + hint,
        status_code=response.status_code,
        diagnostics=diagnostics,
        retryable=transient or response.status_code in (429, 503),
    )
