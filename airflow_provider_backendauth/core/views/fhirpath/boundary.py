"""``lowBoundary()`` / ``highBoundary()`` (FHIRPath N1, an experimental SQL-on-FHIR function).

The least and greatest value a partially precise value can stand for: ``1.0`` -> 0.95 / 1.05,
``1970-06`` -> 1970-06-01 / 1970-06-30, a dateTime without a zone -> the earliest (+14:00)
and latest (-12:00) offsets. Dates and times stay strings, as FHIR JSON holds them.
"""

from __future__ import annotations

import calendar
import re
from decimal import Decimal
from typing import Any

from airflow_provider_backendauth.core.views.fhirpath.runtime import as_decimal, is_number

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
_TIME = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def _decimal(value: Any, high: bool, digits: int | None) -> Decimal:
    number = as_decimal(value)
    exponent = number.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    half = Decimal(5).scaleb(-(places + 1))
    result = number + half if high else number - half
    return result if digits is None else round(result, digits)


def _date(text: str, high: bool) -> str | None:
    m = _DATE.match(text)
    if not m:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    if (month is not None and not 1 <= int(month) <= 12) or (
        day is not None and not 1 <= int(day) <= 31
    ):
        return None  # not a date: no boundary
    if month is None:
        month = "12" if high else "01"
    if day is None:
        day = f"{calendar.monthrange(int(year), int(month))[1]:02d}" if high else "01"
    return f"{year}-{month}-{day}"


def _time_parts(parts: tuple[str | None, ...], high: bool) -> str:
    hour, minute, second, fraction = parts
    hour = hour or ("23" if high else "00")
    minute = minute or ("59" if high else "00")
    second = second or ("59" if high else "00")
    if fraction is None:
        fraction = "999" if high else "000"
    return f"{hour}:{minute}:{second}.{fraction.ljust(3, '9' if high else '0')}"


def _datetime(text: str, high: bool) -> str | None:
    m = _DATETIME.match(text)
    if not m:
        return None
    date = _date("-".join(p for p in m.group(1, 2, 3) if p), high)
    if m.group(4) is None:
        clock = "23:59:59.999" if high else "00:00:00.000"
    else:
        clock = _time_parts(m.group(4, 5, 6, 7), high)
    zone = m.group(8) or ("-12:00" if high else "+14:00")
    return f"{date}T{clock}{zone}"


def _time(text: str, high: bool) -> str | None:
    m = _TIME.match(text)
    return _time_parts(m.group(1, 2, 3, 4), high) if m else None


def boundary(value: Any, static_type: str | None, high: bool, digits: Any = None) -> Any:
    """The boundary of ``value``, or None where the function has no answer."""
    if is_number(value):
        return _decimal(value, high, digits if isinstance(digits, int) else None)
    if not isinstance(value, str):
        return None
    if static_type not in ("dateTime", "instant", "date", "time"):
        static_type = None  # a plain string (or unknown): its form says which it is
    if static_type in ("dateTime", "instant") or (static_type is None and "T" in value):
        return _datetime(value, high)
    if static_type == "date" or (static_type is None and _DATE.match(value)):
        return _date(value, high)
    if static_type == "time" or (static_type is None and _TIME.match(value)):
        return _time(value, high)
    return None
