"""``httpx`` driver of the one token-attachment decision (``BearerPolicy``).

``HttpxBearerAuth`` is an ``httpx.Auth``: ``sync_auth_flow`` and ``async_auth_flow`` drive the
same ``BearerPolicy.flow`` generator the ``requests`` driver uses. The async flow never blocks
the event loop: the (synchronous, requests-based) token exchange runs on the connection's own
renewal thread (``renewal``), never the loop's shared default executor.

Use it with ``follow_redirects=False`` on the client: the flow follows redirects itself, one
hop at a time, judging each hop's origin (httpx's own redirect handling would keep the token
on an http → https upgrade of the same host, which the policy does not allow by default).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import httpx

from airflow_provider_backendauth.core.http.policy import (
    Answer,
    BearerPolicy,
    DropToken,
    Flow,
    GetToken,
    Send,
    drive_tokens,
)
from airflow_provider_backendauth.core.http.renewal import get_token, invalidate_token

# Headers that belong to one hop: httpx sets Host from the URL when a Request is built.
_HOP_HEADERS = ("host", "authorization", "content-length", "transfer-encoding")


class HttpxBearerAuth(httpx.Auth):
    """``httpx.Auth`` over ``BearerPolicy``.

    Args:
        policy: the decision (origins, tokens, with_token, error class).
        on_token: awaited with each token value before it is used (the trigger masks it).
    """

    requires_request_body = True  # a 401 retry or redirect hop resends the body
    requires_response_body = False

    def __init__(
        self,
        policy: BearerPolicy,
        *,
        on_token: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.policy = policy
        self._on_token = on_token

    def __repr__(self) -> str:
        return f"HttpxBearerAuth({self.policy!r})"

    def _start(self, request: httpx.Request) -> Flow:
        return self.policy.flow(request.method, str(request.url))

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._start(request)
        step = drive_tokens(flow, None, self.policy.tokens)
        while step is not None:
            response = yield _request_for(request, step)
            step = drive_tokens(flow, _answer(response), self.policy.tokens)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._start(request)
        value: object = None
        while True:
            try:
                step = flow.send(value)
            except StopIteration:
                return
            if isinstance(step, GetToken):
                tokens = self.policy.tokens
                assert tokens is not None
                token = await get_token(tokens)
                if self._on_token is not None:
                    await self._on_token(token.value)
                value = token.value
            elif isinstance(step, DropToken):
                tokens = self.policy.tokens
                assert tokens is not None
                await invalidate_token(tokens, step.value)
                value = None
            else:
                response = yield _request_for(request, step)
                value = _answer(response)


def _answer(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.headers.get("Location"))


def _request_for(original: httpx.Request, step: Send) -> httpx.Request:
    """The httpx request for one hop of the flow."""
    if step.hop == 0:
        request = original
    else:
        headers = [
            (name, value)
            for name, value in original.headers.multi_items()
            if name.lower() not in _HOP_HEADERS
            and not (name.lower() == "cookie" and not step.same_origin)
            and not (step.drop_body and name.lower() == "content-type")
        ]
        request = httpx.Request(
            step.method,
            step.url,
            headers=headers,
            content=None if step.drop_body else original.content,
            extensions=original.extensions,
        )
    if step.token is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {step.token}"
    return request
