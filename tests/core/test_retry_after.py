"""``Retry-After`` in every form servers send: delta-seconds, HTTP-date, Unix time (seconds or
milliseconds), and garbage. Examples plus properties (hypothesis): no input crashes, every
result is None or a finite number in [0, ceiling]."""

from __future__ import annotations

import math
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_backendauth.core.retry import RETRY_AFTER_CEILING, parse_retry_after

NOW = 1_796_160_000.0  # December 2026


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("86400", 86400.0),
        # Unix times, as some servers send: a moment, not decades.
        (str(int(NOW) + 426), 426.0),
        (str(int(NOW * 1000) + 30_000), 30.0),
        (str(int(NOW) - 600), 0.0),  # a moment just past: retry now
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
    ],
)
def test_forms(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value", [None, "", "  ", "-1", "-0.5", "nan", "NaN", "inf", "-inf", "1e400", "soon", "1,5"]
)
def test_unusable_values_mean_back_off(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_huge_values_stay_huge_for_the_caller_to_refuse() -> None:
    # 1e9 is 2001 as a Unix time: far outside the window, so it is a delay of 31 years,
    # which callers refuse (a budget, a deadline) instead of sleeping through.
    assert parse_retry_after("1000000000", NOW) == 1e9
    assert parse_retry_after("1e300", NOW) == RETRY_AFTER_CEILING
    five_years = int(NOW) + 5 * 366 * 86400  # too far for a moment: a delay, refused later
    assert parse_retry_after(str(five_years), NOW) == five_years


def test_the_example_from_the_wild() -> None:
    # "Retry-After: 1796160426" from a reference server, 426 s after NOW.
    assert parse_retry_after("1796160426", NOW) == pytest.approx(426)


@given(st.text(max_size=60))
def test_any_text_gives_none_or_a_sane_delay(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or (math.isfinite(result) and 0 <= result <= RETRY_AFTER_CEILING)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_number_gives_none_or_a_sane_delay(number: float) -> None:
    result = parse_retry_after(repr(number), NOW)
    assert result is None or (math.isfinite(result) and 0 <= result <= RETRY_AFTER_CEILING)
    if math.isfinite(number) and 0 <= number < 86_400:
        assert result == pytest.approx(number)  # small deltas are taken as they are


@given(st.integers(min_value=-86400, max_value=300 * 86400))
def test_unix_times_near_now_are_moments(offset: int) -> None:
    result = parse_retry_after(str(int(NOW) + offset), NOW)
    assert result == pytest.approx(max(0, offset))


@given(st.floats(min_value=NOW - 10**9, max_value=NOW + 10**9))
def test_http_dates_are_moments(moment: float) -> None:
    result = parse_retry_after(formatdate(moment, usegmt=True), NOW)
    assert result is not None
    assert result == pytest.approx(max(0.0, math.floor(moment) - NOW), abs=1.0)
