"""HTTP for Bulk Data: the bearer token goes to allowed origins only, redirects are checked.

Bulk export talks to more than the FHIR server: status URLs, file servers, signed storage
URLs reached by redirects. ``BulkHttp`` follows redirects itself so that every hop is
judged on its own: the token is attached only when the hop's origin is one the user allowed
(never "forwarded" from a previous hop), an HTTPS URL may not redirect to plain HTTP, and a
401 from an allowed origin renews the token and tries once more.

This module imports no Airflow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests

from airflow_provider_backendauth.core.auth.tokens import AccessToken
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.urls import origin_of

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_REDIRECTABLE_METHODS = frozenset({"GET", "HEAD", "DELETE"})


class TokenSource(Protocol):
    """What ``BulkHttp`` needs from a token cache (``TokenCache`` fits)."""

    def get(self) -> AccessToken: ...

    def invalidate(self, value: str | None = None) -> None: ...


def display_url(url: str) -> str:
    """A URL fit for logs and error messages: no query string (signed storage URLs carry
    credentials there), no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to its query string."""
    query = urlencode(list(params))
    if not query:
        return url
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


def redirect_target(current: str, location: str) -> str:
    """The absolute URL a redirect leads to; refuses HTTPS → HTTP downgrades and non-HTTP."""
    target = urljoin(current, location)
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        raise BulkExportError(f"{display_url(current)} redirected to a non-HTTP URL; refused.")
    if urlsplit(current).scheme.lower() == "https" and scheme == "http":
        raise BulkExportError(
            f"{display_url(current)} redirected from HTTPS to plain HTTP "
            f"({display_url(target)}); refused."
        )
    return target


class BulkHttp:
    """Sends Bulk Data requests with the token attached per hop, by origin.

    Args:
        session_factory: makes a plain ``requests.Session`` (no ``auth``; TLS settings set).
            One session is kept per thread, so downloads can run in parallel threads.
        tokens: where tokens come from; None sends no token at all.
        token_origins: origins (``scheme://host:port``) that may receive the token.
        timeout: connect/read timeout in seconds.
        max_redirects: how many redirects one request may follow.
    """

    def __init__(
        self,
        session_factory: Callable[[], requests.Session],
        tokens: TokenSource | None,
        token_origins: Iterable[str],
        *,
        timeout: float = 30.0,
        max_redirects: int = 5,
    ) -> None:
        self._session_factory = session_factory
        self.tokens = tokens
        self.token_origins = frozenset(origin_of(o) for o in token_origins)
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BulkHttp(origins={sorted(self.token_origins)})"

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

    def may_receive_token(self, url: str) -> bool:
        return origin_of(url) in self.token_origins

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
    ) -> requests.Response:
        """Send one request, following redirects hop by hop.

        Args:
            method: HTTP method.
            url: absolute URL (query included).
            with_token: whether this request may carry the token at all (a manifest with
                ``requiresAccessToken: false`` makes file downloads go without it).
            headers: extra headers.
            json: a JSON body (POST kick-off); such requests are not redirected.
            stream: leave the body unread (downloads).
            timeout: overrides the default timeout.

        Returns:
            The final response; the caller closes it when streaming.
        """
        method = method.upper()
        current = url
        hops = 0
        renewed = False
        while True:
            request_headers = dict(headers or {})
            token_value: str | None = None
            if with_token and self.tokens is not None and self.may_receive_token(current):
                token_value = self.tokens.get().value
                request_headers["Authorization"] = f"Bearer {token_value}"
            response = self.session.request(
                method,
                current,
                headers=request_headers,
                json=json,
                stream=stream,
                timeout=timeout or self.timeout,
                allow_redirects=False,
            )
            if response.status_code == 401 and token_value is not None and not renewed:
                # The token expired or was revoked: renew it once and resend.
                response.close()
                assert self.tokens is not None
                self.tokens.invalidate(token_value)
                renewed = True
                continue
            location = response.headers.get("Location")
            if (
                response.status_code in REDIRECT_STATUSES
                and location
                and method in _REDIRECTABLE_METHODS
            ):
                response.close()
                if hops >= self.max_redirects:
                    raise BulkExportError(
                        f"{display_url(url)} redirected more than {self.max_redirects} times."
                    )
                current = redirect_target(current, location)
                hops += 1
                continue
            return response
