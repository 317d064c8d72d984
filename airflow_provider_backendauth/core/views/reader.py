"""NDJSON lines into resources for the ViewDefinition runner: decimals exact, parsed fast.

``read_resources(lines)`` parses each non-blank line with every JSON number that has a
fraction or exponent as a ``Decimal`` (FHIR decimals keep their written precision: ``1.10``
stays ``1.10``, what ``lowBoundary()`` and Arrow decimals need), integers as ``int``.

The parser is the fastest installed: msgspec (``Decoder(float_hook=Decimal)``; Airflow
depends on it, so every worker has it) measured 4-6x faster than the standard library's
``json.loads(parse_float=Decimal)`` on Synthea-shaped resources (benchmarks/README.md);
without it the standard library does the same work. A line msgspec refuses is given to the
standard library, which has the last word (it accepts lone surrogates msgspec refuses), so
both read the same files. ``BACKENDAUTH_JSON_PARSER`` (``msgspec`` or ``json``) forces one.

A line that is not JSON raises ``MalformedResourceError`` naming its line number and the
parser's position, never the line's content (resources carry health data).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

from airflow_provider_backendauth.core.backends import FastestInstalled
from airflow_provider_backendauth.core.errors import MalformedResourceError

Parser = Callable[[bytes | str], Any]
PARSER_ENV = "BACKENDAUTH_JSON_PARSER"

_json_loads: Parser = partial(json.loads, parse_float=Decimal)


def _json_parser() -> Parser:
    return _json_loads


def _msgspec_parser() -> Parser:
    import msgspec

    decode = msgspec.json.Decoder(float_hook=Decimal).decode
    refused = msgspec.DecodeError

    def parse(line: bytes | str) -> Any:
        try:
            return decode(line)
        except refused:
            return _json_loads(line)

    return parse


PARSERS: FastestInstalled[Parser] = FastestInstalled(
    "JSON parser", PARSER_ENV, {"msgspec": _msgspec_parser, "json": _json_parser}
)


def read_resources(lines: Iterable[bytes | str], parser: str = "auto") -> Iterator[Any]:
    """Each non-blank NDJSON line parsed (Decimal for decimals), in order."""
    _, factory = PARSERS.choose(parser)
    parse = factory()
    for number, line in enumerate(lines, 1):
        try:
            yield parse(line)
        except ValueError as exc:
            if not line.strip():
                continue  # a blank line (a trailing newline, an empty file)
            column = exc.colno if isinstance(exc, json.JSONDecodeError) else "?"
            raise MalformedResourceError(
                f"line {number} is not valid JSON (at column {column})"
            ) from None
