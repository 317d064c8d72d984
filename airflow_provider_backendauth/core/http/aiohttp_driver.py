"""``aiohttp`` driver of the one decision per hop (``BearerPolicy``), for the triggerer.

``send_async`` drives the same ``BearerPolicy.flow`` the ``requests`` driver uses, one hop at
a time, on a session that follows no redirect and decompresses nothing itself. An
intermediate answer (a redirect, a 401) is released unread; the final body is read raw and
decoded by ``BoundedDecoder`` within its cap (``cap_for``: a 2xx up to ``max_bytes``, any
other answer's body cut at ``MAX_ERROR_BODY_BYTES``), so a gzip bomb is never inflated in the
triggerer that every deferred task shares. The (synchronous, requests-based) token exchange
runs on the connection's own renewal thread (``core/http/renewal.py``), never on the event
loop or its shared default executor. The caller bounds the whole exchange with
``core/http/deadline.py`` ``within``.

Why aiohttp, and one session for many triggers (issue 21): a triggerer holds hundreds of
deferred exports, each polling every few seconds. A poll through httpx cost about 1 ms of
the loop's CPU (0.8-1.0 ms per request measured on loopback, against 0.15-0.25 ms for
aiohttp, whose HTTP parser is compiled), so 1000 exports kept the loop busy and late. And
httpx needs one client per trigger (httpcore's pool rescans its whole queue on every
connection event), hence one connection per export. aiohttp's connector keeps idle
connections per origin in O(1), so ``shared_session`` gives every trigger of one event loop
with the same TLS settings one session: connections are reused across exports and origins
are kept apart by the pool's key (scheme, host, port, TLS). What must not be shared is not:
the session keeps no cookies (``DummyCookieJar``), and every credential is set per request by
the policy.

Proxies: ``HTTP(S)_PROXY``/``NO_PROXY`` are honoured as requests honours them on the workers
(``proxy_for`` asks requests' own functions, once per origin and environment). aiohttp's
``trust_env`` is off: it would read the environment and ``~/.netrc`` on the loop's default
executor twice per request (the executor every deferred task shares) and add netrc
credentials to requests that carry none.

``shared_session`` is the one place an ``aiohttp.ClientSession`` is built.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

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
from airflow_provider_backendauth.core.http.sessions import ENVIRONMENT_KEYS, USER_AGENT
from airflow_provider_backendauth.core.urls import display_url, parse_url

# What BoundedDecoder inflates; nothing else is offered.
ACCEPT_ENCODING = "gzip, deflate"
# What a failed exchange raises: the network, a timeout of a socket read, an undecodable body.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError)
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """A final answer, its body read within its cap.

    Attributes:
        status: the HTTP status.
        headers: the answer's headers (a case-insensitive mapping).
        body: the decoded body (cut at the error cap for a non-2xx answer).
        url: the URL that gave the answer (after redirects).
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    url: str = ""


def ca_source(verify: bool | str) -> str | None:
    """The CA bundle (a file or a directory) a ``verify`` setting means, as the workers'
    ``requests`` sessions read it: the connection's ``ca_bundle`` if set; for the default
    (True) ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` when the environment sets them, else
    certifi's bundle, which requests uses; None for no verification."""
    if verify is False:
        return None
    if isinstance(verify, str):
        return verify
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return env or DEFAULT_CA_BUNDLE_PATH


@functools.lru_cache(maxsize=32)
def _context_for(source: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if source is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif os.path.isdir(source):
        context.load_verify_locations(capath=source)
    else:
        context.load_verify_locations(cafile=source)
    return context


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """One SSL context per CA source, for every session in the process: loading the CA
    bundle costs about 844 KB and 31 ms of CPU (issue 21), paid once, not per export."""
    return _context_for(ca_source(verify))


def proxy_for(url: str) -> str | None:
    """The proxy requests would use for ``url`` from the environment, or None."""
    scheme, _, rest = url.partition("://")
    origin = f"{scheme}://{rest.split('/', 1)[0]}"
    return _proxy_for(origin, tuple(os.environ.get(name) for name in ENVIRONMENT_KEYS))


@functools.lru_cache(maxsize=256)
def _proxy_for(origin: str, environment: tuple[str | None, ...]) -> str | None:
    from requests.utils import get_environ_proxies, select_proxy

    return select_proxy(origin, get_environ_proxies(origin))


@dataclass
class _Lease:
    session: aiohttp.ClientSession
    users: int = 0


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, _Lease]] = (
    weakref.WeakKeyDictionary()
)


def _new_session(context: ssl.SSLContext) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        ssl=context,
        # No cap, in all or per origin: a cap would queue one server's polls behind another's
        # slow ones. Idle connections are reused, so a thousand exports polling every few
        # seconds hold about as many connections as are in flight at once.
        limit=0,
        limit_per_host=0,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # shared by connections: it must keep nothing
        auto_decompress=False,  # BoundedDecoder inflates within the cap
        trust_env=False,  # proxies: proxy_for, per request
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
    )


@asynccontextmanager
async def shared_session(verify: bool | str) -> AsyncIterator[aiohttp.ClientSession]:
    """The running loop's session for this TLS setting, while the caller uses it: made on
    first need (its SSL context built in a thread: reading a CA bundle blocks), closed when
    its last user is done."""
    loop = asyncio.get_running_loop()
    source = ca_source(verify)
    leases = _sessions.setdefault(loop, {})
    lease = leases.get(source)
    if lease is None:
        context = await asyncio.to_thread(_context_for, source)
        lease = leases.get(source)  # another trigger may have made it meanwhile
        if lease is None:
            lease = leases[source] = _Lease(_new_session(context))
    lease.users += 1
    try:
        yield lease.session
    finally:
        lease.users -= 1
        if lease.users == 0:
            if leases.get(source) is lease:
                del leases[source]
            await lease.session.close()


async def send_async(
    session: aiohttp.ClientSession,
    policy: BearerPolicy,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    max_bytes: int,
    setting: str = FIXED_LIMIT,
    on_token: Callable[[str], Awaitable[None]] | None = None,
) -> Reply:
    """Send one request through ``policy`` (token per hop, renewal on 401, redirects by the
    one redirect rule) and read the final answer's body within its cap. ``timeout`` bounds
    the connect and each socket read (the caller's deadline bounds the whole).

    Raises:
        policy.error: a refused URL or hop.
        ResponseTooLargeError: a 2xx answer's decoded body passed ``max_bytes``.
        one of ``TRANSPORT_ERRORS``: the network failed, or the body could not be decoded.
    """
    # Judge the URL as the server sent it; aiohttp gets it as it is (encoded=True).
    parse_url(url, "request URL", error=policy.error)
    limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
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
            hop = step
            response = await session.request(
                hop.method,
                URL(hop.url, encoded=True),
                headers=_hop_headers(hop, headers),
                data=None if hop.drop_body else content,
                allow_redirects=False,
                timeout=limits,
                proxy=proxy_for(hop.url),
            )
            answer_headers = _headers_of(response)
            try:
                step = flow.send(answer_of(response.status, answer_headers))
            except StopIteration:
                return await _read(response, answer_headers, hop, max_bytes, setting)
            except BaseException:
                response.close()
                raise
            # The flow goes on (a redirect, a 401): this body is never read, and a connection
            # with unread bytes is closed, not reused.
            response.release()


def _hop_headers(step: Send, headers: Mapping[str, str] | None) -> CIMultiDict[str]:
    """The request headers for one hop, with the policy's header rules applied."""
    hop: CIMultiDict[str] = CIMultiDict(headers or {})
    for name in step.remove_headers:
        hop.popall(name, None)
    for name, value in step.set_headers:
        hop[name] = value
    return hop


def _headers_of(response: aiohttp.ClientResponse) -> CIMultiDictProxy[str]:
    """The answer's headers decoded as ISO-8859-1, as ``requests`` (``http.client``) decodes
    them on the workers: the same server bytes give the same text on both paths (aiohttp's
    own ``headers`` would turn a byte such as 0x9b into a lone surrogate)."""
    return CIMultiDictProxy(
        CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.raw_headers
        )
    )


async def _read(
    response: aiohttp.ClientResponse,
    headers: CIMultiDictProxy[str],
    step: Send,
    max_bytes: int,
    setting: str,
) -> Reply:
    """The final answer's body, raw bytes decoded within the cap."""
    cap, truncate = cap_for(response.status, max_bytes)

    def error() -> Exception:
        return too_large(
            f"{step.method} {display_url(step.url)}", step.url, cap, setting, response.status
        )

    complete = False
    try:
        try:
            decoder = BoundedDecoder(
                headers.get("Content-Encoding"), cap, truncate=truncate, error=error
            )
        except ValueError as exc:
            raise aiohttp.ClientPayloadError(str(exc)) from None
        while not decoder.full:
            chunk = await response.content.read(_READ_SIZE)
            if not chunk:
                complete = True
                break
            try:
                decoder.feed(chunk)
            except zlib.error as exc:
                raise aiohttp.ClientPayloadError(f"undecodable body: {exc}") from None
        return Reply(response.status, headers, bytes(decoder.body), step.url)
    finally:
        if complete:
            response.release()  # read to the end: the connection goes back to the pool
        else:
            response.close()
