"""FHIR column types -> Arrow types, and the conversion of a batch of row values into Arrow.

The mapping follows the SQL-on-FHIR v2 "Default Type Mappings" table (ViewDefinition notes,
"Type Hinting with Tags"): each FHIR type goes to the closest Arrow type of its ISO SQL type.

- boolean -> ``bool``; integer, positiveInt, unsignedInt -> ``int32``; integer64 -> ``int64``.
- decimal -> ``string``, the exact FHIR text (the spec's CHARACTER VARYING): a decimal's
  precision is significant in FHIR (``1.50`` is not ``1.5``). ``decimals="decimal"`` gives
  ``decimal128(38, 18)``: exact, never a float; a value that does not fit fails the table
  rather than being rounded.
- date, dateTime, time -> ``string`` (the spec's default: partial dates and dateTimes
  without a zone have no faithful SQL type). ``temporal="timestamp"`` gives ``date32`` and
  UTC ``timestamp[us]``, partial values widened to their first instant (FHIRPath
  ``lowBoundary()``), a date-only dateTime read as midnight UTC; ``time`` stays text
  (Delta has no time type).
- instant -> ``timestamp[us, tz=UTC]`` (TIMESTAMP WITH TIME ZONE; Delta stores microseconds,
  finer digits, which are rare, are cut).
- base64Binary -> ``binary`` (decoded).
- every other type (code, id, string, uri, ...), or no type -> ``string`` (the spec: "treat
  any non-specified types as strings"); an object or list value becomes compact JSON.

docs/tables.md has the table with the reasons.

A column with ``collection: true`` is an Arrow ``list<T>`` of the element type above.

Per column, the spec's ``ansi/type`` tag overrides the default: ``BOOLEAN``, ``INT``/``INTEGER``,
``BIGINT``, ``DECIMAL(p,s)``/``NUMERIC(p,s)``, ``DATE``, ``TIMESTAMP`` and
``TIMESTAMP WITH TIME ZONE``, ``BINARY``/``VARBINARY``, ``CHARACTER VARYING``/``VARCHAR``/``TEXT``;
an unknown value is refused before any row is read.

Conversion is per batch of rows, column by column: the common case (values already of the
column's Python type) is one call into Arrow; only a batch that needs it is converted value
by value. A value that does not fit its column raises ``TableError`` naming the column, never
quoting the value (rows are patient data).

pyarrow is imported lazily (``pip install airflow-provider-backendauth[tables]``). This module
imports no Airflow.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth.core.errors import TableError, ViewDefinitionError

if TYPE_CHECKING:
    import pyarrow as pa

DECIMAL_PRECISION = 38  # the widest Arrow decimal128 / Delta / Spark decimal
DECIMAL_SCALE = 18  # 20 integer digits and 18 fractional ones: every realistic FHIR decimal

# FHIR type name -> the kind of Arrow column it becomes.
_KINDS: dict[str, str] = {
    "boolean": "boolean",
    "integer": "int32",
    "positiveInt": "int32",
    "unsignedInt": "int32",
    "integer64": "int64",
    "decimal": "decimal",
    "date": "date",
    "dateTime": "dateTime",
    "instant": "instant",
    "time": "string",
    "base64Binary": "binary",
}
# FHIRPath system types (``System.Boolean``...) a runner may report for computed columns.
_FHIRPATH_KINDS = {
    "Boolean": "boolean",
    "Integer": "int32",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "string",
    "String": "string",
}

_ANSI_DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")
_ANSI_KINDS = {
    "BOOLEAN": "boolean",
    "INT": "int32",
    "INTEGER": "int32",
    "BIGINT": "int64",
    "DATE": "date!",
    "TIMESTAMP": "dateTime!",
    "TIMESTAMP WITH TIME ZONE": "dateTime!",
    "BINARY": "binary",
    "VARBINARY": "binary",
    "CHARACTER VARYING": "string",
    "VARCHAR": "string",
    "TEXT": "string",
}


@dataclass(frozen=True)
class TypeOptions:
    """Choices the spec leaves to the runner (see the module docstring for each).

    Attributes:
        decimals: ``"string"`` (the spec's default: the exact FHIR text) or ``"decimal"``
            (Arrow ``decimal128(38, 18)``).
        temporal: ``"string"`` (the spec's default for date and dateTime) or ``"timestamp"``
            (``date32`` and UTC ``timestamp[us]``).
    """

    decimals: str = "string"
    temporal: str = "string"

    def __post_init__(self) -> None:
        if self.decimals not in ("string", "decimal"):
            raise ValueError(f"decimals must be 'string' or 'decimal', not {self.decimals!r}")
        if self.temporal not in ("string", "timestamp"):
            raise ValueError(f"temporal must be 'string' or 'timestamp', not {self.temporal!r}")


@dataclass(frozen=True)
class ColumnType:
    """How one column is stored: its Arrow type and the converter of a batch of its values."""

    name: str
    kind: str  # string, boolean, int32, int64, decimal-text, decimal, date, timestamp, binary
    collection: bool
    arrow: pa.DataType
    precision: int = DECIMAL_PRECISION
    scale: int = DECIMAL_SCALE

    def field(self) -> pa.Field:
        import pyarrow as pa

        return pa.field(self.name, self.arrow, nullable=True)

    def to_arrow(self, values: Sequence[Any]) -> pa.Array:
        """The Arrow array of one batch of this column's values (None is null)."""
        import pyarrow as pa

        if not self.collection:
            return _convert(self, values)
        offsets = [0]
        flat: list[Any] = []
        nulls = []
        for value in values:
            if value is None:
                nulls.append(True)
            else:
                if not isinstance(value, (list, tuple)):
                    value = [value]  # a single value in a collection column: a list of one
                flat.extend(value)
                nulls.append(False)
            offsets.append(len(flat))
        children = _convert(self, flat)
        mask = pa.array(nulls, pa.bool_()) if any(nulls) else None
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), children, mask=mask)


def arrow_type_of(kind: str, precision: int = DECIMAL_PRECISION, scale: int = DECIMAL_SCALE) -> Any:
    """The Arrow type of a single value of ``kind``."""
    import pyarrow as pa

    if kind == "decimal":
        return pa.decimal128(precision, scale)
    if kind in ("timestamp", "instant"):
        return pa.timestamp("us", tz="UTC")
    return {
        "boolean": pa.bool_(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "date": pa.date32(),
        "binary": pa.binary(),
    }.get(kind, pa.string())


def column_type(
    name: str,
    fhir_type: str | None,
    collection: bool,
    options: TypeOptions = TypeOptions(),
    ansi_type: str | None = None,
) -> ColumnType:
    """The stored type of one column (``ansi_type``: its ``ansi/type`` tag, if any).

    Raises:
        ViewDefinitionError: an ``ansi/type`` this runner does not know.
    """
    precision, scale = DECIMAL_PRECISION, DECIMAL_SCALE
    if ansi_type is not None:
        text = " ".join(ansi_type.upper().split())
        match = _ANSI_DECIMAL.match(text)
        if match:
            precision = int(match.group(1))
            scale = int(match.group(2) or 0)
            if not 1 <= precision <= DECIMAL_PRECISION or scale > precision:
                raise ViewDefinitionError(
                    f"column {name!r}: ansi/type {ansi_type!r} needs 1 <= precision <= 38 "
                    "and scale <= precision"
                )
            kind = "decimal"
        elif text in _ANSI_KINDS:
            kind = _ANSI_KINDS[text]
        else:
            raise ViewDefinitionError(
                f"column {name!r}: ansi/type {ansi_type!r} is not one of "
                f"{', '.join(sorted(_ANSI_KINDS))} or DECIMAL(p,s)"
            )
    else:
        short = (fhir_type or "").rsplit(".", 1)[-1]  # "System.String", "FHIR.code"
        kind = _KINDS.get(short) or _FHIRPATH_KINDS.get(short) or "string"
    # The options apply to defaults; a tag ("!") asked for its type explicitly.
    if kind == "decimal" and ansi_type is None and options.decimals == "string":
        kind = "decimal-text"
    if kind in ("date", "dateTime") and options.temporal == "string":
        kind = "string"
    kind = {"date!": "date", "dateTime!": "timestamp", "dateTime": "timestamp"}.get(kind, kind)
    arrow = arrow_type_of(kind, precision, scale)
    import pyarrow as pa

    return ColumnType(
        name=name,
        kind=kind,
        collection=collection,
        arrow=pa.list_(arrow) if collection else arrow,
        precision=precision,
        scale=scale,
    )


# --- conversion ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """The string a non-string value is stored as in a text column."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")  # never an exponent: "1E-7" would not be FHIR's text
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if not value.is_finite() else json.loads(format(value, "f"))
    raise TypeError(f"not JSON: {type(value).__name__}")


_PARTIAL_DATE = {4: "-01-01", 7: "-01"}
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _timestamp_text(value: Any) -> Any:
    """A FHIR dateTime/instant as text Arrow parses: partial dates widened to their first
    day, a date alone read as midnight UTC, digits past the microsecond cut."""
    if not isinstance(value, str):
        return value
    text = value + _PARTIAL_DATE.get(len(value), "")
    if len(text) == 10:
        return text + "T00:00:00Z"
    return _FRACTION.sub(r"\1", text)


def _date_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return (value + _PARTIAL_DATE.get(len(value), ""))[:10]


def _arrow_error(column: ColumnType, what: str) -> TableError:
    return TableError(
        f"column {column.name!r}: a value is not {what} "
        f"(the column is stored as {column.arrow}); check the view's column type"
    )


def _convert(column: ColumnType, values: Sequence[Any]) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.kind
    base = column.arrow.value_type if column.collection else column.arrow
    try:
        if kind == "string":
            try:
                return pa.array(values, pa.string())
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                return pa.array([None if v is None else _text(v) for v in values], pa.string())
        if kind == "decimal-text":
            return pa.array([None if v is None else _text(v) for v in values], pa.string())
        if kind == "decimal":
            if any(v is not None and not isinstance(v, Decimal) for v in values):
                values = [v if v is None or isinstance(v, Decimal) else _decimal(v) for v in values]
            return pa.array(values, base)
        if kind in ("boolean", "int32", "int64"):
            return pa.array(values, base)
        if kind == "binary":
            return pa.array([None if v is None else _base64(v) for v in values], pa.binary())
        if kind == "date":
            text = pa.array([_date_text(v) for v in values], pa.string())
            return pc.cast(text, pa.date32())
        # timestamp / instant
        text = pa.array(values, pa.string())
        try:
            return pc.cast(text, base)
        except pa.ArrowInvalid:
            return pc.cast(pa.array([_timestamp_text(v) for v in values], pa.string()), base)
    except TableError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        what = {
            "decimal": f"a decimal that fits DECIMAL({column.precision},{column.scale}) exactly",
            "int32": "a 32-bit integer",
            "int64": "a 64-bit integer",
            "boolean": "a boolean",
            "date": "a FHIR date",
            "timestamp": "a FHIR dateTime",
            "instant": "a FHIR instant",
        }.get(kind, kind)
        raise _arrow_error(column, what) from exc


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(type(value).__name__)
    return Decimal(value)


def _base64(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise TypeError(type(value).__name__)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc


def schema_of(columns: Sequence[ColumnType]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([c.field() for c in columns])
