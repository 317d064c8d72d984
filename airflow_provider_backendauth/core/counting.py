"""Counting one byte value in a buffer, with the fastest counter installed.

``bytes.count`` scans a byte at a time and holds the GIL while it does (0.4-0.6 ms per MB
here). Two hot paths count bytes: bulk downloads count NDJSON lines, and FHIR search counts
``{`` to know whether a page can hold more objects than its entry limit before parsing it.
StringZilla (in the ``[fast]`` extra) counts with SIMD at about 0.03 ms per MB; without it,
``bytes.count`` does the same work. ``BACKENDAUTH_COUNTER`` names one (to rule a binding out,
or to compare them).

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_backendauth.core.backends import FastestInstalled

ByteCounter = Callable[[Any, bytes, int], int]
"""``count(data, needle, end)``: how many times the single byte ``needle`` occurs in
``data[:end]`` (``data`` is bytes or a bytearray)."""

COUNTER_ENV = "BACKENDAUTH_COUNTER"


def _bytes_counter() -> ByteCounter:
    def count(data: Any, needle: bytes, end: int) -> int:
        return int(data.count(needle, 0, end))

    return count


def _stringzilla_counter() -> ByteCounter:
    import stringzilla

    sz_count = stringzilla.count
    if sz_count(b"a\nb\n\n", b"\n", 0, 4) != 2:  # start/end honoured
        raise ImportError("stringzilla too old: count() ignores its bounds")

    def count(data: Any, needle: bytes, end: int) -> int:
        return int(sz_count(data, needle, 0, end))

    return count


COUNTERS: FastestInstalled[ByteCounter] = FastestInstalled(
    "counter",
    COUNTER_ENV,
    {"stringzilla": _stringzilla_counter, "bytes": _bytes_counter},
)
_made: dict[str, ByteCounter] = {}


def counter_names() -> list[str]:
    """The byte counters that can be used here, fastest first."""
    return COUNTERS.names()


def byte_counter(name: str = "auto") -> tuple[str, ByteCounter]:
    """The named byte counter and its actual name. ``auto`` is the fastest installed, or the
    one ``BACKENDAUTH_COUNTER`` names; it is chosen once per process."""
    chosen, factory = COUNTERS.choose(name)
    counter = _made.get(chosen)
    if counter is None:
        counter = _made[chosen] = factory()
    return chosen, counter
