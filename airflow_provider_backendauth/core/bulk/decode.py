"""Bounded decoding of bulk file bodies: the gzip/deflate layers and the size limits.

A bulk file server is not trusted: a 1 MB gzip body may expand to a terabyte. Everything here
works on pieces of bounded size, so memory stays about one input chunk plus one output piece
per download whatever the server sends:

* each inflater is fed at most ``_IN_SLICE`` input bytes at a time and asked for at most
  ``out_size`` output bytes per call (the ``max_length`` loop), never for "everything";
* the decoded size of a file is capped (``max_file_bytes``) and so is its expansion ratio
  (``max_compression_ratio``, the signature of a decompression bomb);
* a gzip or deflate stream must reach its end-of-stream marker, so a body cut short is not
  taken for a complete file (the final line's check is ``line_tally.py``'s).

Which inflater library runs is chosen in ``inflaters.py``; the decoded bytes are counted and
their final line judged by ``line_tally.py``. This module owns the bounded decoding itself:
the ``max_length`` loop, gzip members and padding, deflate's two framings, a gzip file served
as is, and the size and ratio limits, so every limit is enforced in one place.

This module imports no Airflow.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_backendauth.core.bulk.inflaters import (
    Inflater,
    StdlibInflater,
    gzip_inflater_factory,
)
from airflow_provider_backendauth.core.errors import (
    BulkExportError,
    CorruptBodyError,
    DecodeLimitError,
)

GZIP_MAGIC = b"\x1f\x8b"
# Input handed to an inflater per call. Small enough that the standard library's
# ``unconsumed_tail`` copies stay cheap, large enough to keep per-call overhead low.
_IN_SLICE = 64 * 1024
DEFAULT_OUT_SIZE = 256 * 1024  # decoded bytes per piece: stays in L2 while it is counted
DEFAULT_MAX_FILE_BYTES = 64 * 1024**3
DEFAULT_MAX_COMPRESSION_RATIO = 200.0
# Below this many decoded bytes the ratio is not judged: tiny, very regular files (a few
# identical lines) compress far better than real data and are harmless anyway.
RATIO_FLOOR_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    """How far a file may expand.

    Attributes:
        max_file_bytes: the most decoded bytes one file may have (``max_file_bytes``).
        max_compression_ratio: the most decoded bytes per byte received, judged once a file
            has more than ``ratio_floor`` decoded bytes (``max_compression_ratio``).
        ratio_floor: decoded bytes below which the ratio is not judged.
    """

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO
    ratio_floor: int = RATIO_FLOOR_BYTES

    def __post_init__(self) -> None:
        if self.max_file_bytes < 0:
            raise ValueError("max_file_bytes must be >= 0")
        if not self.max_compression_ratio >= 1:  # also refuses NaN
            raise ValueError("max_compression_ratio must be >= 1")


# --- layers ---------------------------------------------------------------------------------


class _Layer(Protocol):
    def feed(self, data: Any) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


class _GzipLayer:
    """gzip (possibly several members, as ``cat a.gz b.gz`` makes) with bounded output."""

    def __init__(self, factory: Callable[[], Inflater], out_size: int, what: str) -> None:
        self._factory = factory
        self._d = factory()
        self._out = out_size
        self._what = what
        self._drained = False  # the finished member's unused_data was taken
        self._padding = False  # zero bytes after the last member (gzip(1) tolerates them)

    def feed(self, data: Any) -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), _IN_SLICE):
            yield from self._inflate(view[start : start + _IN_SLICE])

    def _inflate(self, data: Any) -> Iterator[bytes]:
        try:
            while True:
                d = self._d
                if d.eof:
                    rest = data if self._drained else d.unused_data + bytes(data)
                    self._drained = True
                    if not rest:
                        return
                    if self._padding or not rest.strip(b"\0"):
                        if rest.strip(b"\0"):
                            raise CorruptBodyError(f"{self._what} has data after its gzip end")
                        self._padding = True
                        return
                    self._d, self._drained = self._factory(), False  # the next member
                    data = rest
                elif not len(data) and d.needs_input:
                    return
                out = self._d.decompress(data, self._out)
                data = b""
                if out:
                    yield out
        except (EOFError, zlib.error, ValueError, OSError) as exc:
            raise CorruptBodyError(f"{self._what} is not valid gzip ({exc})") from None
        except Exception as exc:  # isal.IsalError, zlib_ng.error: no common base
            if type(exc).__name__ in ("IsalError", "error"):
                raise CorruptBodyError(f"{self._what} is not valid gzip ({exc})") from None
            raise

    def finish(self) -> Iterator[bytes]:
        yield from self._inflate(b"")
        if not self._d.eof:
            raise CorruptBodyError(f"{self._what} ended before the end of its gzip stream")


class _DeflateLayer:
    """``Content-Encoding: deflate``: zlib-wrapped, or raw deflate as some servers send it."""

    def __init__(self, out_size: int, what: str) -> None:
        self._out = out_size
        self._what = what
        self._d: StdlibInflater | None = None
        self._head = b""

    def feed(self, data: Any) -> Iterator[bytes]:
        if self._d is None:
            self._head += bytes(data)
            if len(self._head) < 2:
                return
            first, second = self._head[0], self._head[1]
            wrapped = first & 0x0F == 8 and (first << 8 | second) % 31 == 0
            self._d = StdlibInflater(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        view = memoryview(data)
        for start in range(0, len(view), _IN_SLICE):
            yield from self._inflate(view[start : start + _IN_SLICE])

    def _inflate(self, data: Any) -> Iterator[bytes]:
        assert self._d is not None
        try:
            while len(data) or not self._d.needs_input:
                if self._d.eof:
                    return
                out = self._d.decompress(data, self._out)
                data = b""
                if out:
                    yield out
        except zlib.error as exc:
            raise CorruptBodyError(f"{self._what} is not valid deflate data ({exc})") from None

    def finish(self) -> Iterator[bytes]:
        if self._d is None:
            if self._head:
                raise CorruptBodyError(f"{self._what} ended inside its deflate header")
            return  # an empty body
        yield from self._inflate(b"")
        if not self._d.eof:
            raise CorruptBodyError(f"{self._what} ended before the end of its deflate stream")


class _SniffGzip:
    """The decoded body may itself be a gzip file (``.ndjson.gz`` served as is): decided by
    its first two bytes."""

    def __init__(self, factory: Callable[[], Inflater], out_size: int, what: str) -> None:
        self._make = lambda: _GzipLayer(factory, out_size, what)
        self._head = b""
        self.inner: _GzipLayer | None = None
        self.decided = False

    def feed(self, data: Any) -> Iterator[bytes]:
        if not self.decided:
            self._head += bytes(data)
            if len(self._head) < 2:
                return
            self.decided = True
            data, self._head = self._head, b""
            if data[:2] == GZIP_MAGIC:
                self.inner = self._make()
        if self.inner is not None:
            yield from self.inner.feed(data)
        elif len(data):
            yield data

    def finish(self) -> Iterator[bytes]:
        if not self.decided:
            self.decided = True
            if self._head:
                yield self._head
        elif self.inner is not None:
            yield from self.inner.finish()


# --- the body ---------------------------------------------------------------------------------


class BodyDecoder:
    """Turns the bytes received for one response into the file's bytes, within limits.

    Args:
        content_encoding: the response's ``Content-Encoding`` (``gzip``, ``deflate``,
            ``identity``, or a comma-separated list of them, outermost last).
        sniff_gzip: also decompress a body that is itself a gzip file.
        limits: size and ratio limits.
        what: how messages name the file (``Patient.000.ndjson from https://host/path``,
            without credentials).
        already_decoded: decoded bytes an earlier attempt wrote (``Range`` resume): they count
            towards ``max_file_bytes``.
        out_size: at most this many decoded bytes per piece.
        inflater: gzip inflater name (``auto``, ``isal``, ``zlib-ng``, ``zlib``).

    Raises (from ``feed``/``finish``):
        DecodeLimitError: a limit was exceeded.
        CorruptBodyError: the body is corrupt or was cut short.
    """

    def __init__(
        self,
        content_encoding: str | None,
        *,
        sniff_gzip: bool,
        limits: DecodeLimits,
        what: str,
        already_decoded: int = 0,
        out_size: int = DEFAULT_OUT_SIZE,
        inflater: str = "auto",
    ) -> None:
        self.limits = limits
        self.what = what
        self.raw_bytes = 0
        self.decoded_bytes = already_decoded
        self._base = already_decoded
        _, factory = gzip_inflater_factory(inflater)
        self._layers: list[_Layer] = []
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        for coding in reversed([c for c in codings if c and c != "identity"]):
            if coding in ("gzip", "x-gzip"):
                self._layers.append(_GzipLayer(factory, out_size, what))
            elif coding == "deflate":
                self._layers.append(_DeflateLayer(out_size, what))
            else:
                raise BulkExportError(
                    f"{what} came with Content-Encoding {coding!r}, which was not asked for "
                    "(Accept-Encoding: gzip, deflate)."
                )
        self._sniff: _SniffGzip | None = None
        if sniff_gzip:
            self._sniff = _SniffGzip(factory, out_size, what)
            self._layers.append(self._sniff)
        self._transparent = not self._layers

    @property
    def transparent(self) -> bool:
        """Whether received bytes are the file's bytes from now on (``passed`` may be used
        instead of ``feed``): no Content-Encoding, and the body turned out not to be gzip."""
        if not self._transparent and len(self._layers) == 1 and self._sniff is not None:
            self._transparent = self._sniff.decided and self._sniff.inner is None
        return self._transparent

    @property
    def gzip_file(self) -> bool:
        """Whether the body turned out to be a gzip file (its offsets are not the file's)."""
        return self._sniff is not None and self._sniff.inner is not None

    def passed(self, size: int) -> None:
        """Account for ``size`` bytes received and kept as they are (``transparent``)."""
        self.raw_bytes += size
        self._count(size)

    def feed(self, data: Any) -> Iterator[bytes]:
        """The file's bytes decoded from ``data`` (received bytes), in bounded pieces."""
        if self.transparent:
            self.passed(len(data))
            yield data
            return
        self.raw_bytes += len(data)
        yield from self._checked(self._through(0, (data,)))

    def finish(self) -> Iterator[bytes]:
        """The last decoded bytes; raises ``CorruptBodyError`` if a stream did not end."""
        yield from self._checked(self._finish(0))

    def _through(self, index: int, pieces: Any) -> Iterator[bytes]:
        if index == len(self._layers):
            yield from pieces
            return
        layer = self._layers[index]
        for piece in pieces:
            yield from self._through(index + 1, layer.feed(piece))

    def _finish(self, index: int) -> Iterator[bytes]:
        if index == len(self._layers):
            return
        yield from self._through(index + 1, self._layers[index].finish())
        yield from self._finish(index + 1)

    def _checked(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self._count(len(piece))
            yield piece

    def _count(self, size: int) -> None:
        self.decoded_bytes += size
        limits = self.limits
        if self.decoded_bytes > limits.max_file_bytes:
            raise DecodeLimitError(
                f"{self.what} decodes to more than {limits.max_file_bytes} bytes, the "
                f"max_file_bytes limit; raise max_file_bytes if such a file is expected."
            )
        decoded = self.decoded_bytes - self._base
        if decoded > limits.ratio_floor and decoded > limits.max_compression_ratio * max(
            1, self.raw_bytes
        ):
            raise DecodeLimitError(
                f"{self.what} expands more than {limits.max_compression_ratio:g} times "
                f"({decoded} bytes from {self.raw_bytes} received): a decompression bomb? "
                f"Raise max_compression_ratio if such a file is expected."
            )
