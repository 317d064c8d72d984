"""``requests`` authentication that attaches a bearer token and renews it on a 401."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import requests
from requests.auth import AuthBase

from airflow_provider_backendauth.core.auth.tokens import TokenCache
from airflow_provider_backendauth.core.urls import origin_of

log = logging.getLogger(__name__)

_RETRIED_MARK = "_backendauth_retried"
_TOKEN_MARK = "_backendauth_token"


class BackendAuth(AuthBase):
    """Adds ``Authorization: Bearer`` to requests bound for the allowed origins only.

    A request to any other origin (a redirect target, a signed storage URL, a typo'd
    endpoint) goes out without the token. On a 401 from an allowed origin, the rejected
    token is dropped, a new one obtained and the request sent once more. Streamed request
    bodies cannot be replayed; such a request simply returns its 401.

    Usable with a plain ``requests.Session`` (``session.auth = auth``) and with the HTTP
    provider's ``auth_type``.
    """

    def __init__(self, tokens: TokenCache, allowed_origins: Iterable[str]) -> None:
        self.tokens = tokens
        self.allowed_origins = frozenset(origin_of(o) for o in allowed_origins)

    def __repr__(self) -> str:
        return f"BackendAuth(origins={sorted(self.allowed_origins)})"

    def allows(self, url: str) -> bool:
        return origin_of(url) in self.allowed_origins

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not request.url or not self.allows(request.url):
            request.headers.pop("Authorization", None)
            return request
        token = self.tokens.get().value
        request.headers["Authorization"] = f"Bearer {token}"
        setattr(request, _TOKEN_MARK, token)
        request.register_hook("response", self._reauthenticate_on_401)
        return request

    def _reauthenticate_on_401(
        self, response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, _RETRIED_MARK, False):
            return response
        if not request.url or not self.allows(request.url):
            # A redirect hop to another origin carries this hook too (requests copies it):
            # never answer that origin's 401 with our token.
            return response
        body = request.body
        if body is not None and not isinstance(body, (bytes, str)):
            return response  # a generator or file body was consumed; cannot resend it
        log.info(
            "%s answered 401: renewing the access token and retrying once", origin_of(response.url)
        )
        self.tokens.invalidate(getattr(request, _TOKEN_MARK, None))
        response.content  # noqa: B018 - drain so the connection can be reused
        response.close()
        retry = request.copy()
        setattr(retry, _RETRIED_MARK, True)
        token = self.tokens.get().value
        retry.headers["Authorization"] = f"Bearer {token}"
        setattr(retry, _TOKEN_MARK, token)
        # The response hook list was copied too; the mark stops a second round.
        connection = response.connection
        new_response: requests.Response = connection.send(retry, **kwargs)
        new_response.history.append(response)
        new_response.request = retry
        return new_response
