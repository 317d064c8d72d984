"""Any JSON at all, run through every view of the official suite: rows, or one of the two
errors that say what is wrong (``ViewDefinitionError`` when the data breaks what the view
declares, ``MalformedResourceError`` when it is no resource); never another exception from
inside the evaluator, whatever the shape of the input."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_backendauth.core.views import (
    MalformedResourceError,
    ViewDefinitionError,
    compile_view,
)

UPSTREAM = Path(__file__).parent / "upstream"
VIEWS = [
    test["view"]
    for path in sorted(UPSTREAM.glob("*.json"))
    for test in json.loads(path.read_text(), parse_float=Decimal)["tests"]
    if not test.get("expectError")
]
COMPILED = [compile_view(view) for view in VIEWS]


def _names(view: dict[str, Any]) -> list[str]:
    """The element names a view's paths navigate: random resources built from them reach
    deep into the paths."""
    text = json.dumps(view, default=str)
    for mark in '".()[],=<>|':
        text = text.replace(mark, " ")
    return sorted({part for part in text.split() if part.isidentifier()})


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.sampled_from(["", "official", "2020-01-02", "2020-13", "12:30", "Patient/1", "#x", "F"]),
    st.text(max_size=5),
)


@st.composite
def view_and_resource(draw: st.DrawFn) -> tuple[int, dict[str, Any]]:
    index = draw(st.integers(0, len(COMPILED) - 1))
    keys = st.sampled_from(_names(VIEWS[index]))
    values = st.recursive(
        scalars,
        # Lists of two or three mixed items: where navigation meets scalars beside objects.
        lambda inner: (
            st.lists(inner, min_size=2, max_size=3)
            | st.dictionaries(keys, inner, min_size=1, max_size=4)
        ),
        max_leaves=12,
    )
    body = draw(st.dictionaries(keys, values, min_size=1, max_size=6))
    return index, {**body, "resourceType": COMPILED[index].resource}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=view_and_resource())
def test_any_resource_gives_rows_or_a_clear_error(case: tuple[int, dict[str, Any]]) -> None:
    index, resource = case
    compiled = COMPILED[index]
    try:
        for row in compiled.run([resource]):
            assert list(row) == [c.name for c in compiled.columns]
    except (ViewDefinitionError, MalformedResourceError):
        pass


@pytest.mark.parametrize("not_a_resource", [None, 1, "x", [], [{}], {"resourceType": None}])
def test_anything_else_is_malformed(not_a_resource: Any) -> None:
    for compiled in COMPILED[:5]:
        with pytest.raises(MalformedResourceError):
            list(compiled.run([not_a_resource]))
