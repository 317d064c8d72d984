"""``httpx`` driver of the one decision per hop (``BearerPolicy``), for the triggerer.

``send_async`` drives the same ``BearerPolicy.flow`` the ``requests`` driver uses, one hop at
a time, each sent with ``stream=True`` on a client that follows no redirect itself. It is not
an ``httpx.Auth``: httpx reads every intermediate answer of an auth flow whole (a 302 or 401
whose body is a gzip bomb would be inflated in the triggerer that every deferred task shares).
Here an intermediate answer is closed unread, and the final body is read raw and decoded by
``BoundedDecoder`` within its cap (``cap_for``: a 2xx up to ``max_bytes``, any other answer's
body cut at ``MAX_ERROR_BODY_BYTES``). The (synchronous, requests-based) token exchange runs on
the connection's own renewal thread (``core/http/renewal.py``), never on the event loop or its
shared default executor. The caller bounds the whole exchange with
``core/http/deadline.py`` ``within``.

``async_client`` is the one place an ``httpx.AsyncClient`` is built.
"""

from __future__ import annotations

import functools
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from airflow_provider_backendauth.core.http.bodies import (
    FIXED_LIMIT,
    BoundedDecoder,
    cap_for,
    too_large,
)
from airflow_provider_backendauth.core.http.policy import (
    BearerPolicy,
    DropToken,
    GetToken,
    Send,
    answer_of,
)
from airflow_provider_backendauth.core.http.renewal import get_token, invalidate_token
from airflow_provider_backendauth.core.http.sessions import USER_AGENT
from airflow_provider_backendauth.core.urls import display_url, parse_url

# What BoundedDecoder inflates; httpx would otherwise also offer br/zstd when installed.
ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True)
class Reply:
    """A final answer, its body read within its cap.

    Attributes:
        status: the HTTP status.
        headers: the answer's headers.
        body: the decoded body (cut at the error cap for a non-2xx answer).
        url: the URL that gave the answer (after redirects).
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    url: str = ""


@functools.lru_cache(maxsize=32)
def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """One SSL context per TLS verification setting, for every client in the process.

    Each ``httpx.AsyncClient(verify=True)`` would load the CA bundle into a context of its
    own: about 844 KB and 31 ms of CPU (issue 21), paid by every deferred export (a
    triggerer with 1000 of them: 0.9 GB and half a minute of CPU at start-up). With one
    shared context a client costs about 1.5 ms. A CA file is read once per process. The
    HTTP clients themselves stay one per trigger: httpcore's pool scans its whole queue on
    every connection event, so one pool behind a thousand triggers, all polling at once,
    spent its time on that scan (measured: start-up stalled for minutes at K=1000).
    """
    return httpx.create_ssl_context(verify=verify)


def async_client(*, verify: bool | str, timeout: float) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with the connection's TLS verification (over the process's
    shared ``ssl_context``) and timeout, our User-Agent, and no redirect following of its
    own (the policy follows them)."""
    return httpx.AsyncClient(
        verify=ssl_context(verify),
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
    )


async def send_async(
    client: httpx.AsyncClient,
    policy: BearerPolicy,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    max_bytes: int,
    setting: str = FIXED_LIMIT,
    on_token: Callable[[str], Awaitable[None]] | None = None,
) -> Reply:
    """Send one request through ``policy`` (token per hop, renewal on 401, redirects by the
    one redirect rule) and read the final answer's body within its cap.

    Raises:
        policy.error: a refused URL or hop.
        ResponseTooLargeError: a 2xx answer's decoded body passed ``max_bytes``.
        httpx.HTTPError: the network failed.
    """
    # Judge the URL as the server sent it (httpx would re-encode it).
    parse_url(url, "request URL", error=policy.error)
    flow = policy.flow(method, url, replayable=True, has_body=bool(content))
    step = next(flow)
    while True:
        if isinstance(step, GetToken):
            tokens = policy.tokens
            assert tokens is not None
            token = await get_token(tokens)
            if on_token is not None:
                await on_token(token.value)
            step = flow.send(token)
        elif isinstance(step, DropToken):
            tokens = policy.tokens
            assert tokens is not None
            await invalidate_token(tokens, step.value)
            step = flow.send(None)
        else:
            response = await client.send(_request(client, step, headers, content), stream=True)
            try:
                try:
                    step = flow.send(answer_of(response.status_code, response.headers))
                except StopIteration:
                    return await _read(response, max_bytes, setting)
                # The flow goes on (a redirect, a 401): this body is never read.
            finally:
                await response.aclose()


def _request(
    client: httpx.AsyncClient,
    step: Send,
    headers: Mapping[str, str] | None,
    content: bytes | None,
) -> httpx.Request:
    """The httpx request for one hop, with the policy's header rules applied."""
    request = client.build_request(
        step.method,
        step.url,
        headers=dict(headers or {}),
        content=None if step.drop_body else content,
    )
    for name in step.remove_headers:
        request.headers.pop(name, None)
    for name, value in step.set_headers:
        request.headers[name] = value
    return request


async def _read(response: httpx.Response, max_bytes: int, setting: str) -> Reply:
    """The final answer's body, raw bytes decoded within the cap."""
    cap, truncate = cap_for(response.status_code, max_bytes)
    url = str(response.url)

    def error() -> Exception:
        what = f"{response.request.method} {display_url(url)}"
        return too_large(what, url, cap, setting, response.status_code)

    try:
        decoder = BoundedDecoder(
            response.headers.get("Content-Encoding"), cap, truncate=truncate, error=error
        )
    except ValueError as exc:
        raise httpx.DecodingError(str(exc), request=response.request) from None
    async for chunk in response.aiter_raw():
        try:
            decoder.feed(chunk)
        except zlib.error as exc:
            raise httpx.DecodingError(
                f"undecodable body: {exc}", request=response.request
            ) from None
        if decoder.full:
            break
    return Reply(response.status_code, dict(response.headers.items()), bytes(decoder.body), url)
