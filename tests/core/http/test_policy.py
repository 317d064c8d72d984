"""``BearerPolicy.flow`` and the one redirect rule, step by step (sans-IO), then the same
scenarios through both drivers against real servers on loopback: requests (``BackendAuth``,
the workers) and aiohttp (``send_async``, the triggerer) must send exactly the same hops."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_backendauth.core.auth.tokens import AccessToken, TokenCache
from airflow_provider_backendauth.core.errors import UnsafeURLError
from airflow_provider_backendauth.core.http.policy import (
    BODY_HEADERS,
    Answer,
    BearerPolicy,
    DropToken,
    GetToken,
    Send,
)
from airflow_provider_backendauth.core.http.redirects import next_hop
from airflow_provider_backendauth.core.urls import parse_url
from tests.security.hostile import HostileServer, Reply

A = "https://a.example"
B = "https://b.example"


def tokens() -> TokenCache:
    counter = itertools.count(1)
    return TokenCache(
        lambda: AccessToken(f"tok-policy-{next(counter):04d}", expires_at=time.time() + 300)
    )


def tok(value: str) -> AccessToken:
    """What a driver sends back for ``GetToken``."""
    return AccessToken(value, expires_at=time.time() + 300)


class Steps:
    """Drives a flow by hand: each call feeds a value and returns the next step."""

    def __init__(self, policy: BearerPolicy, method: str, url: str, **options: Any) -> None:
        self.flow = policy.flow(method, url, **options)
        self.step: Any = next(self.flow)

    def feed(self, value: Any) -> Any:
        try:
            self.step = self.flow.send(value)
        except StopIteration:
            self.step = None
        return self.step


def test_a_token_for_an_allowed_origin_then_done() -> None:
    flow = Steps(BearerPolicy(tokens(), [A]), "GET", f"{A}/x")
    assert flow.step == GetToken()
    send = flow.feed(tok("t1"))
    assert isinstance(send, Send) and (send.method, send.url, send.token) == ("GET", f"{A}/x", "t1")
    assert send.set_headers == (("Authorization", "Bearer t1"),)
    assert "Authorization" in send.remove_headers
    assert flow.feed(Answer(200)) is None


def test_a_401_renews_once() -> None:
    flow = Steps(BearerPolicy(tokens(), [A]), "GET", f"{A}/x")
    flow.feed(tok("t1"))
    assert flow.feed(Answer(401)) == DropToken("t1")
    assert flow.feed(None) == GetToken()
    assert flow.feed(tok("t2")).token == "t2"
    assert flow.feed(Answer(401)) is None  # once only


def test_a_redirect_to_another_origin_goes_without_token_or_cookie() -> None:
    flow = Steps(BearerPolicy(tokens(), [A]), "GET", f"{A}/x")
    flow.feed(tok("t1"))
    send = flow.feed(Answer(302, f"{B}/y"))
    assert (send.url, send.token, send.hop, send.same_origin) == (f"{B}/y", None, 1, False)
    assert send.set_headers == () and {"Authorization", "Cookie"} <= set(send.remove_headers)
    assert flow.feed(Answer(302, f"{A}/z")) == GetToken()  # back: judged anew
    assert flow.feed(tok("t1")).token == "t1"


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (303, "POST", ("GET", True)),
        (303, "HEAD", ("HEAD", False)),
        (301, "POST", ("GET", True)),
        (302, "POST", ("GET", True)),
        (302, "PUT", ("PUT", False)),
        (307, "POST", ("POST", False)),
        (308, "PUT", ("PUT", False)),
    ],
)
def test_method_rules_on_the_same_origin(status, method, expected) -> None:
    flow = Steps(BearerPolicy(None, [A]), method, f"{A}/x", has_body=True)
    send = flow.feed(Answer(status, "/y"))
    assert (send.method, send.drop_body) == expected
    assert set(BODY_HEADERS) <= set(send.remove_headers) or not send.drop_body


@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_body_never_goes_to_another_origin(status) -> None:
    flow = Steps(BearerPolicy(None, [A]), "PUT", f"{A}/x", has_body=True)
    with pytest.raises(UnsafeURLError, match="never re-sent to another origin"):
        flow.feed(Answer(status, f"{B}/steal"))


def test_https_to_http_the_hop_limit_and_confinement() -> None:
    flow = Steps(BearerPolicy(None, [A]), "GET", f"{A}/x")
    with pytest.raises(UnsafeURLError, match="plain HTTP"):
        flow.feed(Answer(302, "http://a.example/x"))
    flow = Steps(BearerPolicy(None, [A], max_redirects=2), "GET", f"{A}/x")
    flow.feed(Answer(302, "/1"))
    flow.feed(Answer(302, "/2"))
    with pytest.raises(UnsafeURLError, match="redirected more than 2 times"):
        flow.feed(Answer(302, "/3"))
    flow = Steps(BearerPolicy(None, [A], confined=True), "GET", f"{A}/x")
    with pytest.raises(UnsafeURLError, match="outside the allowed origins"):
        flow.feed(Answer(302, f"{B}/x"))


def test_no_token_when_told_and_no_replay_of_a_stream() -> None:
    flow = Steps(BearerPolicy(tokens(), [A], with_token=False), "GET", f"{A}/x")
    assert isinstance(flow.step, Send) and flow.step.token is None
    flow = Steps(BearerPolicy(None, [A]), "POST", f"{A}/x", replayable=False, has_body=True)
    with pytest.raises(UnsafeURLError, match="cannot be replayed"):
        flow.feed(Answer(307, "/y"))


def test_the_redirect_rule_alone() -> None:
    here = parse_url(f"{A}/x")
    common: dict[str, Any] = dict(
        first=here, current=here, hops=0, max_redirects=5, allowed_origins={here.origin}
    )
    assert next_hop(
        method="GET", has_body=False, status=200, location=None, confined=False,
        error=UnsafeURLError, **common,
    ) is None  # fmt: skip
    hop = next_hop(
        method="POST", has_body=True, status=303, location="/y", confined=True,
        error=UnsafeURLError, **common,
    )  # fmt: skip
    assert hop is not None and (hop.method, hop.target.url, hop.drop_body) == (
        "GET",
        f"{A}/y",
        True,
    )


# -- the same scenarios through both drivers ---------------------------------------------


@pytest.fixture
def servers() -> Iterator[tuple[HostileServer, HostileServer]]:
    """Origin "a" (allowed) and origin "b" (another)."""
    pair = HostileServer("a"), HostileServer("b")
    yield pair
    for server in pair:
        server.close()


def send(driver: str, policy: BearerPolicy, method: str, url: str, body: bytes | None) -> int:
    headers = {"Content-Type": "application/json", "Cookie": "session=1"}
    if driver == "requests":
        from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
        from airflow_provider_backendauth.core.http.sessions import plain_session

        response = plain_session().request(
            method, url, data=body, headers=headers, auth=BackendAuth(None, policy=policy),
            timeout=10,
        )  # fmt: skip
        return int(response.status_code)
    from airflow_provider_backendauth.core.http.aiohttp_driver import send_async, shared_session

    async def run() -> int:
        async with shared_session(True) as session:
            reply = await send_async(
                session, policy, method, url, timeout=10, headers=headers, content=body,
                max_bytes=1 << 20,
            )  # fmt: skip
        return reply.status

    return asyncio.run(run())


def seen(*servers: HostileServer) -> list[tuple[str, str, str, str | None, bytes, bool]]:
    return [
        (s.name, r.method, r.path, r.authorization, r.body, "cookie" in r.headers)
        for s in servers
        for r in s.requests
    ]


SCENARIOS = ["302 away and back", "303 after POST", "307 same origin", "401 renews once"]


def script(name: str, a: HostileServer, b: HostileServer) -> tuple[str, str]:
    if name == "302 away and back":
        a.routes["/x"] = Reply(302, {"Location": f"{b.url}/hop"})
        b.routes["/hop"] = Reply(302, {"Location": f"{a.url}/back"})
        a.routes["/back"] = Reply(200, body={"ok": True})
        return "GET", "/x"
    if name == "303 after POST":
        a.routes["/x"] = Reply(303, {"Location": f"{b.url}/result"})
        b.routes["/result"] = Reply(200, body={"ok": True})
        return "POST", "/x"
    if name == "307 same origin":
        a.routes["/x"] = Reply(307, {"Location": "/y"})
        a.routes["/y"] = Reply(201, body={"ok": True})
        return "POST", "/x"
    a.routes["/x"] = lambda s: Reply(401 if s.authorization.endswith("0001") else 200, body={})
    return "GET", "/x"


@pytest.mark.parametrize("name", SCENARIOS)
def test_both_drivers_send_the_same_hops(name, servers) -> None:
    a, b = servers
    results = {}
    for driver in ("requests", "aiohttp"):
        a.requests.clear()
        b.requests.clear()
        method, path = script(name, a, b)
        policy = BearerPolicy(tokens(), [a.url])
        body = b'{"phi": true}' if method == "POST" else None
        status = send(driver, policy, method, f"{a.url}{path}", body)
        results[driver] = (status, seen(a, b))
    assert results["requests"] == results["aiohttp"], results
    status, hops = results["requests"]
    assert status in (200, 201)
    for server, _method, _path, authorization, _body, cookie in hops:
        if server == "b":  # the other origin: never the token, never the cookie
            assert authorization is None and not cookie
    expected = {
        # Grouped by server: a's requests, then b's.
        "302 away and back": [("a", "GET", "/x"), ("a", "GET", "/back"), ("b", "GET", "/hop")],
        "303 after POST": [("a", "POST", "/x"), ("b", "GET", "/result")],
        "307 same origin": [("a", "POST", "/x"), ("a", "POST", "/y")],
        "401 renews once": [("a", "GET", "/x"), ("a", "GET", "/x")],
    }[name]
    assert [h[:3] for h in hops] == expected
    if name == "307 same origin":
        assert [h[4] for h in hops] == [b'{"phi": true}'] * 2
    if name == "303 after POST":
        assert hops[1][4] == b""
