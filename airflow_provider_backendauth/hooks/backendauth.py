"""``BackendAuthHook``: the ``backendauth`` connection as tokens, sessions and requests."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth._compat import BaseHook, mask_secret

if TYPE_CHECKING:
    import requests

    from airflow_provider_backendauth.core.auth.client import BackendAuthClient
    from airflow_provider_backendauth.core.http.requests_auth import BackendAuth


class BackendAuthHook(BaseHook):
    """Access tokens and authenticated sessions for a ``backendauth`` connection.

    The connection is read once, on first use; constructing the hook does no I/O (DAG files
    may create hooks at parse time). Tokens are cached per connection and process, renewed
    before they expire, registered with Airflow's secret masker, and never logged.

    Args:
        backendauth_conn_id: the connection id (may be passed positionally).
    """

    conn_name_attr = "backendauth_conn_id"
    default_conn_name = "backendauth_default"
    conn_type = "backendauth"
    hook_name = "Backend Services Auth (signed JWT)"

    def __init__(self, backendauth_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backendauth_conn_id = backendauth_conn_id

    @functools.cached_property
    def client(self) -> BackendAuthClient:
        """The framework-free client built from the connection (validated, no network yet)."""
        from airflow_provider_backendauth.core.auth.client import BackendAuthClient
        from airflow_provider_backendauth.core.auth.settings import ClientSettings

        settings = ClientSettings.from_connection(self.get_connection(self.backendauth_conn_id))
        return BackendAuthClient(settings, on_token=mask_secret)

    @property
    def base_url(self) -> str | None:
        return self.client.base_url

    @property
    def allowed_origins(self) -> frozenset[str]:
        return self.client.allowed_origins

    def get_token(self) -> str:
        """A valid access token (cached and renewed before expiry). Keep it out of logs/XCom."""
        return self.client.get_token().value

    def get_auth(self) -> BackendAuth:
        """A ``requests`` auth object usable with any session or the HTTP provider."""
        return self.client.auth()

    def get_session(self) -> requests.Session:
        """A ``requests.Session`` whose requests to the base URL carry a valid bearer token;
        a 401 renews the token and retries once."""
        return self.client.new_session()

    def get_conn(self) -> requests.Session:
        return self.get_session()

    def url_for(self, endpoint: str) -> str:
        from airflow_provider_backendauth.core.urls import resolve_endpoint

        return resolve_endpoint(
            self.base_url, endpoint, owner=f"connection {self.backendauth_conn_id!r}"
        )

    def run(
        self,
        method: str = "GET",
        endpoint: str = "",
        *,
        session: requests.Session | None = None,
        check_response: bool = True,
        retry_args: dict[str, Any] | None = None,
        **request_kwargs: Any,
    ) -> requests.Response:
        """Send one authenticated request to ``{base URL}/{endpoint}``, retrying transient
        failures with the connection's retry policy (the same one the operators use).

        Args:
            method: HTTP method.
            endpoint: path relative to the base URL, or an absolute URL (which receives the
                token only if its origin is the base URL's or an allowed host).
            session: reuse a session from ``get_session()`` (keeps connections alive).
            check_response: raise ``ApiError``/``FhirError`` (quoting the OperationOutcome)
                on a final 4xx/5xx.
            retry_args: ``tenacity.Retrying`` arguments replacing ours, as in the HTTP
                provider (e.g. ``{"stop": tenacity.stop_after_attempt(1)}`` for no retry).
            request_kwargs: passed to ``requests`` (params, json, data, headers, stream...).
        """
        rest = self.client.rest_client(retry_args=retry_args, session=session)
        return rest.request(method, self.url_for(endpoint), check=check_response, **request_kwargs)

    def test_connection(self) -> tuple[bool, str]:
        """Do a real token exchange (and a light GET of ``/metadata`` when a base URL is set)
        and say in one or two sentences how it went and which values were used.

        Unlike task runs it never retries and caps the timeout (``TEST_TIMEOUT``): the UI's
        Test button waits for this synchronously, and an unreachable token URL must come back
        as "connection refused" in seconds, not after a round of backoff.
        """
        import dataclasses

        from airflow_provider_backendauth.core.auth.client import BackendAuthClient
        from airflow_provider_backendauth.core.auth.settings import ClientSettings
        from airflow_provider_backendauth.core.errors import BackendAuthError
        from airflow_provider_backendauth.core.network import describe_network_error

        try:
            settings = ClientSettings.from_connection(self.get_connection(self.backendauth_conn_id))
            client = BackendAuthClient(
                dataclasses.replace(
                    settings, retries=0, timeout=min(settings.timeout, TEST_TIMEOUT)
                ),
                on_token=mask_secret,
            )
        except BackendAuthError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"Unexpected {type(exc).__name__}: {exc}"
        try:
            token = client.fresh_token()
        except BackendAuthError as exc:
            return False, f"{exc} Used: {_effective_values(client)}."
        except Exception as exc:
            used = _effective_values(client)
            return False, f"Unexpected {type(exc).__name__}: {exc}. Used: {used}."
        kind = (
            f"a DPoP-bound token, proof key thumbprint {client.dpop.thumbprint}"
            if token.dpop_bound and client.dpop is not None
            else "a Bearer token, not DPoP-bound"
        )
        from airflow_provider_backendauth.core.auth.scopes import missing_scopes

        missing = missing_scopes(client.scope, token.scope)
        narrower = f", which does not cover {' '.join(missing)}" if missing else ""
        message = (
            f"Token obtained from {client.token_url} ({kind}; expires in "
            f"{int(token.lifetime)} s, granted scope {token.scope or 'not stated'!r}"
            f"{narrower}). Used: {_effective_values(client, with_token_url=False)}"
        )
        if not client.base_url or client.profile.probe_path is None:
            return True, message + "."
        from airflow_provider_backendauth.core.urls import resolve_endpoint

        metadata = resolve_endpoint(client.base_url, client.profile.probe_path)
        session = client.new_session()
        try:
            response = session.get(metadata, timeout=client.settings.timeout)
        except Exception as exc:
            return False, f"{message}. But GET {metadata} failed: {describe_network_error(exc)}."
        finally:
            session.close()
        if response.status_code in (401, 403):
            return False, (
                f"{message}. But the API refused the token: GET {metadata} answered "
                f"{response.status_code}. Check the client's scopes."
            )
        if response.status_code == 200:
            return True, f"{message}. GET {metadata} answered 200."
        return (
            True,
            f"{message}. GET {metadata} answered {response.status_code} (the API may not serve "
            "it).",
        )


# Seconds the Test button may wait for one answer (the connection's own timeout if lower).
TEST_TIMEOUT = 10.0


def _effective_values(client: BackendAuthClient, *, with_token_url: bool = True) -> str:
    """The values a token request uses (the profile's unless the connection overrides them)."""
    from airflow_provider_backendauth.provider_info import profile_name

    parts = [f"profile {profile_name(client.profile)}"]
    if with_token_url:
        # Still unknown when discovery itself failed.
        parts.append(f"token URL {client._token_url or 'not discovered'}")
    scope = "none" if client.scope is None else repr(client.scope)
    parts += [client.algorithm, f"kid {client.kid or 'none'}", f"scope {scope}"]
    return ", ".join(parts)
