"""Use a ``backendauth`` connection as the HTTP provider's ``auth_type``."""

from __future__ import annotations

import requests
from requests.auth import AuthBase

from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook


class BackendAuthHttpAuth(AuthBase):
    """A ``requests`` auth for the HTTP provider's ``auth_type``, from a backendauth connection.

    ``HttpHook(http_conn_id="plain_http", auth_type=functools.partial(BackendAuthHttpAuth,
    "my_fhir"))`` sends the ``my_fhir`` connection's bearer token (to that connection's origins
    only). The HTTP connection must have no login, so the HTTP hook calls ``auth_type()``.
    """

    def __init__(self, backendauth_conn_id: str = BackendAuthHook.default_conn_name) -> None:
        self.backendauth_conn_id = backendauth_conn_id
        self._auth: BackendAuth | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._auth is None:
            self._auth = BackendAuthHook(self.backendauth_conn_id).get_auth()
        return self._auth(request)
