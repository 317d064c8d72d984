"""Why a token request was refused, in words the user can act on.

Owns the explanation of a non-200 token answer: reading the OAuth error body (capped,
redacted, control characters escaped by ``redact``), telling a retryable failure (429, 5xx)
from a final one, and the checklists: the invalid-client list (key pair, kid, algorithm,
audience, clock, plus the profile's notes), a refused scope, and DPoP (RFC 9449) refusals
with what to change. Kept apart from ``tokens.py``, which owns the exchange itself (posting,
retry rounds, parsing a token), so that each answers one question. Limits: servers word
refusals freely; the checklist is a best guess, never proof of the cause.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_backendauth.core.auth.dpop import DPOP_ERRORS
from airflow_provider_backendauth.core.errors import (
    DpopError,
    InvalidClientError,
    InvalidScopeError,
    TokenRequestError,
)
from airflow_provider_backendauth.core.http.bodies import json_of, text_of
from airflow_provider_backendauth.core.http.policy import challenge_error
from airflow_provider_backendauth.core.redact import redact
from airflow_provider_backendauth.core.retry import RETRYABLE_STATUS, parse_retry_after

if TYPE_CHECKING:
    from airflow_provider_backendauth.core.auth.tokens import TokenEndpoint

_INVALID_CLIENT_CHECKS = (
    "the client id is exactly the one registered with the server",
    "the private key is the pair of the public key/JWKS registered for this client",
    "the signing algorithm is one the server accepts",
    "the kid matches the registered key",
    "the audience (aud) equals what the server expects (usually its token URL)",
    "this machine's clock is correct (assertions are valid for minutes only)",
)


def explain_refusal(endpoint: TokenEndpoint, response: requests.Response) -> TokenRequestError:
    """The error for a token request the server did not answer with 200: retryable for
    429/5xx; else what the server said, with the checklist that fits it."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    error, description, text = _read_error_body(response)
    if status in RETRYABLE_STATUS:
        what = "is rate-limiting token requests" if status == 429 else "had a server error"
        detail = description or error or text
        return TokenRequestError(
            f"The token URL {endpoint.token_url} {what} (HTTP {status}"
            + (f": {detail}" if detail else "")
            + ").",
            status_code=status,
            error=error,
            error_description=description,
            retryable=True,
            retry_after=retry_after,
        )
    said = description or text
    server_says = f"{error or 'HTTP ' + str(status)}" + (f": {said}" if said else "")
    if _asks_for_dpop(error, description or text, response):
        return _dpop_failure(endpoint, status, error, description, server_says)
    if error == "invalid_scope":
        return InvalidScopeError(
            f"The server refused the requested scope {endpoint.scope!r} ({server_says}). Ask "
            "for a scope granted to this client, or set 'scope' to what the vendor documents.",
            status_code=status,
            error=error,
            error_description=description,
        )
    if error in ("invalid_client", "invalid_grant", "unauthorized_client") or status in (
        400,
        401,
        403,
    ):
        checks = "; ".join((*_INVALID_CLIENT_CHECKS, *endpoint.hints, *_dpop_hint(endpoint, error)))
        return InvalidClientError(
            f"The token URL {endpoint.token_url} rejected the client assertion for client id "
            f"{endpoint.client_id!r} ({server_says}). Check that: {checks}.",
            status_code=status,
            error=error,
            error_description=description,
        )
    return TokenRequestError(
        f"The token URL {endpoint.token_url} answered HTTP {status} ({server_says}).",
        status_code=status,
        error=error,
        error_description=description,
    )


def _dpop_failure(
    endpoint: TokenEndpoint,
    status: int,
    error: str | None,
    description: str | None,
    server_says: str,
) -> DpopError:
    if endpoint.dpop is None or endpoint.dpop_mode == "off":
        advice = (
            "The server wants DPoP-bound tokens (RFC 9449): set the connection's 'dpop' "
            "extra to 'on' (or 'auto': use DPoP when the server asks)."
        )
    elif not endpoint.dpop_active:
        advice = "The server asked for DPoP; the next request sends a proof."
    elif error == "use_dpop_nonce":
        advice = (
            "It asked for a nonce again after the proof carried the one it had sent; if "
            "this repeats, the server's nonces are not reaching this client (a proxy "
            "stripping the DPoP-Nonce header?)."
        )
    else:
        advice = (
            "It refused the DPoP proof: check this machine's clock (a proof is valid for "
            f"about a minute) and that the server accepts {endpoint.dpop.algorithm} proofs "
            "(set 'dpop_key_file' to a key of an algorithm it accepts)."
        )
    return DpopError(
        f"The token URL {endpoint.token_url} refused the token request for client id "
        f"{endpoint.client_id!r} over DPoP ({server_says}). {advice}",
        status_code=status,
        error=error,
        error_description=description,
    )


def _dpop_hint(endpoint: TokenEndpoint, error: str | None) -> tuple[str, ...]:
    """For an invalid_grant while no proof was sent: strict servers refuse a missing
    DPoP proof with just that (oidc-provider: "grant request is invalid"), so DPoP goes
    on the checklist."""
    if error != "invalid_grant" or endpoint.dpop_active:
        return ()
    return (
        "the server does not want DPoP-bound tokens (RFC 9449): some refuse a request "
        "without a DPoP proof with only invalid_grant; try the 'dpop' extra 'auto'",
    )


def _asks_for_dpop(error: str | None, said: str, response: requests.Response) -> bool:
    """Does this refusal concern DPoP (an RFC 9449 error, a DPoP challenge, or a server's
    words naming DPoP, as some say "DPoP proof JWT not provided" under invalid_grant)?"""
    return (
        error in DPOP_ERRORS
        or challenge_error(response.headers.get("WWW-Authenticate")) is not None
        or "dpop" in said.lower()
    )


def _read_error_body(response: requests.Response) -> tuple[str | None, str | None, str]:
    """(OAuth error, error_description, short plain text) from an error response."""
    error = description = None
    text = ""
    try:
        body: Any = json_of(response)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = str(body["error"]) if body.get("error") else None
        description = str(body["error_description"]) if body.get("error_description") else None
        if not error and not description:
            # The parsed document, not the raw text: JSON escapes (\u002e...) would hide an
            # assertion or a token from redaction.
            text = redact(json.dumps(body, ensure_ascii=False))[:300]
    else:
        # Some servers (Koppeltaal) answer failures in plain text such as "401 Access Denied".
        text = redact(" ".join(text_of(response).split()))[:300]
    return error, redact(description) if description else None, text
