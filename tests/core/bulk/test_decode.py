"""Bounded decoding of bulk file bodies, without a network: every inflater, gzip members,
cut streams, the size and ratio limits (memory measured with tracemalloc), line tallies."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_backendauth.core.bulk.decode import BodyDecoder, DecodeLimits
from airflow_provider_backendauth.core.bulk.inflaters import inflater_names
from airflow_provider_backendauth.core.bulk.line_tally import LineTally
from airflow_provider_backendauth.core.counting import byte_counter, counter_names
from airflow_provider_backendauth.core.errors import CorruptBodyError, DecodeLimitError

INFLATERS = inflater_names()
COUNTERS = counter_names()
NDJSON = b"".join(b'{"resourceType":"Patient","id":"p%d"}\n' % i for i in range(5000))


def decode(
    pieces: Iterable[bytes],
    encoding: str | None = None,
    *,
    sniff: bool = True,
    inflater: str = "auto",
    limits: DecodeLimits | None = None,
    keep: bool = True,
) -> bytes:
    decoder = BodyDecoder(
        encoding,
        sniff_gzip=sniff,
        limits=limits or DecodeLimits(),
        what="Patient.000.ndjson from http://127.0.0.1/f",
        out_size=4096,
        inflater=inflater,
    )
    out = bytearray()
    for piece in pieces:
        for part in decoder.feed(piece):
            assert len(part) <= 4096
            if keep:
                out += part
    for part in decoder.finish():
        out += part
    return bytes(out)


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_the_stdlib_inflater_is_always_there() -> None:
    assert INFLATERS[-1] == "zlib"


@pytest.mark.parametrize("inflater", INFLATERS)
@pytest.mark.parametrize("size", [1, 7, 70_000])
def test_gzip_file_and_content_encoding_decode(inflater: str, size: int) -> None:
    packed = gzip.compress(NDJSON)
    data = packed if size > 1 else packed[:3000]
    expected = NDJSON if size > 1 else None
    if expected is None:  # byte by byte: a short prefix, which must be refused as cut
        with pytest.raises(CorruptBodyError, match="ended before the end of its gzip stream"):
            decode(pieces_of(data, size), inflater=inflater)
        return
    assert decode(pieces_of(data, size), inflater=inflater) == expected
    assert decode(pieces_of(data, size), "gzip", sniff=False, inflater=inflater) == expected
    # Content-Encoding gzip over a body that is itself a gzip file: both layers come off.
    double = gzip.compress(packed)
    assert decode(pieces_of(double, size), "gzip", inflater=inflater) == expected


@pytest.mark.parametrize("inflater", INFLATERS)
def test_multi_member_gzip_and_zero_padding(inflater: str) -> None:
    body = gzip.compress(NDJSON[:1000]) + gzip.compress(NDJSON[1000:]) + b"\0" * 10
    assert decode(pieces_of(body, 333), inflater=inflater) == NDJSON


@pytest.mark.parametrize("inflater", INFLATERS)
def test_garbage_after_the_gzip_end_is_refused(inflater: str) -> None:
    with pytest.raises(CorruptBodyError):
        decode([gzip.compress(NDJSON) + b"\0\0junk"], inflater=inflater)


@pytest.mark.parametrize("inflater", INFLATERS)
def test_corrupt_gzip_is_a_decode_error(inflater: str) -> None:
    packed = bytearray(gzip.compress(NDJSON))
    packed[-6] ^= 0xFF  # the CRC
    with pytest.raises(CorruptBodyError, match="not valid gzip"):
        decode([bytes(packed)], inflater=inflater)


def test_plain_bodies_pass_through_unchanged() -> None:
    assert decode([b"a", b"bc\n", b"d\n"]) == b"abc\nd\n"
    assert decode([b"\x1f"]) == b"\x1f"  # one byte: not enough to be gzip
    assert decode([]) == b""


@pytest.mark.parametrize("wrapped", [True, False])
def test_deflate_zlib_wrapped_or_raw(wrapped: bool) -> None:
    squeeze = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    body = squeeze.compress(NDJSON) + squeeze.flush()
    assert decode(pieces_of(body, 1000), "deflate", sniff=False) == NDJSON
    with pytest.raises(CorruptBodyError, match="deflate"):
        decode([body[:500]], "deflate", sniff=False)


def test_an_unasked_for_encoding_is_refused() -> None:
    with pytest.raises(Exception, match="Content-Encoding 'br'"):
        decode([b"x"], "br")


BOMB_MB = 64


def bomb() -> bytes:
    squeeze = zlib.compressobj(9, wbits=31)
    zeros = b"\0" * (1 << 20)
    return b"".join(squeeze.compress(zeros) for _ in range(BOMB_MB)) + squeeze.flush()


@pytest.mark.parametrize("inflater", INFLATERS)
@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_a_bomb_hits_the_ratio_limit_with_bounded_memory(
    inflater: str, encoding: str | None
) -> None:
    packed = bomb()
    assert len(packed) < BOMB_MB * 1100  # ~1000x
    tracemalloc.start()
    try:
        with pytest.raises(DecodeLimitError, match="max_compression_ratio") as info:
            decode(
                pieces_of(packed, 16384),
                encoding,
                inflater=inflater,
                limits=DecodeLimits(max_compression_ratio=100, ratio_floor=8 << 20),
                keep=False,  # as the downloader: written out piece by piece
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak  # not the 64 MB it expands to
    assert "Patient.000.ndjson from http://127.0.0.1/f" in str(info.value)


def test_the_size_limit_names_its_setting() -> None:
    with pytest.raises(DecodeLimitError, match="more than 10000 bytes.*raise max_file_bytes"):
        decode([gzip.compress(NDJSON)], limits=DecodeLimits(max_file_bytes=10_000))
    with pytest.raises(DecodeLimitError, match="max_file_bytes"):
        decode([NDJSON], limits=DecodeLimits(max_file_bytes=10_000))  # plain too


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        DecodeLimits(max_compression_ratio=float("nan"))
    with pytest.raises(ValueError):
        DecodeLimits(max_file_bytes=-1)


def tally_of(pieces: Iterable[bytes]) -> LineTally:
    tally = LineTally()
    for piece in pieces:
        tally.feed(piece)
    return tally


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_line_tally_counts_and_judges_the_last_line(size: int) -> None:
    good = b'{"a":1}\n{"b":2}\n{"c":3}'
    tally = tally_of(pieces_of(good, size))
    assert (tally.total, tally.bytes) == (3, len(good))
    assert tally.final_line_problem() is None
    assert tally_of(pieces_of(good + b"\n", size)).final_line_problem() is None
    assert tally_of(pieces_of(good + b"\n\n", size)).final_line_problem() is None
    cut = tally_of(pieces_of(good[:-3], size))
    assert "not JSON" in (cut.final_line_problem() or "")
    junk = tally_of(pieces_of(b'{"a":1}\n<html>oops</html>\n', size))
    assert "not JSON" in (junk.final_line_problem() or "")
    assert tally_of([b"[1]\n"]).final_line_problem() == "its last line is not a JSON object"


def test_line_tally_of_a_reused_buffer() -> None:
    buffer = bytearray(b'{"a":1}\n{"b":XXXXXXXX')
    tally = LineTally()
    tally.feed(buffer, 12)
    tally.feed(b":2}XX", 3)
    assert (tally.total, tally.bytes) == (2, 15)
    assert tally.final_line_problem() is None
    assert LineTally().total == 0
    assert LineTally().final_line_problem() is None


def test_a_long_last_line_is_judged_by_its_braces(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_backendauth.core.bulk import line_tally as module

    monkeypatch.setattr(module, "LAST_LINE_PARSE_LIMIT", 16)
    line = b'{"data":"' + b"x" * 100 + b'"}'
    assert tally_of(pieces_of(line, 7)).final_line_problem() is None
    assert tally_of(pieces_of(b"{}\n" + line + b"\n", 7)).final_line_problem() is None
    assert "not a JSON object" in (tally_of(pieces_of(line[:-5], 7)).final_line_problem() or "")


def test_the_environment_may_name_the_inflater(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_backendauth.core.bulk import inflaters as module

    monkeypatch.setattr(module.INFLATERS, "_auto", None)
    monkeypatch.setenv(module.INFLATER_ENV, "zlib")
    assert module.gzip_inflater_factory("auto")[0] == "zlib"
    monkeypatch.setattr(module.INFLATERS, "_auto", None)
    monkeypatch.setenv(module.INFLATER_ENV, "nonsense")
    with pytest.raises(ValueError, match="inflater must be one of"):
        module.gzip_inflater_factory("auto")
    monkeypatch.setattr(module.INFLATERS, "_auto", None)


@pytest.mark.parametrize("name", COUNTERS)
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_tally_with_each_counter(name: str, size: int) -> None:
    tally = LineTally(byte_counter(name)[1])
    for piece in pieces_of(NDJSON + b'{"last":1}', size):
        tally.feed(piece)
    assert (tally.total, tally.bytes) == (5001, len(NDJSON) + 10)
    assert tally.final_line_problem() is None


_LINES = st.lists(
    st.one_of(
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(
            lambda d: json.dumps(d).encode()
        ),
        st.sampled_from([b"[1]", b"<html>", b'{"cut":', b"  {}  ", b"x" * 3000]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    lines=_LINES,
    final_newline=st.booleans(),
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=8),
)
def test_a_tally_fed_in_any_pieces_agrees_with_the_whole_file(
    lines: list[bytes], final_newline: bool, sizes: list[int]
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    pieces, position, index = [], 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[position : position + size])
        position, index = position + size, index + 1
    # Half the pieces come in a reused buffer bigger than the piece, as the download does.
    tally = LineTally()
    for number, piece in enumerate(pieces):
        if number % 2:
            buffer = bytearray(piece) + b"\xffJUNK"
            tally.feed(buffer, len(piece))
        else:
            tally.feed(piece)
    assert tally.total == len(lines) and tally.bytes == len(data)
    try:
        last_ok = isinstance(json.loads(lines[-1]), dict)
    except ValueError:
        last_ok = False
    assert (tally.final_line_problem() is None) == last_ok
