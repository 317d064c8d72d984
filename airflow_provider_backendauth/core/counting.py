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

import os
from collections.abc import Callable
from typing import Any

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


_COUNTERS: dict[str, Callable[[], ByteCounter]] = {
    "stringzilla": _stringzilla_counter,
    "bytes": _bytes_counter,
}
_auto: tuple[str, ByteCounter] | None = None


def counter_names() -> list[str]:
    """The byte counters that can be used here, fastest first."""
    names = []
    for name, factory in _COUNTERS.items():
        try:
            factory()
        except ImportError:
            continue
        names.append(name)
    return names


def byte_counter(name: str = "auto") -> tuple[str, ByteCounter]:
    """The named byte counter and its actual name. ``auto`` is the fastest installed, or the
    one ``BACKENDAUTH_COUNTER`` names; it is chosen once per process."""
    global _auto
    if name == "auto":
        if _auto is None:
            chosen = os.environ.get(COUNTER_ENV) or counter_names()[0]
            _auto = (chosen, _make(chosen))
        return _auto
    return name, _make(name)


def _make(name: str) -> ByteCounter:
    try:
        return _COUNTERS[name]()
    except KeyError:
        choices = ["auto", *_COUNTERS]
        raise ValueError(f"counter must be one of {choices}, not {name!r}") from None
    except ImportError as exc:
        raise ValueError(f"the {name!r} byte counter is not installed ({exc})") from None
