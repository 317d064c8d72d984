"""The gzip inflaters: the bounded decompressor interface and which implementation runs.

Owns the choice of inflater, apart from how a body is decoded (``decode.py``), so that the
speed question (which library) and the safety question (bounded output, limits, cut streams)
are each answered in one place. Every inflater here has the ``bz2``-style interface
(``decompress(data, max_length)``, ``needs_input``, ``eof``, ``unused_data``) that lets
``decode.py`` ask for at most ``out_size`` bytes per call, never for "everything".

The fastest installed one is used: ``isal`` (python-isal), then ``zlib-ng``, then the
standard library's ``zlib`` (``pip install airflow-provider-backendauth[fast]`` brings the
faster two); ``BACKENDAUTH_BULK_INFLATER`` or the downloader's ``inflater`` argument names
one. Measured per decoded MB of FHIR-like NDJSON, one thread: isal 0.43 ms, zlib-ng 0.47 ms,
zlib 1.11 ms. All three release the GIL while inflating, so downloads in threads decode in
parallel.

This module imports no Airflow.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Protocol

from airflow_provider_backendauth.core.backends import FastestInstalled


class Inflater(Protocol):
    """The ``bz2``-style decompressor interface (``zlib._ZlibDecompressor`` of Python 3.12)."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: Any, max_length: int = -1) -> bytes: ...


class StdlibInflater:
    """The standard library's ``zlib.decompressobj`` behind the ``needs_input`` interface."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: Any, max_length: int = -1) -> bytes:
        tail = self._d.unconsumed_tail
        if tail:
            data = tail + bytes(data) if len(data) else tail
        out = self._d.decompress(data, max_length if max_length > 0 else 0)
        # Output that filled max_length may have more behind it even with no input left.
        self.needs_input = not self._d.unconsumed_tail and (
            max_length <= 0 or len(out) < max_length
        )
        return out


def _stdlib_gzip() -> Inflater:
    return StdlibInflater(16 + zlib.MAX_WBITS)


def _isal_gzip() -> Inflater:
    from isal import igzip_lib

    if not hasattr(igzip_lib, "IgzipDecompressor"):
        raise ImportError("isal too old: no igzip_lib.IgzipDecompressor")
    inflater: Inflater = igzip_lib.IgzipDecompressor(igzip_lib.DECOMP_GZIP)
    return inflater


def _zlib_ng_gzip() -> Inflater:
    from zlib_ng import zlib_ng

    if not hasattr(zlib_ng, "_ZlibDecompressor"):
        raise ImportError("zlib-ng too old: no _ZlibDecompressor")
    inflater: Inflater = zlib_ng._ZlibDecompressor(16 + zlib_ng.MAX_WBITS)
    return inflater


INFLATER_ENV = "BACKENDAUTH_BULK_INFLATER"
INFLATERS: FastestInstalled[Inflater] = FastestInstalled(
    "inflater",
    INFLATER_ENV,
    {"isal": _isal_gzip, "zlib-ng": _zlib_ng_gzip, "zlib": _stdlib_gzip},
)


def inflater_names() -> list[str]:
    """The gzip inflaters that can be used here, fastest first."""
    return INFLATERS.names()


def gzip_inflater_factory(name: str = "auto") -> tuple[str, Callable[[], Inflater]]:
    """The named gzip inflater and its actual name. ``auto`` is the fastest installed, or
    the one named by the ``BACKENDAUTH_BULK_INFLATER`` environment variable."""
    return INFLATERS.choose(name)
