"""The one decision per hop (``BearerPolicy``), sans-IO: which origin gets the token, how a
redirect is followed, what a 401 does, and which headers travel with each hop.

``BearerPolicy.flow`` is a generator: fed with what each response said, it decides, per hop,
whether the request carries the bearer token and what to send next:

- the token goes only to an allowed origin (``scheme://host:port`` of the URL as the HTTP
  client will connect to it: see ``core/urls.py``), never "forwarded" from a previous hop;
- a redirect is judged by the one redirect rule (``core/http/redirects.py``: method changes,
  HTTPS -> HTTP never, no body to another origin, ``confined`` requests only to allowed
  origins, a small hop limit with a clear error);
- a 401 from an allowed origin drops the rejected token, gets a new one and resends once
  (not when the body was a stream that cannot be replayed);
- ``with_token=False`` (a manifest's ``requiresAccessToken: false``) never sends a token;
- each ``Send`` says which headers to set and which to remove for that hop (the hop-header
  rules live here, not in the drivers);
- a DPoP-bound token (RFC 9449) goes as ``Authorization: DPoP`` with a proof signed for that
  hop's method and URL (``hop_headers``; ``dpop``: the connection's ``DpopProofs``); a
  ``DPoP-Nonce`` from an allowed origin is remembered for it, and a 401 ``WWW-Authenticate:
  DPoP error="use_dpop_nonce"`` is answered once with the same token and a fresh proof. A
  proof goes exactly where the token goes, never elsewhere.

The drivers only do I/O: ``BackendAuth`` in ``core/http/requests_auth.py`` (a ``requests``
``AuthBase``) and ``send_async`` in ``core/http/aiohttp_driver.py`` (the triggerer's aiohttp
requests). So the worker and the triggerer cannot drift apart.

This module imports no Airflow and no HTTP client.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_backendauth.core.errors import BackendAuthError, UnsafeURLError
from airflow_provider_backendauth.core.http.redirects import MAX_REDIRECTS, is_redirect, next_hop
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.urls import URL, display_url, parse_url

log = get_logger(__name__)


class Token(Protocol):
    """A token as the policy needs it (``AccessToken`` fits)."""

    @property
    def value(self) -> str: ...


class TokenSource(Protocol):
    """Where tokens come from (``TokenCache`` fits)."""

    def get(self) -> Token: ...

    def invalidate(self, value: str | None = None) -> None: ...


class ProofSource(Protocol):
    """Signs DPoP proofs and remembers server nonces (``core/auth/dpop.DpopProofs`` fits)."""

    def proof(self, method: str, url: str, access_token: str | None = None) -> str: ...

    def nonce_for(self, url: str) -> str | None: ...

    def remember_nonce(self, url: str, nonce: str | None) -> bool: ...


def token_scheme(token: Token) -> str:
    """``DPoP`` for a DPoP-bound token, else ``Bearer`` (a token without a type is Bearer)."""
    return "DPoP" if str(getattr(token, "token_type", "Bearer")).lower() == "dpop" else "Bearer"


def challenge_error(www_authenticate: str | None) -> str | None:
    """The ``error`` of a ``WWW-Authenticate: DPoP ...`` challenge ("" without one), or None
    when the header is not a DPoP challenge. Server text: cut short, never trusted further."""
    if not www_authenticate:
        return None
    scheme, _, params = www_authenticate.strip().partition(" ")
    if scheme.lower() != "dpop":
        return None
    for part in params.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "error":
            return value.strip().strip('"')[:64]
    return ""


# -- the steps the decision asks its driver to perform ----------------------------------


@dataclass(frozen=True)
class GetToken:
    """Send back the current token (a ``Token``: its value and, for DPoP, its type)."""


@dataclass(frozen=True)
class DropToken:
    """The server rejected ``value``: invalidate it (send back None)."""

    value: str


# Headers of the request that never travel to a hop as they are: set anew per hop.
CREDENTIAL_HEADERS = ("Authorization",)
# Headers that describe the body: gone when a hop drops it.
BODY_HEADERS = ("Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding")


@dataclass(frozen=True)
class Send:
    """Send this request; send back an ``Answer``.

    Attributes:
        method: the method for this hop.
        url: the absolute URL for this hop.
        token: the bearer token attached, or None: *no* Authorization header.
        hop: 0 for the original request, then 1, 2... for redirect hops.
        same_origin: this hop goes to the original request's origin (cookies may follow).
        drop_body: this hop is sent without the body (a 303, or a 301/302 after a POST).
        set_headers: headers to set on this hop (the credentials).
        remove_headers: headers the original request had that this hop must not carry.
    """

    method: str
    url: str
    token: str | None
    hop: int = 0
    same_origin: bool = True
    drop_body: bool = False
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """What the server said, as far as the decision cares."""

    status: int
    location: str | None = None
    dpop_nonce: str | None = None  # the DPoP-Nonce header, when the server sent one
    dpop_error: str | None = None  # challenge_error() of its WWW-Authenticate header


def answer_of(status: int, headers: Any) -> Answer:
    """The ``Answer`` for a response's status and headers (any case-insensitive mapping:
    requests' and aiohttp's both fit), as both drivers read it."""
    return Answer(
        status,
        headers.get("Location"),
        dpop_nonce=headers.get("DPoP-Nonce"),
        dpop_error=challenge_error(headers.get("WWW-Authenticate")),
    )


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
        confined: redirects may only lead to ``allowed_origins`` (discovery, token exchange).
        error: the exception raised for refused URLs and redirect loops.
        dpop: signs a DPoP proof per hop for DPoP-bound tokens (RFC 9449) and remembers the
            nonces the token's origins send; None when the connection does not use DPoP.
    """

    def __init__(
        self,
        tokens: TokenSource | None,
        allowed_origins: Iterable[str],
        *,
        with_token: bool = True,
        follow_redirects: bool = True,
        max_redirects: int = MAX_REDIRECTS,
        confined: bool = False,
        error: type[BackendAuthError] = UnsafeURLError,
        dpop: ProofSource | None = None,
    ) -> None:
        self.tokens = tokens
        self.dpop = dpop
        self.allowed_origins = frozenset(
            parse_url(o, "allowed origin").origin for o in allowed_origins
        )
        self.with_token = with_token
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.confined = confined
        self.error = error

    def __repr__(self) -> str:
        return f"BearerPolicy(origins={sorted(self.allowed_origins)}, with_token={self.with_token})"

    def allows(self, url: str) -> bool:
        """May ``url`` receive the token? (Raises ``error`` for an ambiguous URL.)"""
        return parse_url(url, "request URL", error=self.error).origin in self.allowed_origins

    def hop_headers(
        self, method: str, url: URL, token: Token | None
    ) -> tuple[tuple[str, str], ...]:
        """The credential headers for one hop (none without a token): ``Authorization``, and
        for a DPoP-bound token a proof signed for exactly this hop's method and URL."""
        if token is None:
            return ()
        scheme = token_scheme(token)
        headers = [("Authorization", f"{scheme} {token.value}")]
        if scheme == "DPoP":
            if self.dpop is None:
                raise self.error(
                    "A DPoP-bound access token needs a proof key, and this request has none."
                )
            headers.append(("DPoP", self.dpop.proof(method, url.url, token.value)))
        return tuple(headers)

    def flow(
        self, method: str, url: str, *, replayable: bool = True, has_body: bool = False
    ) -> Flow:
        """The decision for one request, as a generator of ``Step``s (see the module doc).

        Args:
            method: the request's method.
            url: the request's URL.
            replayable: the body can be sent again (a 401 retry, a 307/308 hop).
            has_body: the request carries a body (never re-sent to another origin).
        """
        method = method.upper()
        first = parse_url(url, "request URL", error=self.error)
        current = first
        hops = 0
        renewed = nonce_retried = reuse = False
        drop_body = False
        token: Token | None = None
        while True:
            allowed = current.origin in self.allowed_origins
            if not reuse:
                token = None
                if self.with_token and self.tokens is not None and allowed:
                    token = yield GetToken()
            reuse = False
            value = None if token is None else token.value
            same_origin = current.origin == first.origin
            remove = list(CREDENTIAL_HEADERS)
            if self.dpop is not None:
                remove.append("DPoP")  # a proof is made per hop (or none is sent)
            if not same_origin:
                remove.append("Cookie")
            if drop_body:
                remove.extend(BODY_HEADERS)
            set_headers = self.hop_headers(method, current, token)
            answer: Answer = yield Send(
                method,
                current.url,
                value,
                hop=hops,
                same_origin=same_origin,
                drop_body=drop_body,
                set_headers=set_headers,
                remove_headers=tuple(remove),
            )
            if allowed and self.dpop is not None and answer.dpop_nonce:
                # Remembered per origin; only from origins the token may go to.
                self.dpop.remember_nonce(current.url, answer.dpop_nonce)
            if (
                answer.status == 401
                and answer.dpop_error == "use_dpop_nonce"
                and any(name == "DPoP" for name, _ in set_headers)
                and not nonce_retried
                and replayable
                and self.dpop is not None
                and self.dpop.nonce_for(current.url) is not None
            ):
                # The server wants its (new) nonce in the proof: same token, fresh proof.
                log.info("%s asked for a new DPoP nonce: resending once", current.origin)
                nonce_retried = reuse = True
                continue
            if answer.status == 401 and value is not None and not renewed and replayable:
                log.info(
                    "%s answered 401: renewing the access token and retrying once",
                    current.origin,
                )
                yield DropToken(value)
                renewed = True
                continue
            if not self.follow_redirects or not is_redirect(answer.status, answer.location):
                return
            if not replayable and not drop_body and answer.status in (307, 308):
                raise self.error(
                    f"{method} {display_url(current.url)} answered {answer.status}, which asks "
                    "to send the same body again, but the body was a stream that cannot be "
                    "replayed."
                )
            hop = next_hop(
                first=first,
                current=current,
                method=method,
                has_body=has_body and not drop_body,
                status=answer.status,
                location=answer.location,
                hops=hops,
                max_redirects=self.max_redirects,
                allowed_origins=self.allowed_origins,
                confined=self.confined,
                error=self.error,
            )
            assert hop is not None
            current, method = hop.target, hop.method
            drop_body = drop_body or hop.drop_body
            hops += 1
            renewed = nonce_retried = False


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
            value = tokens.get()
        elif isinstance(step, DropToken):
            assert tokens is not None
            tokens.invalidate(step.value)
            value = None
        else:
            return step
