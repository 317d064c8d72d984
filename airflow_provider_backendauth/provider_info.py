"""Provider metadata: connection type, its Airflow 3 form, hooks, operators, triggers.

The UI builds the connection form from this dict without importing the hook. Secret extras
are named so that Airflow's masker redacts them (``private_key``, ``passphrase``).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_backendauth import __version__
from airflow_provider_backendauth.core.auth.profiles import PROFILES

_MODULE = "airflow_provider_backendauth"


def _string(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": ["string", "null"], **schema},
    }


CONN_FIELDS: dict[str, Any] = {
    "profile": _string(
        "Provider profile",
        "Vendor preset for the token request; every preset value can be overridden below.",
        enum=list(PROFILES),
        default="smart",
    ),
    "token_url": _string(
        "Token URL",
        "Overrides the profile's token endpoint. Empty: the profile's, or discovered from "
        "{base URL}/.well-known/smart-configuration.",
        format="url",
    ),
    "scope": _string(
        "Scope",
        "Space-separated scopes, e.g. system/*.rs. Empty uses the profile's default.",
    ),
    "algorithm": _string(
        "Signing algorithm",
        "Empty: chosen from the profile, the key type and the server's discovery document.",
        enum=["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"],
    ),
    "key_id": _string(
        "Key ID (kid)",
        "The kid registered with the vendor. Empty: the JWK's kid or the key's RFC 7638 "
        "thumbprint.",
    ),
    "jku": _string(
        "JWKS URL (jku)",
        "Optional jku header: the registered URL of your public JWKS.",
        format="url",
    ),
    "private_key_file": _string(
        "Private key file",
        "Path on the workers to a PEM/JWK file; use instead of the password field.",
    ),
    "private_key_passphrase": _string(
        "Private key passphrase",
        "For an encrypted PEM key.",
        format="password",
    ),
    "audience": _string(
        "Audience (aud)",
        "Overrides the assertion's aud claim (default: the token URL, as most vendors require).",
    ),
    "assertion_lifetime": {
        "label": "Assertion lifetime (s)",
        "description": "Seconds until the signed assertion expires; capped by the profile.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 3600},
    },
    "extra_claims": _string(
        "Extra claims (JSON)",
        'Additional JWT claims as a JSON object, e.g. {"tenant": "abc"}.',
        format="multiline",
    ),
    "token_reuse": _string(
        "Token reuse",
        "cache: reuse a token until shortly before it expires. per_request: a new token for "
        "every call (APIs such as NHN CPPA v1).",
        enum=["cache", "per_request"],
    ),
    "verify_ssl": {
        "label": "Verify TLS certificates",
        "description": "Turn off only for a throwaway test server.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "ca_bundle": _string("CA bundle", "Path on the workers to a CA bundle for private CAs."),
    "timeout": {
        "label": "Timeout (s)",
        "description": "Connect/read timeout for token and API calls.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "default": 30},
    },
    "retries": {
        "label": "Token request retries",
        "description": "Retries on network errors, 429 and 5xx (with backoff and Retry-After).",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": 5},
    },
    "allow_insecure_http": {
        "label": "Allow plain HTTP",
        "description": "Allow http:// URLs on non-loopback hosts (test setups only).",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    "allowed_hosts": _string(
        "Other hosts that may receive the token",
        "Space-separated origins (https://files.example.org) besides the base URL's that "
        "may receive the bearer token.",
    ),
}

PROVIDER_INFO: dict[str, Any] = {
    "package-name": "airflow-provider-backendauth",
    "name": "Backend Services Auth (signed-JWT client assertions)",
    "description": "Call healthcare REST and FHIR APIs secured by SMART Backend Services / "
    "RFC 7523 private_key_jwt: connection, hook, REST and FHIR search operators, "
    "FHIR Bulk Data export.",
    "versions": [__version__],
    "integrations": [
        {
            "integration-name": "Backend Services Auth",
            "external-doc-url": "https://hl7.org/fhir/smart-app-launch/backend-services.html",
            "tags": ["protocol"],
        }
    ],
    "hooks": [
        {
            "integration-name": "Backend Services Auth",
            "python-modules": [f"{_MODULE}.hooks.backendauth"],
        }
    ],
    "operators": [
        {
            "integration-name": "Backend Services Auth",
            "python-modules": [
                f"{_MODULE}.operators.http",
                f"{_MODULE}.operators.fhir",
                f"{_MODULE}.operators.bulk",
            ],
        }
    ],
    "triggers": [
        {
            "integration-name": "Backend Services Auth",
            "python-modules": [f"{_MODULE}.triggers.bulk"],
        }
    ],
    # `airflow backendauth ...` (Airflow 3.2+ reads this key; 3.1 ignores it).
    "cli": [f"{_MODULE}.cli.airflow_commands.get_cli_commands"],
    "connection-types": [
        {
            "connection-type": "backendauth",
            "hook-class-name": f"{_MODULE}.hooks.backendauth.BackendAuthHook",
            "hook-name": "Backend Services Auth (signed JWT)",
            "ui-field-behaviour": {
                "hidden-fields": ["schema", "port"],
                "relabeling": {
                    "host": "Base URL",
                    "login": "Client ID",
                    "password": "Private key (PEM or JWK)",
                },
                "placeholders": {
                    "host": "https://fhir.example.org/api/FHIR/R4",
                    "login": "client id / service account / API key",
                    "password": "-----BEGIN PRIVATE KEY----- ... or a JWK/JWKS",
                },
            },
            "conn-fields": CONN_FIELDS,
        }
    ],
}
