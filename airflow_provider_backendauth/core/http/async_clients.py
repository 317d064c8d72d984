"""One ``httpx.AsyncClient`` per event loop and connection settings, leased by every trigger.

Each ``httpx.AsyncClient(verify=True)`` loads the CA bundle into an SSL context of its own:
about 844 KB and 31 ms of CPU (issue 21). A triggerer holding a thousand deferred exports,
one client each, spent about 0.9 GB and half a minute of CPU at start-up on copies of the
same bundle, and opened a connection per export. Here every trigger on the same event loop
with the same TLS verification and timeout leases one client: one SSL context, and one
connection pool per origin (httpx's default limits: at most 100 connections, 20 kept idle
for 5 s; a poll every few seconds per export reuses them, and a burst beyond 100 waits for
a free one within the request's deadline instead of opening more).

Guarantees: the client is built once per key even when hundreds of triggers start together
(the first builds it, in a thread: loading the CA bundle is slow, blocking work; the others
await the same build); it is closed when its last lease ends, so nothing outlives the
triggers that used it; a client belongs to one event loop (httpx's pool is bound to it), so
the key includes the loop. Limits: a lease must end on the loop it began on.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from airflow_provider_backendauth.core.http.httpx_driver import async_client

_Key = tuple[bool | str, float]


@dataclass(eq=False)
class _Shared:
    built: asyncio.Future[httpx.AsyncClient]
    leases: int = 0


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, _Shared]] = (
    weakref.WeakKeyDictionary()
)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return bool(cancelling and cancelling())


async def _lease(clients: dict[_Key, _Shared], key: _Key) -> tuple[_Shared, httpx.AsyncClient]:
    """The shared entry for ``key`` with one more lease, and its client (built here when
    nobody has; awaited when another lease is building it)."""
    while True:
        shared = clients.get(key)
        if shared is None:
            shared = clients[key] = _Shared(asyncio.get_running_loop().create_future())
            try:
                client = await asyncio.to_thread(async_client, verify=key[0], timeout=key[1])
            except BaseException as exc:
                del clients[key]
                if isinstance(exc, asyncio.CancelledError):
                    shared.built.cancel()  # the builder was cancelled: a waiter builds
                else:
                    shared.built.set_exception(exc)
                    shared.built.exception()  # the waiters raise it; no "never retrieved"
                raise
            shared.built.set_result(client)
        shared.leases += 1
        try:
            return shared, await asyncio.shield(shared.built)
        except asyncio.CancelledError:
            shared.leases -= 1
            if shared.built.cancelled() and not _being_cancelled():
                continue  # the lease that was building it gave up, not this one
            raise
        except BaseException:
            shared.leases -= 1
            raise


@asynccontextmanager
async def shared_async_client(
    *, verify: bool | str, timeout: float
) -> AsyncIterator[httpx.AsyncClient]:
    """Lease the running loop's client for these settings (``async with``)."""
    clients = _by_loop.setdefault(asyncio.get_running_loop(), {})
    key: _Key = (verify, float(timeout))
    shared, client = await _lease(clients, key)
    try:
        yield client
    finally:
        shared.leases -= 1
        if shared.leases == 0 and clients.get(key) is shared:
            del clients[key]
            await client.aclose()


def open_clients() -> int:
    """Clients open on the running loop (tests, benchmarks)."""
    return len(_by_loop.get(asyncio.get_running_loop(), {}))
