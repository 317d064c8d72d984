"""Comparing dates, dateTimes, instants and times as FHIRPath does (N1 "Date/Time
comparison"), on the strings FHIR JSON holds them as.

Values are compared component by component (year, month, day, hour, minute, second with
its fraction); two values with time-zone offsets are first brought to UTC, so
``2015-02-07T13:28:17+02:00 = 2015-02-07T11:28:17Z``. When one value is more precise than the
other and they agree as far as both go (``2020-01`` and ``2020-01-15``), the answer is
unknown: comparisons give empty, as the specification says. A string that is not a date
or time is not compared here (the caller compares it as a string).
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2}(?:\.\d+)?))?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?"
)
_TIME = re.compile(r"T?(\d{2})(?::(\d{2})(?::(\d{2}(?:\.\d+)?))?)?")

Parts = tuple[list[int | Decimal], int | None]  # components present, offset in minutes


def looks_temporal(text: str) -> bool:
    """A cheap test first: most strings compared in views are codes, not dates."""
    return (len(text) >= 4 and text[:4].isdigit() and (len(text) == 4 or text[4] == "-")) or (
        len(text) >= 5 and text[2:3] == ":" and text[:2].isdigit()
    )


def _components(whole: tuple[str | None, ...], seconds: str | None) -> list[int | Decimal]:
    values: list[int | Decimal] = [int(g) for g in whole if g is not None]
    if seconds is not None:
        values.append(Decimal(seconds))  # seconds and their fraction are one precision
    return values


def _parse(text: str) -> tuple[str, Parts] | None:
    m = _DATETIME.fullmatch(text)
    if m:
        values = _components(m.group(1, 2, 3, 4, 5), m.group(6))
        zone = m.group(7)
        offset = None
        if zone is not None and len(values) > 3:
            offset = (
                0
                if zone == "Z"
                else (int(zone[1:3]) * 60 + int(zone[4:6])) * (-1 if zone[0] == "-" else 1)
            )
        return "datetime", (values, offset)
    m = _TIME.fullmatch(text)
    if m:
        return "time", (_components(m.group(1, 2), m.group(3)), None)
    return None


def _to_utc(values: list[int | Decimal], offset: int) -> list[int | Decimal]:
    """Components shifted by ``offset`` minutes (precision at least to the hour)."""
    year, month, day, hour = (int(v) for v in values[:4])
    minute = int(values[4]) if len(values) > 4 else 0
    moment = datetime.datetime(year, month, day, hour, minute) - datetime.timedelta(minutes=offset)
    shifted: list[int | Decimal] = [moment.year, moment.month, moment.day, moment.hour]
    if len(values) > 4:
        shifted.append(moment.minute)
    return shifted + values[5:]


NOT_TEMPORAL = 2
"""What ``compare`` answers when a value is not a date/time (or they are not of one kind)."""


def compare(left: str, right: str) -> int | None:
    """-1, 0 or 1; None when unknown (the precisions differ); ``NOT_TEMPORAL``.

    Raises nothing: an impossible value (month 13) is simply not a date here.
    """
    a, b = _parse(left), _parse(right)
    if a is None or b is None or a[0] != b[0]:
        return NOT_TEMPORAL
    (va, za), (vb, zb) = a[1], b[1]
    try:
        if za is not None and zb is not None:
            va, vb = _to_utc(va, za), _to_utc(vb, zb)
    except ValueError:  # not a calendar date (2021-02-30)
        return NOT_TEMPORAL
    for x, y in zip(va, vb, strict=False):  # as far as both go; the precisions decide below
        if x != y:
            return -1 if x < y else 1
    return 0 if len(va) == len(vb) else None
