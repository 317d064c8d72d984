"""``requests`` driver of the one token-attachment decision (``BearerPolicy``).

``BackendAuth`` is a ``requests`` ``AuthBase`` (for sessions, the HTTP provider's
``auth_type`` and the per-thread authorized sessions): it drives ``BearerPolicy.flow`` hop by
hop, sending each hop through the same connection adapter (so each is under its own
deadline: ``core/http/deadline.py``). It only does I/O; every decision is the policy's.

``get_confined`` is the one tokenless bounded GET of a document whose origin matters (SMART
discovery, a published JWKS): redirects only within the given origins, the answer read
within a cap.

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests
from requests.auth import AuthBase

from airflow_provider_backendauth.core.errors import BackendAuthError, UnsafeURLError
from airflow_provider_backendauth.core.http.bodies import FIXED_LIMIT, read_answer
from airflow_provider_backendauth.core.http.policy import (
    BearerPolicy,
    Send,
    TokenSource,
    answer_of,
    drive_tokens,
)

_FLOW_MARK = "_backendauth_flow"


class BackendAuth(AuthBase):
    """``requests`` driver of ``BearerPolicy``: adds ``Authorization: Bearer`` for the
    allowed origins only, renews once on 401, follows redirects hop by hop.

    Usable with a plain ``requests.Session`` (``session.auth = auth``) and with the HTTP
    provider's ``auth_type``. Redirects are followed by this auth, by the one redirect rule
    (``core/http/redirects.py``; requests' own judges origins with a different URL parser than
    the one it connects with, and re-sends bodies across origins), so ``allow_redirects=False``
    does not stop them; build it with ``follow_redirects=False`` to get the 3xx itself (our
    sessions never follow it; another session may, but never with the token). A redirect's
    own body is never read: the response is closed before the next hop is sent.
    """

    def __init__(
        self,
        tokens: TokenSource | None,
        allowed_origins: Iterable[str] = (),
        *,
        policy: BearerPolicy | None = None,
        follow_redirects: bool = True,
    ) -> None:
        self.policy = policy or BearerPolicy(
            tokens, allowed_origins, follow_redirects=follow_redirects
        )

    @property
    def tokens(self) -> TokenSource | None:
        return self.policy.tokens

    @property
    def allowed_origins(self) -> frozenset[str]:
        return self.policy.allowed_origins

    def __repr__(self) -> str:
        return f"BackendAuth(origins={sorted(self.allowed_origins)})"

    def allows(self, url: str) -> bool:
        return self.policy.allows(url)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body
        replayable = body is None or isinstance(body, (bytes, str))
        flow = self.policy.flow(
            request.method or "GET",
            request.url or "",
            replayable=replayable,
            has_body=body is not None and body not in (b"", ""),
        )
        original = request.copy()  # every hop is built from it, by the policy's rules
        step = drive_tokens(flow, None, self.policy.tokens)
        assert step is not None  # a flow always starts with a Send
        _apply(request, step)
        setattr(request, _FLOW_MARK, (flow, original))
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        while True:
            request = response.request
            # Hops that requests itself makes (copies of our request) carry this hook but not
            # our flow: leave them alone (they never carry the token: see below).
            mark = getattr(request, _FLOW_MARK, None)
            if mark is None:
                return response
            setattr(request, _FLOW_MARK, None)
            flow, original = mark
            answer = answer_of(response.status_code, response.headers)
            try:
                step = drive_tokens(flow, answer, self.policy.tokens)
            except BaseException:
                response.close()  # a refused hop: its body is never read
                raise
            if step is None:
                if response.is_redirect:
                    # Not ours to follow; requests may follow it with a copy of this request:
                    # never with our token.
                    request.headers.pop("Authorization", None)
                    request.headers.pop("DPoP", None)
                return response
            following = original.copy()
            following.prepare_url(step.url, None)
            following.method = step.method
            if step.drop_body:
                following.body = None
            _apply(following, step)
            setattr(following, _FLOW_MARK, (flow, original))
            response.close()  # never read a body we are about to discard (it may be huge)
            new_response: requests.Response = response.connection.send(following, **kwargs)
            new_response.history = [*response.history, response]
            response = new_response


def _apply(request: requests.PreparedRequest, step: Send) -> None:
    """The policy's header rules for this hop."""
    for name in step.remove_headers:
        request.headers.pop(name, None)
    for name, value in step.set_headers:
        request.headers[name] = value


def get_confined(
    session: requests.Session,
    url: str,
    origins: Iterable[str],
    *,
    timeout: float,
    max_bytes: int,
    what: str,
    error: type[BackendAuthError] = UnsafeURLError,
) -> tuple[requests.Response, bytes]:
    """GET ``url`` as JSON with no token, following redirects only within ``origins``, and
    read the answer within ``max_bytes`` (decoded; the cap for its status: ``read_answer``).

    Returns the closed response (status, headers) and its body.

    Raises:
        requests.RequestException: the server could not be reached.
        BackendAuthError: ``error`` for a redirect out of ``origins``; ``ResponseTooLargeError``
            for an answer over the cap.
    """
    confined = BackendAuth(None, policy=BearerPolicy(None, origins, confined=True, error=error))
    response = session.get(
        url,
        headers={"Accept": "application/json"},
        timeout=timeout,
        stream=True,
        allow_redirects=False,
        auth=confined,
    )
    with response:
        body = read_answer(response, max_bytes=max_bytes, what=what, setting=FIXED_LIMIT)
    return response, body
