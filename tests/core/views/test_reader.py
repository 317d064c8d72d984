"""read_resources: exact decimals with either parser, blank lines skipped, bad lines named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_backendauth.core.views import MalformedResourceError, read_resources
from airflow_provider_backendauth.core.views.reader import PARSERS

LINES = [
    b'{"resourceType": "Observation", "valueQuantity": {"value": 1.10}, "n": 12345678901234567890}\n',
    b"\n",
    "   ",
    '{"resourceType": "Patient", "x": [1e3, -0.0], "s": "caf\\u00e9 \\ud800"}',
]


@pytest.mark.parametrize("parser", PARSERS.names())
def test_every_parser_reads_the_same_exact_values(parser: str) -> None:
    assert "json" in PARSERS.names()
    resources = list(read_resources(LINES, parser))
    assert resources == [
        {
            "resourceType": "Observation",
            "valueQuantity": {"value": Decimal("1.10")},
            "n": 12345678901234567890,
        },
        {"resourceType": "Patient", "x": [Decimal("1E+3"), Decimal("-0.0")], "s": "café \ud800"},
    ]
    assert str(resources[0]["valueQuantity"]["value"]) == "1.10"


@pytest.mark.parametrize("parser", PARSERS.names())
def test_a_bad_line_is_named_without_its_content(parser: str) -> None:
    lines = [b'{"resourceType": "Patient"}', b'{"name": "SECRET-NAME", ']
    resources = read_resources(lines, parser)
    assert next(resources) == {"resourceType": "Patient"}
    with pytest.raises(
        MalformedResourceError, match=r"line 2 is not valid JSON \(at column 25\)"
    ) as e:
        next(resources)
    assert "SECRET" not in str(e.value)


def test_a_parser_can_be_named() -> None:
    with pytest.raises(ValueError, match="JSON parser must be one of"):
        list(read_resources([b"{}"], "yaml"))
    assert list(read_resources([b'{"a": 0.5}'], "json")) == [{"a": Decimal("0.5")}]
