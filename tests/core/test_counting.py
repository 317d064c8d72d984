"""Every byte counter counts exactly as ``bytes.count`` does (property-based), and the
fastest one is what CI tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_backendauth.core import counting
from airflow_provider_backendauth.core.counting import byte_counter, counter_names

COUNTERS = counter_names()


def test_the_fast_counter_is_installed_where_the_fast_extra_is() -> None:
    # CI installs the [fast] extra: were StringZilla missing, every test would use the
    # fallback and nothing would test the counter users of [fast] get.
    assert COUNTERS == ["stringzilla", "bytes"]


@pytest.mark.parametrize("name", COUNTERS)
@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=3000)
    | st.lists(st.sampled_from([b"\n", b"x", b"{}", b"\r\n", b"{{"])).map(b"".join),
    cut=st.integers(min_value=0, max_value=3100),
    kind=st.sampled_from(["bytes", "bytearray"]),
    needle=st.sampled_from([b"\n", b"{", b"\x00", b"\xff"]),
)
def test_every_counter_counts_like_bytes_count(
    name: str, data: bytes, cut: int, kind: str, needle: bytes
) -> None:
    end = min(cut, len(data))
    buffer = data if kind == "bytes" else bytearray(data)
    _, count = byte_counter(name)
    assert count(buffer, needle, end) == data.count(needle, 0, end)


def test_the_environment_may_name_the_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting.COUNTERS, "_auto", None)
    monkeypatch.setenv(counting.COUNTER_ENV, "bytes")
    assert byte_counter()[0] == "bytes"
    monkeypatch.setattr(counting.COUNTERS, "_auto", None)
    monkeypatch.setenv(counting.COUNTER_ENV, "abacus")
    with pytest.raises(ValueError, match="counter must be one of"):
        byte_counter()
    monkeypatch.setattr(counting.COUNTERS, "_auto", None)
    monkeypatch.delenv(counting.COUNTER_ENV)
    assert byte_counter()[0] == COUNTERS[0]
