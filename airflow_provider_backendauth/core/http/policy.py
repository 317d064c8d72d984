"""The one token-attachment decision (``BearerPolicy``), sans-IO.

``BearerPolicy.flow`` is a sans-IO generator: fed with what each response said, it decides,
per hop, whether the request carries the bearer token and what to send next:

- the token goes only to an allowed origin (``scheme://host:port`` of the URL as the HTTP
  client will connect to it: see ``core/urls.py``), never "forwarded" from a previous hop;
- a redirect is followed hop by hop (GET/HEAD/DELETE keep their method, a 303 becomes a
  GET); each hop is judged on its own, ambiguous targets and HTTPS → HTTP are refused;
- a 401 from an allowed origin drops the rejected token, gets a new one and resends once
  (not when the body was a stream that cannot be replayed);
- ``with_token=False`` (a manifest's ``requiresAccessToken: false``) never sends a token.

The drivers only do I/O: ``BackendAuth`` in ``core/http/requests_auth.py`` (a ``requests``
``AuthBase``, for sessions, the HTTP provider's ``auth_type`` and the bulk downloads) and
``HttpxBearerAuth`` in ``core/http/httpx_auth.py`` (an ``httpx.Auth`` for the triggerer, sync
and async). So the worker and the triggerer cannot drift apart.

This module imports no Airflow and no HTTP client.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_backendauth.core.errors import BackendAuthError, UnsafeURLError
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.urls import display_url, parse_url, redirect_target

log = get_logger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
REDIRECTABLE_METHODS = frozenset({"GET", "HEAD", "DELETE"})
MAX_REDIRECTS = 5


class Token(Protocol):
    """A token as the policy needs it (``AccessToken`` fits)."""

    @property
    def value(self) -> str: ...


class TokenSource(Protocol):
    """Where tokens come from (``TokenCache`` fits)."""

    def get(self) -> Token: ...

    def invalidate(self, value: str | None = None) -> None: ...


# -- the steps the decision asks its driver to perform ----------------------------------


@dataclass(frozen=True)
class GetToken:
    """Send back the current token value (a string)."""


@dataclass(frozen=True)
class DropToken:
    """The server rejected ``value``: invalidate it (send back None)."""

    value: str


@dataclass(frozen=True)
class Send:
    """Send this request; send back an ``Answer``.

    Attributes:
        method: the method for this hop.
        url: the absolute URL for this hop.
        token: the bearer token to attach, or None: send *no* Authorization header.
        hop: 0 for the original request, then 1, 2... for redirect hops.
        same_origin: this hop goes to the original request's origin (cookies may follow).
        drop_body: a 303 turned the request into a body-less GET.
    """

    method: str
    url: str
    token: str | None
    hop: int = 0
    same_origin: bool = True
    drop_body: bool = False


@dataclass(frozen=True)
class Answer:
    """What the server said, as far as the decision cares."""

    status: int
    location: str | None = None


Step = GetToken | DropToken | Send
Flow = Generator[Step, Any, None]


class BearerPolicy:
    """Which requests carry the token, and what to do on 401s and redirects.

    Args:
        tokens: where tokens come from; None never sends one.
        allowed_origins: origins (or URLs) that may receive the token.
        with_token: False sends no token at all (``requiresAccessToken: false``).
        follow_redirects: follow redirects in the flow (else return them unfollowed).
        max_redirects: hops one request may take.
        error: the exception raised for refused URLs and redirect loops.
    """

    def __init__(
        self,
        tokens: TokenSource | None,
        allowed_origins: Iterable[str],
        *,
        with_token: bool = True,
        follow_redirects: bool = True,
        max_redirects: int = MAX_REDIRECTS,
        error: type[BackendAuthError] = UnsafeURLError,
    ) -> None:
        self.tokens = tokens
        self.allowed_origins = frozenset(
            parse_url(o, "allowed origin").origin for o in allowed_origins
        )
        self.with_token = with_token
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.error = error

    def __repr__(self) -> str:
        return f"BearerPolicy(origins={sorted(self.allowed_origins)}, with_token={self.with_token})"

    def allows(self, url: str) -> bool:
        """May ``url`` receive the token? (Raises ``error`` for an ambiguous URL.)"""
        return parse_url(url, "request URL", error=self.error).origin in self.allowed_origins

    def flow(self, method: str, url: str, *, replayable: bool = True) -> Flow:
        """The decision for one request, as a generator of ``Step``s (see the module doc)."""
        method = method.upper()
        first = parse_url(url, "request URL", error=self.error)
        current = first
        hops = 0
        renewed = False
        drop_body = False
        while True:
            token: str | None = None
            allowed = current.origin in self.allowed_origins
            if self.with_token and self.tokens is not None and allowed:
                token = yield GetToken()
            answer: Answer = yield Send(
                method,
                current.url,
                token,
                hop=hops,
                same_origin=current.origin == first.origin,
                drop_body=drop_body,
            )
            if answer.status == 401 and token is not None and not renewed and replayable:
                log.info(
                    "%s answered 401: renewing the access token and retrying once",
                    current.origin,
                )
                yield DropToken(token)
                renewed = True
                continue
            redirectable = method in REDIRECTABLE_METHODS or answer.status == 303
            if not (
                self.follow_redirects
                and answer.status in REDIRECT_STATUSES
                and answer.location
                and redirectable
            ):
                return
            if hops >= self.max_redirects:
                raise self.error(
                    f"{display_url(url)} redirected more than {self.max_redirects} times."
                )
            current = redirect_target(current.url, answer.location, error=self.error)
            if answer.status == 303 and method != "HEAD":
                method, drop_body = "GET", True
            hops += 1
            renewed = False


def drive_tokens(flow: Flow, value: Any, tokens: TokenSource | None) -> Send | None:
    """Advance ``flow`` past token steps (served synchronously) to its next ``Send``; None
    when the flow is done."""
    while True:
        try:
            step = flow.send(value)
        except StopIteration:
            return None
        if isinstance(step, GetToken):
            assert tokens is not None
            value = tokens.get().value
        elif isinstance(step, DropToken):
            assert tokens is not None
            tokens.invalidate(step.value)
            value = None
        else:
            return step


def policy_with(policy: BearerPolicy, **changes: Any) -> BearerPolicy:
    """A copy of ``policy`` with some attributes changed (``with_token``, ``error``...)."""
    other = BearerPolicy.__new__(BearerPolicy)
    other.__dict__.update(policy.__dict__)
    for name, value in changes.items():
        if not hasattr(other, name):
            raise AttributeError(name)
        setattr(other, name, value)
    return other
