"""Per-thread authorized sessions: requests that go through the one token-attachment
decision, one ``requests`` session per thread (parallel downloads share no session).

Bulk export talks to more than the FHIR server: status URLs, file servers, signed storage
URLs reached by redirects. Every request made here is driven by ``BearerPolicy`` (see
``core/http/policy.py``): redirects are followed hop by hop, the token is attached only when
the hop's origin is allowed (never "forwarded"), ambiguous URLs and HTTPS → HTTP are refused,
and a 401 from an allowed origin renews the token and tries once more.

This module imports no Airflow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.http.bodies import (
    DEFAULT_MAX_RESPONSE_BYTES,
    FIXED_LIMIT,
    read_answer,
)
from airflow_provider_backendauth.core.http.policy import BearerPolicy, ProofSource, TokenSource
from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
from airflow_provider_backendauth.core.urls import display_url, parse_url


class AuthorizedSessions:
    """Sends requests with the token attached per hop, by origin, one session per thread.

    Args:
        session_factory: makes a plain ``requests.Session`` (no ``auth``; TLS settings set).
            One session is kept per thread, so downloads can run in parallel threads.
        tokens: where tokens come from; None sends no token at all.
        token_origins: origins (``scheme://host:port``) that may receive the token.
        timeout: connect/read timeout in seconds.
        max_redirects: how many redirects one request may follow.
        dpop: the connection's DPoP proofs, for DPoP-bound tokens (a proof per hop).
    """

    def __init__(
        self,
        session_factory: Callable[[], requests.Session],
        tokens: TokenSource | None,
        token_origins: Iterable[str],
        *,
        timeout: float = 30.0,
        max_redirects: int = 5,
        dpop: ProofSource | None = None,
    ) -> None:
        self._session_factory = session_factory
        self.tokens = tokens
        self.policy = BearerPolicy(
            tokens, token_origins, max_redirects=max_redirects, error=BulkExportError, dpop=dpop
        )
        without = BearerPolicy(
            None,
            token_origins,
            with_token=False,
            max_redirects=max_redirects,
            error=BulkExportError,
        )
        self._with_token = BackendAuth(None, policy=self.policy)
        self._without_token = BackendAuth(None, policy=without)
        self.token_origins = self.policy.allowed_origins
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuthorizedSessions(origins={sorted(self.token_origins)})"

    @property
    def session(self) -> requests.Session:
        """This thread's session."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            session.auth = None
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every session made so far (their connection pools)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def send(
        self,
        method: str,
        url: str,
        *,
        with_token: bool = True,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
        timeout: float | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        setting: str = FIXED_LIMIT,
    ) -> requests.Response:
        """Send one request, following redirects hop by hop.

        Args:
            method: HTTP method.
            url: absolute URL (query included).
            with_token: whether this request may carry the token at all (a manifest with
                ``requiresAccessToken: false`` makes file downloads go without it).
            headers: extra headers.
            json: a JSON body (POST kick-off): never re-sent to another origin.
            stream: leave the body unread (downloads).
            timeout: overrides the default timeout.
            max_bytes: unless streamed, the cap on a 2xx answer's decoded body (another
                answer's body is cut at ``MAX_ERROR_BODY_BYTES``: ``cap_for``).
            setting: what raises ``max_bytes``, named in the error.

        Returns:
            The final response, its body read (within the caps) unless ``stream``; the
            caller closes it when streaming.
        """
        # Judge the URL as the server sent it: requests re-encodes it before the auth sees it
        # (a backslash becomes %5C), which would hide an ambiguous one.
        parse_url(url, "request URL", error=BulkExportError)
        response = self.session.request(
            method.upper(),
            url,
            headers=dict(headers or {}),
            json=json,
            stream=True,
            timeout=timeout or self.timeout,
            # The auth follows redirects itself, judging each hop (see BearerPolicy).
            allow_redirects=False,
            auth=self._with_token if with_token else self._without_token,
        )
        if not stream:
            read_answer(
                response,
                max_bytes=max_bytes,
                what=f"{method.upper()} {display_url(url)}",
                setting=setting,
            )
        return response
