"""Token renewal for event loops: on an executor of the connection's own, never the loop's.

The token exchange is synchronous (requests, a signed assertion) and must not run on the
event loop. ``asyncio.to_thread`` would put it on the loop's default executor, which in a
triggerer every deferred task of every provider shares (``min(32, cores + 4)`` threads). A
slow token endpoint then held them all: one trigger fetching, every other trigger of that
connection waiting on the token cache's lock in a thread of its own, and every other
connection's polls queued behind them (issue 21: at K=100 a healthy server's exports fell
from 30 to 19 polls a minute; at K=10 to 0.14 of their schedule).

Here each connection configuration gets one thread of its own, made on first need: a
source that says which configuration it serves (``renewal_key``: the connection client's
``LazyTokens``, built per request, name its settings) shares it with every other source of
that configuration; any other source gets one of its own while it lives. One is enough and
bounds it: the cache fetches one token at a time anyway (single flight), and whoever queues
behind the fetch finds the new token at once. A fresh cached token, the common case, is read
on the loop without any thread (``fresh()``). A connection whose token endpoint hangs
therefore stalls only its own exports, for as long as its token request's timeout.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_backendauth.core.http.policy import Token, TokenSource

_by_source: weakref.WeakKeyDictionary[TokenSource, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_by_key: dict[Hashable, ThreadPoolExecutor] = {}  # one per connection configuration
_executors_lock = threading.Lock()


def executor_for(tokens: TokenSource) -> ThreadPoolExecutor:
    """The one-thread executor of this source's connection configuration (its
    ``renewal_key``), else of the source itself while it lives; made on first use."""
    key: Hashable | None = getattr(tokens, "renewal_key", None)
    with _executors_lock:
        executor = _by_key.get(key) if key is not None else _by_source.get(tokens)
        if executor is None:
            executor = ThreadPoolExecutor(1, thread_name_prefix="backendauth-token-renewal")
            if key is not None:
                _by_key[key] = executor
            else:
                _by_source[tokens] = executor
        return executor


async def get_token(tokens: TokenSource) -> Token:
    """A valid token: the cached one if the source can say it is fresh without waiting
    (``TokenCache.fresh``), else one from the source's own thread."""
    fresh = getattr(tokens, "fresh", None)
    if fresh is not None:
        token: Token | None = fresh()
        if token is not None:
            return token
    return await asyncio.get_running_loop().run_in_executor(executor_for(tokens), tokens.get)


async def invalidate_token(tokens: TokenSource, value: str | None) -> None:
    """``tokens.invalidate(value)`` on the source's own thread: it takes the cache's lock,
    which a renewal in progress holds."""
    await asyncio.get_running_loop().run_in_executor(executor_for(tokens), tokens.invalidate, value)
