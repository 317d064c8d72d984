"""Provider metadata: connection type, its Airflow 3 form, hooks, operators, triggers, plugin.

The UI builds the connection form from this dict without importing the hook. Airflow's secret
masker hides extras by *name* (any name containing "token", "private_key", "passphrase",
"secret", ...), in the form, the REST API and logs: so only the passphrase carries such a word,
and the token URL, reuse policy and key file are named ``auth_url``, ``reuse_policy`` and
``key_file`` (the old names are still read, see ``core.auth.settings.RENAMED_EXTRAS``).
The per-profile hints below are generated from ``PROFILES`` so they cannot drift from it.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_backendauth import __version__
from airflow_provider_backendauth.core.auth.profiles import PROFILES, Profile

_MODULE = "airflow_provider_backendauth"

# Form sections (FlexibleForm groups fields by schema.section; the rest go under "Extra Fields").
_TOKEN = "Token request (empty fields use the profile's values)"
_KEY = "Key file and passphrase"
_NETWORK = "Network and TLS"

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


def _string(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": ["string", "null"], **schema},
    }


def profile_name(profile: Profile) -> str:
    """The readable name of a profile (its label without the parenthesised detail)."""
    return profile.label.split(" (")[0]


def profile_token_url(profile: Profile) -> str:
    """What the profile uses as token URL, in words when it has no fixed one."""
    if profile.token_url:
        return profile.token_url
    if profile.name == "custom" or profile.discovery_path is None:
        return "none: set the Token URL"
    return f"discovered from {{Base URL}}/{profile.discovery_path}"


def profile_scope(profile: Profile) -> str:
    if profile.scope is None:
        return "none sent"
    return profile.scope or "empty (scope= sent)"


def profile_summary(profile: Profile) -> str:
    """One line: what a profile sends when the connection leaves its fields empty."""
    token = profile.token_url or (
        "token URL discovered" if "discovered" in profile_token_url(profile) else "set Token URL"
    )
    parts = [token, "/".join(profile.algorithms[:2])]
    if profile.scope is not None:
        parts.append(f"scope {profile.scope or '(empty)'}")
    return ", ".join(parts)


def _per_profile(value: Any) -> str:
    """'Name: value' for each profile, grouped so that equal values are listed once."""
    groups: dict[str, list[str]] = {}
    for profile in PROFILES.values():
        groups.setdefault(str(value(profile)), []).append(profile_name(profile))
    return "; ".join(f"{', '.join(names)}: {v}" for v, names in groups.items())


PROFILE_DISPLAY = {n: f"{profile_name(p)} - {profile_summary(p)}" for n, p in PROFILES.items()}

CONN_FIELDS: dict[str, Any] = {
    "profile": _string(
        "Provider profile",
        "Vendor preset for the token request: token URL, algorithm, scope, claims. Every "
        "preset value can be overridden in the fields below; the Test button reports the "
        "values actually used.",
        enum=list(PROFILES),
        values_display=PROFILE_DISPLAY,
        default="smart",
    ),
    "auth_url": _string(
        "Token URL",
        "Empty: the profile's. "
        + _per_profile(profile_token_url)
        + ". Set it for another environment (test/integration) or tenant.",
        format="url",
        examples=sorted({p.token_url for p in PROFILES.values() if p.token_url}),
        section=_TOKEN,
    ),
    "scope": _string(
        "Scope",
        "Space-separated scopes. Empty: the profile's. " + _per_profile(profile_scope) + ".",
        examples=["system/*.rs", "system/*.read", "system/Patient.rs", "api", "nhn:cppa/access"],
        section=_TOKEN,
    ),
    "algorithm": _string(
        "Signing algorithm",
        "Empty: the first of the profile's that fits the key (and the server's discovery "
        "document). " + _per_profile(lambda p: "/".join(p.algorithms[:3])) + ".",
        enum=ALGORITHMS,
        section=_TOKEN,
    ),
    "key_id": _string(
        "Key ID (kid)",
        "The kid registered with the vendor, e.g. test-1. Empty: the JWK's kid or the key's "
        "RFC 7638 thumbprint (what SigningKey.public_jwks() publishes).",
        section=_TOKEN,
    ),
    "jku": _string(
        "JWKS URL (jku)",
        "Optional jku header: the registered URL of your public JWKS, e.g. "
        "https://example.org/.well-known/jwks.json.",
        format="url",
        section=_TOKEN,
    ),
    "audience": _string(
        "Audience (aud)",
        "Overrides the assertion's aud claim, e.g. https://helseid-sts.nhn.no. Empty: the "
        "token URL, as most vendors require.",
        section=_TOKEN,
    ),
    "assertion_lifetime": {
        "label": "Assertion lifetime (s)",
        "description": "Seconds until the signed assertion expires. Empty: the profile's "
        "(300; HelseID 60), capped by the profile.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 3600, "section": _TOKEN},
    },
    "extra_claims": _string(
        "Extra claims (JSON)",
        'Additional JWT claims as a JSON object, e.g. {"tenant": "abc"}.',
        format="multiline",
        section=_TOKEN,
    ),
    "reuse_policy": _string(
        "Token reuse",
        "cache: reuse a token until shortly before it expires. per_request: a new token for "
        "every call (APIs such as NHN CPPA v1). Empty: the profile's (cache).",
        enum=["cache", "per_request"],
        values_display={
            "cache": "cache (reuse until shortly before expiry)",
            "per_request": "per_request (a new token for every call)",
        },
        section=_TOKEN,
    ),
    "dpop": _string(
        "DPoP-bound tokens",
        "RFC 9449: off sends Bearer tokens; on asks for tokens bound to a proof key and signs a "
        "proof for every request; auto does so once the token endpoint asks. Empty: the "
        "profile's (auto for HelseID, else off).",
        enum=["off", "on", "auto"],
        values_display={
            "off": "off (Bearer tokens)",
            "on": "on (DPoP proofs with every request)",
            "auto": "auto (when the token endpoint asks)",
        },
        section=_TOKEN,
    ),
    "key_file": _string(
        "Private key file",
        "Path on the workers to a PEM/JWK file, e.g. /run/secrets/backendauth.pem; use "
        "instead of the Private key field.",
        section=_KEY,
    ),
    "private_key_passphrase": _string(
        "Private key passphrase",
        "For an encrypted PEM key (in the Private key field or the file).",
        format="password",
        section=_KEY,
    ),
    "verify_ssl": {
        "label": "Verify TLS certificates",
        "description": "Turn off only for a throwaway test server.",
        "schema": {"type": ["boolean", "null"], "default": True, "section": _NETWORK},
    },
    "ca_bundle": _string(
        "CA bundle",
        "Path on the workers to a CA bundle for private CAs, e.g. /etc/ssl/certs/corp-ca.pem.",
        section=_NETWORK,
    ),
    "timeout": {
        "label": "Timeout (s)",
        "description": "Connect/read timeout for token and API calls.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "default": 30, "section": _NETWORK},
    },
    "retries": {
        "label": "Token request retries",
        "description": "Retries on network errors, 429 and 5xx (with backoff and Retry-After). "
        "The Test button never retries.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": 5, "section": _NETWORK},
    },
    "allow_insecure_http": {
        "label": "Allow plain HTTP",
        "description": "Allow http:// URLs on non-loopback hosts (test setups only).",
        "schema": {"type": ["boolean", "null"], "default": False, "section": _NETWORK},
    },
    "certificate_headers": _string(
        "Certificate headers",
        "Assertion header members from the certificate after the private key: space-separated "
        "x5t#S256, x5t, x5c, e.g. x5t#S256 x5c. Empty: the profile's (x5t#S256 for Entra ID).",
        section=_KEY,
    ),
    "dpop_key_file": _string(
        "DPoP key file",
        "A PEM/JWK file on every worker holding the DPoP proof key, e.g. "
        "/opt/airflow/keys/dpop.pem. Empty: a fresh EC P-256 key per process (never the "
        "client assertion key).",
        section=_KEY,
    ),
    "allowed_hosts": _string(
        "Other hosts that may receive the token",
        "Space-separated origins besides the base URL's that may receive the bearer token, "
        "e.g. https://files.example.org.",
        section=_NETWORK,
    ),
}

PROVIDER_INFO: dict[str, Any] = {
    "package-name": "airflow-provider-backendauth",
    "name": "Backend Services Auth (signed-JWT client assertions)",
    # Airflow deletes every ` _ < > from the description before showing it (its
    # _remove_rst_syntax, on the Providers page and in `airflow providers get`): a literal
    # private_key_jwt came out as "privatekeyjwt", backticks or not. So: no such characters.
    "description": "Call healthcare REST and FHIR APIs secured by SMART Backend Services / "
    "RFC 7523 private-key JWT client authentication: connection, hook, REST and FHIR search "
    "operators, FHIR Bulk Data export.",
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
                f"{_MODULE}.operators.views",
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
