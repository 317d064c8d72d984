"""A small per-process cache whose misses are single flight.

Many threads of one worker (mapped tasks, a thread pool of hooks) often want the same
expensive thing at once: a parsed private key (cryptography validates an RSA key on every
load, tens of milliseconds), or a server's SMART configuration (a network round trip). A
plain "check, compute, store" cache lets all of them compute it; here the first caller
computes while the others wait for its answer, and share its exception too (so 16 threads
make one failing request, not 16 in a row). Failures are not cached: the next call tries
again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class CacheInfo:
    """``hits`` includes callers that waited for another thread's computation."""

    hits: int
    misses: int
    size: int


class SingleFlightCache(Generic[V]):
    """A bounded LRU mapping from a key to a value computed at most once at a time.

    Args:
        maxsize: entries kept; the least recently used goes first.
    """

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._inflight: dict[Hashable, Future[V]] = {}
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value for ``key``, computing it with ``compute()`` if there is none
        (once, however many threads ask at the same time)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._hits += 1
                return self._entries[key]
            flight = self._inflight.get(key)
            leader = flight is None
            if flight is None:
                flight = self._inflight[key] = Future()
                self._misses += 1
            else:
                self._hits += 1
        if not leader:
            return flight.result()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
            flight.set_exception(exc)
            raise
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            del self._inflight[key]
        flight.set_result(value)
        return value

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries))

    def clear(self) -> None:
        """Forget every entry and the counters (a computation in flight still completes)."""
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0
