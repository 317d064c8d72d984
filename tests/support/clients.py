"""Build clients/connections registered with the sandbox, as a user would configure them."""

from __future__ import annotations

import itertools
from typing import Any

from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.retry import RetryPolicy
from backendauth_sandbox.testing import ClientKey, generate_client_key

_ids = itertools.count(1)
FAST_RETRY = RetryPolicy(attempts=4, initial_wait=0.05, max_wait=0.2, max_retry_after=5)


def register(
    sb: Any, vendor: str = "smart", kind: str = "RSA", **registration: Any
) -> tuple[str, ClientKey]:
    """A fresh client id registered with the sandbox under ``vendor`` rules, and its key."""
    key = generate_client_key(kind)
    client_id = f"{vendor}-client-{next(_ids)}"
    sb.register_client(client_id, key.public_jwks, vendor=vendor, **registration)
    return client_id, key


def vendor_extra(sb: Any, profile: str) -> dict[str, Any]:
    """Point a profile at the sandbox: its token URL stands in for the vendor's."""
    return (
        {"profile": profile}
        if profile == "smart"
        else {"profile": profile, "auth_url": sb.token_url}
    )


def make_client(
    sb: Any,
    vendor: str = "smart",
    *,
    profile: str | None = None,
    kind: str = "RSA",
    fast_retry: bool = True,
    password: str | None = None,
    registration: dict[str, Any] | None = None,
    **extra: Any,
) -> BackendAuthClient:
    client_id, key = register(sb, vendor, kind, **(registration or {}))
    settings = ClientSettings.from_connection_fields(
        host=sb.fhir_base,
        login=client_id,
        password=password if password is not None else key.private_pem,
        extra={**vendor_extra(sb, profile or vendor), **extra},
    )
    client = BackendAuthClient(settings)
    if fast_retry:
        client.retry = FAST_RETRY
    return client
