"""The one redirect rule, sans-IO: whether a 3xx answer is followed, and how the next hop
is sent. ``BearerPolicy.flow`` asks it at every hop, for both drivers (requests on the
workers, aiohttp in the triggerer), so no request of the provider follows a redirect by an HTTP
library's own rules.

Every hop is judged on its own:

- the target must be an unambiguous http(s) URL (``core/urls.py``), and never HTTPS -> HTTP;
- ``confined`` requests (discovery, the token exchange) may only go to the allowed origins:
  the answer they fetch decides where the client assertion goes;
- 303 turns any method but HEAD into a body-less GET; 301/302 turn a POST into a body-less
  GET (what browsers and requests do); other methods keep theirs;
- 307/308 keep the method and the body, but a body is never re-sent to another origin (a
  REST ``POST``/``PUT`` carries PHI): that hop is refused with a clear error;
- at most ``max_redirects`` hops, then a clear error naming the first URL (a loop would
  otherwise re-send the request, and its body, again and again).

Which headers travel with a hop (the token, cookies, the body's headers) is decided in
``core/http/policy.py`` from the ``Hop`` returned here. This module does no I/O and imports
no HTTP client and no Airflow.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from airflow_provider_backendauth.core.errors import BackendAuthError
from airflow_provider_backendauth.core.urls import URL, display_url, redirect_target

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Hop:
    """Where a redirect leads and how to send there.

    Attributes:
        method: the method for the next hop.
        target: the next hop's URL, parsed.
        drop_body: the next hop is sent without the body (and its Content-* headers).
    """

    method: str
    target: URL
    drop_body: bool


def is_redirect(status: int, location: str | None) -> bool:
    """Is this answer a redirect the policy has to judge?"""
    return status in REDIRECT_STATUSES and bool(location)


def next_hop(
    *,
    first: URL,
    current: URL,
    method: str,
    has_body: bool,
    status: int,
    location: str | None,
    hops: int,
    max_redirects: int,
    allowed_origins: Collection[str],
    confined: bool,
    error: type[BackendAuthError],
) -> Hop | None:
    """The next hop for ``status``/``location`` answered to ``method current.url``, or None
    when the answer is not a redirect (it is the final answer).

    Args:
        first: the original request's URL (named in errors).
        current: the URL that answered.
        method: the method that was sent to it.
        has_body: the request that was sent carried a body.
        hops: redirects followed so far.
        allowed_origins: the origins ``confined`` requests may go to.
        confined: refuse hops outside ``allowed_origins``.
        error: the exception raised for a refused hop.

    Raises:
        error: the hop is refused (ambiguous, HTTPS -> HTTP, outside the allowed origins when
            confined, a body to another origin, or one hop too many).
    """
    if not is_redirect(status, location):
        return None
    assert location is not None
    shown = display_url(first.url)
    if hops >= max_redirects:
        raise error(
            f"{method} {shown} was redirected more than {max_redirects} times (last by "
            f"{display_url(current.url)}, HTTP {status}); refused: a redirect loop, or a "
            "server that should be given the final URL directly."
        )
    target = redirect_target(current.url, location, error=error)
    if confined and target.origin not in allowed_origins:
        raise error(
            f"{shown} redirected to {display_url(target.url)}, outside the allowed origins "
            f"({', '.join(sorted(allowed_origins))}); refused: the answer decides where the "
            "client's credentials go. Set the URL the server redirects to explicitly."
        )
    if status == 303 and method != "HEAD":
        return Hop("GET", target, drop_body=True)
    if status in (301, 302) and method == "POST":
        return Hop("GET", target, drop_body=True)
    if has_body and target.origin != current.origin:
        raise error(
            f"{method} {shown} was redirected (HTTP {status}) to another origin, "
            f"{display_url(target.url)}; refused: the request's body is never re-sent to "
            "another origin."
        )
    return Hop(method, target, drop_body=False)
