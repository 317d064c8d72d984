"""The total deadline: a request's answer must be complete within the connection's
``timeout``, whatever rate the server sends it at.

``requests``/urllib3 and aiohttp apply ``timeout`` to each socket read: a server that sends one
byte of its status line, headers or body every 0.9 s never trips ``timeout=1`` and holds the
worker (or the triggerer's poll) as long as it likes. One ``Deadline`` per request, started
when it is sent, bounds the whole answer:

- Workers (requests): every session the provider makes (``core/http/sessions.py``
  ``plain_session``, behind ``BackendAuthClient.new_plain_session``) sends through
  ``DeadlineAdapter`` (``with_deadline``). It arms a watchdog that shuts the request's socket
  down at the deadline, so a status line or headers dripped byte by byte end with
  ``DeadlineExceededError``; an unstreamed body is read inside the same deadline, bounded
  (``core/http/bodies.py``), and a redirect's body not at all. A streamed body (token
  answers, REST/FHIR pages) is finished by ``core/http/bodies.py`` ``read_body`` against the
  same ``Deadline`` (``deadline_of``); bulk file bodies are long by nature and bounded per
  read and by size (``core/bulk/download.py``).
- The triggerer (aiohttp): ``within(deadline, ...)`` bounds the whole awaited request.

A deadline is a timeout (``DeadlineExceededError`` is a ``requests.Timeout``): retried like any
other. This module imports no Airflow.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Awaitable, Mapping
from contextlib import suppress
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_backendauth.core.urls import display_url

T = TypeVar("T")


class DeadlineExceededError(requests.Timeout):
    """The whole answer did not arrive within the deadline (a ``requests.Timeout``, so retry
    logic treats it like any other timeout). ``reason`` is the message without the URL."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Deadline:
    """``seconds`` from now (``time.monotonic()``): when a request's answer must be complete.

    Args:
        seconds: the connection's ``timeout``.
    """

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g} s, {self.remaining():.3f} s left)"

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    @property
    def reason(self) -> str:
        return (
            f"did not answer within {self.seconds:g} s (total deadline: the connection's "
            "'timeout' bounds each request as a whole)"
        )

    def error(self, what: str) -> DeadlineExceededError:
        """The error for ``what`` ("GET https://fhir.example/Patient") missing the deadline."""
        return DeadlineExceededError(f"{what} {self.reason}", reason=self.reason)


def total_seconds(timeout: Any) -> float | None:
    """The deadline for a ``requests`` ``timeout``: a number, or ``(connect, read)`` whose sum
    bounds the whole; None (no timeout at all) means no deadline."""
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return float(timeout)
    if isinstance(timeout, tuple) and len(timeout) == 2 and None not in timeout:
        return float(timeout[0]) + float(timeout[1])
    return None


def deadline_of(response: requests.Response) -> Deadline | None:
    """The deadline ``DeadlineAdapter`` gave ``response``'s request (None: sent elsewhere)."""
    deadline = getattr(response, "_backendauth_deadline", None)
    return deadline if isinstance(deadline, Deadline) else None


async def within(deadline: Deadline, awaitable: Awaitable[T], what: str) -> T:
    """Await ``awaitable`` (a whole request: headers and body) until ``deadline``; past it
    the request is cancelled and ``DeadlineExceededError`` raised (the triggerer's side)."""
    delay = max(0.0, deadline.remaining())
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        try:
            return await asyncio.wait_for(awaitable, delay)
        except asyncio.TimeoutError:
            raise deadline.error(what) from None
    # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that arrives as
    # the request completes (the trigger would go on polling after Airflow cancelled it).
    scope = timeout(delay)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if not scope.expired():
            raise  # the request's own TimeoutError, not the deadline
        raise deadline.error(what) from None


# --- the workers' side: a watchdog that shuts a late request's socket down ------------------


class _Guard:
    """One request's watch: the socket it reads, and whether the deadline fired."""

    __slots__ = ("_lock", "done", "fired", "sock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sock: Any = None
        self.fired = False
        self.done = False

    def watch(self, sock: Any) -> None:
        with self._lock:
            if self.done:
                return
            self.sock = sock
            if self.fired:
                _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            if self.sock is not None:
                _shutdown(self.sock)

    def disarm(self) -> None:
        with self._lock:
            self.done = True
            self.sock = None  # the heap may hold the guard until its deadline: not the socket


def _shutdown(sock: Any) -> None:
    """Shut the socket down under a blocked ``recv``: it returns at once (end of stream).
    The plain socket's ``shutdown`` even for TLS (``SSLSocket.shutdown`` also drops its SSL
    object, which the reading thread is using); ``.socket`` under urllib3's TLS-in-TLS."""
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if isinstance(raw, socket.socket):
        with suppress(OSError):
            socket.socket.shutdown(raw, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for every request of the process: a heap of deadlines (no thread
    per request; a request that finishes in time costs a heap push and a flag)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # Airflow forks workers: a fresh heap and thread
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Guard]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline) -> _Guard:
        guard = _Guard()
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._order), guard))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="backendauth-deadline", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._cond.notify()  # earlier than what the thread sleeps until
        return guard

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, guard = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            guard.fire()


_WATCHDOG = _Watchdog()
_current = threading.local()  # the guard of the request this thread is sending


class _Watched:
    """Hands the socket to the sending thread's guard as soon as there is one (a new
    connection after ``connect``, a reused one before the status line is read)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watch()

    def getresponse(self) -> Any:
        self._watch()
        return super().getresponse()  # type: ignore[misc]

    def _watch(self) -> None:
        guard = getattr(_current, "guard", None)
        sock = getattr(self, "sock", None)
        if guard is not None and sock is not None:
            guard.watch(sock)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: Mapping[str, type[HTTPConnectionPool]] = {
    "http": _WatchedHTTPPool,
    "https": _WatchedHTTPSPool,
}


class DeadlineAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose ``timeout`` bounds each request as a whole.

    The status line and headers must arrive, and an unstreamed body be read, within one
    ``Deadline`` of ``timeout`` (``(connect, read)``: their sum) from the moment the request
    is sent; past it the watchdog shuts the socket down and ``DeadlineExceededError`` is
    raised. A streamed response carries its deadline (``deadline_of``) for the body reader.
    Each redirect hop or resend is a request of its own (``BearerPolicy`` sends them through
    the adapter again). SOCKS proxies keep urllib3's own connections: per-read timeouts only.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        seconds = total_seconds(timeout)
        if seconds is None:
            return super().send(request, stream, timeout, verify, cert, proxies)
        deadline = Deadline(seconds)
        guard = _WATCHDOG.arm(deadline)
        outer = getattr(_current, "guard", None)
        _current.guard = guard
        try:
            response = super().send(request, stream, timeout, verify, cert, proxies)
            if not stream:
                _read_unstreamed(response, deadline)
        except Exception as exc:
            # The shutdown ends a read with whatever error the stack makes of a closed socket
            # (or none); a read timeout that ended past the deadline is the deadline too
            # (which of the two timers fires first is a matter of milliseconds).
            late_read = isinstance(exc, requests.exceptions.ReadTimeout) and deadline.passed()
            if guard.fired or late_read:
                raise deadline.error(_what(request)) from exc
            raise
        finally:
            _current.guard = outer
            guard.disarm()
        if guard.fired:
            # Headers cut off by the shutdown parse as complete (http.client ends them at
            # the end of the stream): never hand such a response on.
            response.close()
            raise deadline.error(_what(request))
        response._backendauth_deadline = deadline  # type: ignore[attr-defined]
        return response


def _read_unstreamed(response: requests.Response, deadline: Deadline) -> None:
    """An unstreamed answer's body, within the same deadline and bounded
    (``core/http/bodies.py``); a redirect's own body is never read (the policy judges the
    redirect from its status and ``Location`` alone)."""
    from airflow_provider_backendauth.core.http import bodies

    if response.is_redirect:
        bodies.discard_body(response)
        return
    bodies.read_answer(
        response,
        max_bytes=bodies.DEFAULT_MAX_RESPONSE_BYTES,
        what=_what(response.request),
        setting=bodies.FIXED_LIMIT,
        deadline=deadline,
    )


def _what(request: requests.PreparedRequest) -> str:
    return f"{request.method} {display_url(request.url or '')}"


S = TypeVar("S", bound=requests.Session)


def with_deadline(session: S) -> S:
    """``session``, sending through ``DeadlineAdapter``: its ``timeout`` is a total deadline."""
    session.mount("https://", DeadlineAdapter())
    session.mount("http://", DeadlineAdapter())
    return session
