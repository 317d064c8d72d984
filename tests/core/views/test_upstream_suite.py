"""The official SQL-on-FHIR v2 test suite (vendored in upstream/, see its README) run whole.

Every test case of every ``upstream/*.json`` file is one pytest case. Rows are compared as
the reference runner compares them (as a multiset: row order is not part of the spec), JSON
is read with ``parse_float=Decimal`` as the provider's readers do, and a test expecting an
error must get ``ViewDefinitionError`` (whether the view is refused by ``compile_view`` or
the data breaks what it declares while rows are produced).

The run also writes ``.pytest-reports/sql-on-fhir/test_report.json`` in the upstream
``test_report/test-report.schema.json`` format (vendored in ``upstream/schema/`` and checked
against before writing), for publishing the implementation's results.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_provider_backendauth.core.views import ViewDefinitionError, compile_view

UPSTREAM = Path(__file__).parent / "upstream"
REPORT = (
    Path(__file__).resolve().parents[3] / ".pytest-reports" / "sql-on-fhir" / "test_report.json"
)

# Experimental tests this runner does not pass, with why (none today; shareable ones all pass).
KNOWN_EXPERIMENTAL_FAILURES: dict[tuple[str, str], str] = {}


def _suites() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        for path in sorted(UPSTREAM.glob("*.json"))
    }


SUITES = _suites()
CASES = [
    pytest.param(name, index, id=f"{name}:{test['title']}")
    for name, suite in SUITES.items()
    for index, test in enumerate(suite["tests"])
]


def _same_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str | None:
    """None when ``actual`` holds the same rows as ``expected`` in any order, else why not."""
    if len(actual) != len(expected):
        return f"expected {len(expected)} rows, got {len(actual)}: {actual!r}"
    left = list(actual)
    for row in expected:
        match = next((i for i, got in enumerate(left) if _same_row(got, row)), None)
        if match is None:
            return f"no row matches {row!r}; rows: {actual!r}"
        left.pop(match)
    return None


def _same_row(got: dict[str, Any], want: dict[str, Any]) -> bool:
    return got.keys() == want.keys() and all(_same_value(got[k], want[k]) for k in want)


def _same_value(got: Any, want: Any) -> bool:
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(map(_same_value, got, want))
    return bool(got == want)


def _check(suite: dict[str, Any], test: dict[str, Any]) -> str | None:
    """None when the runner does what ``test`` expects, else a message saying what differs."""
    if test.get("expectError"):
        try:
            compiled = compile_view(test["view"])
            rows = list(compiled.run(suite["resources"]))
        except ViewDefinitionError:
            return None
        return f"expected a ViewDefinitionError, got {len(rows)} rows"
    compiled = compile_view(test["view"])
    rows = list(compiled.run(suite["resources"]))
    if "expectColumns" in test:
        names = [c.name for c in compiled.columns]
        if names != test["expectColumns"]:
            return f"expected columns {test['expectColumns']}, got {names}"
    for row in rows:
        if list(row) != [c.name for c in compiled.columns]:
            return f"row keys {list(row)} are not the columns in order"
    if "expectCount" in test:
        return None if len(rows) == test["expectCount"] else f"expected {test['expectCount']} rows"
    return _same_rows(rows, test["expect"])


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    results: dict[str, Any] = {}
    yield results
    ordered = {name: results[name] for name in SUITES if name in results}
    # The upstream report schema (vendored beside the tests) decides the format, not we.
    schema = json.loads((UPSTREAM / "schema" / "test-report.schema.json").read_text())
    jsonschema.validate(ordered, schema)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(ordered, indent=2) + "\n", encoding="utf-8")


@pytest.mark.parametrize(("suite_name", "index"), CASES)
def test_upstream_case(suite_name: str, index: int, report: dict[str, Any]) -> None:
    suite = SUITES[suite_name]
    test = suite["tests"][index]
    try:
        problem = _check(suite, test)
    except Exception as exc:  # recorded in the report, then re-raised for pytest
        problem = f"{type(exc).__name__}: {exc}"
        _record(report, suite_name, test, problem)
        raise
    _record(report, suite_name, test, problem)
    known = KNOWN_EXPERIMENTAL_FAILURES.get((suite_name, test["title"]))
    if problem and known and "experimental" in test.get("tags", []):
        pytest.xfail(known)
    assert problem is None, problem


def _record(report: dict[str, Any], suite: str, test: dict[str, Any], problem: str | None) -> None:
    result: dict[str, Any] = {"passed": problem is None}
    if problem is not None:
        result["error"] = problem[:2000]
    report.setdefault(suite, {"tests": []})["tests"].append(
        {"name": test["title"], "result": result}
    )


def test_every_upstream_file_is_run() -> None:
    """The suite is all there: 22 files, 134 cases at the vendored commit."""
    assert len(SUITES) == 22
    assert len(CASES) == 134
