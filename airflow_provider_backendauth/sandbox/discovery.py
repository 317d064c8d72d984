"""Open discovery documents: SMART configuration, OpenID configuration, CapabilityStatement."""

from __future__ import annotations

from typing import Any

SMART_SCOPES = [
    "system/*.rs",
    "system/*.read",
    "system/Patient.rs",
    "system/Observation.rs",
    "system/Condition.rs",
    "system/Encounter.rs",
    "system/Group.rs",
]


def smart_configuration(
    token_url: str, issuer: str, relative_token_endpoint: bool
) -> dict[str, Any]:
    return {
        "issuer": issuer,
        # Relative URLs resolve against the FHIR base; some servers publish them that way.
        "token_endpoint": "../auth/token" if relative_token_endpoint else token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SMART_SCOPES,
        "response_types_supported": ["token"],
        "capabilities": [
            "client-confidential-asymmetric",
            "permission-v1",
            "permission-v2",
        ],
    }


def openid_configuration(token_url: str, issuer: str) -> dict[str, Any]:
    """What HelseID-style clients read from ``{issuer}/.well-known/openid-configuration``."""
    return {
        "issuer": issuer,
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
        ],
    }
