"""Compiled FHIRPath against FHIR JSON: navigation, operators, functions, boundaries."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_backendauth.core.views.fhirpath.compile import compile_path
from airflow_provider_backendauth.core.views.fhirpath.functions import reference_key
from airflow_provider_backendauth.core.views.fhirpath.lexer import FhirPathError
from airflow_provider_backendauth.core.views.fhirpath.runtime import Env, FhirPathEvalError

OBSERVATION: dict[str, Any] = json.loads(
    """{"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"},
                            {"system": "http://snomed.info/sct", "code": "50373000"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 1.10, "unit": "cm"},
        "effectiveDateTime": "2020-01-02",
        "component": [{"valueString": "a"}, {"valueInteger": 3}, {"valueBoolean": false}],
        "extension": [{"url": "http://x/ext", "valueCode": "c1"},
                      {"url": "http://x/other", "valueCode": "c2"}]}""",
    parse_float=Decimal,
)


def run(path: str, resource: dict[str, Any] | None = None, **constants: Any) -> list[Any]:
    resource = OBSERVATION if resource is None else resource
    types = {name: None for name in constants}
    env = Env(resource, {name: [value] for name, value in constants.items()})
    return compile_path(path, types).fn([resource], env)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("code.coding.code", ["8302-2", "50373000"]),
        ("Observation.code.coding[1].system", ["http://snomed.info/sct"]),
        ("Patient.id", []),
        ("value.unit", ["cm"]),  # value[x] found without ofType
        ("value.ofType(Quantity).value", [Decimal("1.10")]),
        ("value.ofType(string)", []),
        ("effective.ofType(dateTime)", ["2020-01-02"]),
        ("component.value.ofType(integer)", [3]),
        ("component.value.ofType(boolean)", [False]),
        ("component.value.ofType(string)", ["a"]),
        ("component.value.ofType(FHIR.string)", ["a"]),
        ("code.coding.where(system = 'http://loinc.org').code", ["8302-2"]),
        ("code.coding.select(code)", ["8302-2", "50373000"]),
        ("code.coding.all(system.exists())", [True]),
        ("code.coding.exists(code = '1')", [False]),
        ("code.coding.count()", [2]),
        ("code.coding.last().code", ["50373000"]),
        ("code.coding.tail().code", ["50373000"]),
        ("code.coding.skip(1).take(1).code", ["50373000"]),
        ("code.coding.code.join('|')", ["8302-2|50373000"]),
        ("extension('http://x/ext').value.ofType(code)", ["c1"]),
        ("getResourceKey()", ["o1"]),
        ("subject.getReferenceKey(Patient)", ["p1"]),
        ("subject.getReferenceKey(Group)", []),
        ("status = 'final' and id != 'o2'", [True]),
        ("iif(status = 'final', 'yes', 'no')", ["yes"]),
        ("(1 | 2 | 1).count()", [2]),
        ("status & '-' & {}", ["final-"]),
        ("status.startsWith('fi') and status.upper() = 'FINAL'", [True]),
        ("status.length()", [5]),
        ("id in ('o1' | 'o2')", [True]),
        ("1.toString()", ["1"]),
        ("code.coding.code.distinct().count()", [2]),
        ("component.valueInteger is integer", [True]),
        ("$this.id", ["o1"]),
        ("%resource.id", ["o1"]),
    ],
)
def test_paths(path: str, expected: list[Any]) -> None:
    assert run(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("0.1 + 0.2 = 0.3", [True]),  # Decimal arithmetic: no float noise
        ("7 / 2", [Decimal("3.5")]),
        ("7 div 2", [3]),
        ("7 mod 2", [1]),
        ("2 * 3 - 1", [5]),
        ("-2 + 1", [-1]),
        ("1 / 0", []),  # division by zero is empty, not an error
        ("value.ofType(Quantity).value * 2", [Decimal("2.20")]),
        ("1 < 2", [True]),
        ("'a' >= 'b'", [False]),
        ("{} = 1", []),
        ("(1 | 2) = (1 | 2)", [True]),
        ("(1 | 2) = 1", [False]),
        ("true = 1", [False]),  # a boolean never equals a number (bool is an int in Python)
        ("'Abc  d' ~ 'abc d'", [True]),
        ("1.0 ~ 1.04", [True]),
    ],
)
def test_operators(path: str, expected: list[Any]) -> None:
    assert run(path) == expected


@pytest.mark.parametrize(
    ("left", "right", "and_", "or_", "xor", "implies"),
    [
        ("true", "{}", [], [True], [], []),
        ("false", "{}", [False], [], [], [True]),
        ("{}", "{}", [], [], [], []),
        ("true", "false", [False], [True], [True], [False]),
        ("{}", "true", [], [True], [], [True]),
    ],
)
def test_three_valued_logic(
    left: str, right: str, and_: list[Any], or_: list[Any], xor: list[Any], implies: list[Any]
) -> None:
    assert run(f"({left}) and ({right})") == and_
    assert run(f"({left}) or ({right})") == or_
    assert run(f"({left}) xor ({right})") == xor
    assert run(f"({left}) implies ({right})") == implies


def test_choice_navigation_only_matches_type_suffixes() -> None:
    # ExplanationOfBenefit.item has diagnosisSequence; it must not be read as "diagnosis".
    item = {"resourceType": "ExplanationOfBenefit", "diagnosisSequence": [1]}
    assert run("diagnosis", item) == []
    assert run("diagnosisSequence", item) == [1]


def test_constants_and_row_index() -> None:
    assert run("code.coding.where(system = %sys).code", sys="http://loinc.org") == ["8302-2"]
    assert run("%rowIndex") == [0]
    with pytest.raises(FhirPathError, match=r"unknown constant %nope \(the view defines: sys\)"):
        compile_path("%nope", {"sys": "string"})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("name.frobnicate()", r"unsupported FHIRPath function frobnicate\(\)"),
        ("name.first(1)", r"first\(\) takes 0 argument\(s\), got 1"),
        ("name.where()", r"where\(\) takes 1 argument\(s\), got 0"),
        ("value.ofType('string')", r"ofType\(\) takes a type name"),
        ("$index", r"\$index is not supported"),
    ],
)
def test_compile_errors(path: str, message: str) -> None:
    with pytest.raises(FhirPathError, match=message):
        compile_path(path)


@pytest.mark.parametrize(
    "path",
    ["code.coding.code < 'x'", "code.coding.code + 1", "code.coding.code and true"],
)
def test_evaluation_errors_are_fhirpath_errors(path: str) -> None:
    with pytest.raises(FhirPathEvalError):
        run(path)


@pytest.mark.parametrize(
    ("reference", "wanted", "key"),
    [
        ("Patient/123", None, "123"),
        ("Patient/123", "Patient", "123"),
        ("Patient/123", "Group", None),
        ("https://ehr.example/fhir/Patient/123/_history/4", "Patient", "123"),
        ("#contained", None, None),
        ("urn:uuid:8c5e", None, None),
        ("123", None, None),
    ],
)
def test_reference_keys(reference: str, wanted: str | None, key: str | None) -> None:
    assert reference_key(reference, wanted) == key


@pytest.mark.parametrize(
    ("path", "low", "high"),
    [
        ("value.ofType(Quantity).value", Decimal("1.095"), Decimal("1.105")),
        (
            "effective.ofType(dateTime)",
            "2020-01-02T00:00:00.000+14:00",
            "2020-01-02T23:59:59.999-12:00",
        ),
        ("'2021-02'", "2021-02-01", "2021-02-28"),
        ("'2024'", "2024-01-01", "2024-12-31"),
        ("@T10:30", "10:30:00.000", "10:30:59.999"),
        (
            "@2020-05-06T10:11:12.5+02:00",
            "2020-05-06T10:11:12.500+02:00",
            "2020-05-06T10:11:12.599+02:00",
        ),
        ("'not a date'", None, None),
    ],
)
def test_boundaries(path: str, low: Any, high: Any) -> None:
    assert run(f"{path}.lowBoundary()") == ([] if low is None else [low])
    assert run(f"{path}.highBoundary()") == ([] if high is None else [high])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("'2015-02-07T13:28:17.239+02:00' = '2015-02-07T11:28:17.239Z'", [True]),  # one instant
        ("'2015-02-07T13:28:17+02:00' != '2015-02-07T11:28:17Z'", [False]),
        ("@2015-02-07T13:28:17+02:00 > @2015-02-07T12:00:00Z", [False]),
        ("'2020-01' = '2020-01-15'", []),  # precisions differ: unknown
        ("'2020-01' < '2020-02-15'", [True]),  # decided before the precisions part
        ("'2020-01' < '2020-01-15'", []),
        ("effective.ofType(dateTime) >= @2020-01-01", [True]),
        ("effective.ofType(dateTime) = @2020-01-02", [True]),
        ("@T10:30 < @T10:31:00", [True]),
        ("'10:30:00.5' = '10:30:00.500'", [True]),  # seconds compare as decimals
        ("'2021-02-30' = '2021-02-30'", [True]),  # not a date: compared as strings
        ("'2021-02-30' < '2021-03-01'", [True]),
        ("'1234' = '1234'", [True]),
    ],
)
def test_dates_and_times_compare_as_fhirpath_says(path: str, expected: list[Any]) -> None:
    assert run(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "code.coding.code",
        "code.coding.display",  # nowhere: empty
        "component.value",  # choice elements, mixed types
        "component.value.ofType(integer)",
        "(code.coding.display | code.coding.code)",  # a union falls through to its next operand
        "(code.text | code.coding.code | status)",
        "(status | code.coding.code)",
        "value.ofType(Quantity).unit",
        "extension.value",
        "Observation.code.coding.code",
        "%resource.code.coding.system",
    ],
)
def test_first_takes_the_short_way_to_the_same_answer(path: str) -> None:
    # first() over member chains and unions stops at the first value; take(1) builds the
    # whole collection: they must agree.
    assert run(f"{path}.first()") == run(f"{path}.take(1)")
    assert run(f"{path}.first()") == run(path)[:1]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("subject.reference.replace('Patient/', '')", ["p1"]),
        ("subject.reference.contains('tient')", [True]),
        ("subject.reference.matches('^Patient/[a-z0-9]+$')", [True]),
        ("status.matches('^x')", [False]),
        ("code.coding[0].code.substring(0, 4)", ["8302"]),
        ("code.coding[0].code.substring(5)", ["2"]),
        ("code.coding[0].code.substring(99)", []),
        ("status.indexOf('n')", [2]),
        ("' a b '.trim()", ["a b"]),
        ("'42'.toInteger() + 1", [43]),
        ("'4.20'.toDecimal()", [Decimal("4.20")]),
        ("'x'.toInteger()", []),
        ("true.toDecimal()", [Decimal(1)]),
        ("status.single()", ["final"]),
        ("(1 | 2).union(2 | 3)", [1, 2, 3]),
        ("(1 | 2).combine(2 | 3)", [1, 2, 2, 3]),
        ("{}.substring(1)", []),
    ],
)
def test_string_conversion_and_collection_functions(path: str, expected: list[Any]) -> None:
    assert run(path) == expected


def test_string_functions_refuse_what_they_cannot_do() -> None:
    with pytest.raises(FhirPathEvalError, match=r"substring\(\) needs a string, got int"):
        run("component.value.ofType(integer).substring(0)")
    with pytest.raises(FhirPathEvalError, match=r"single\(\) needs a single value"):
        run("code.coding.single()")
    with pytest.raises(FhirPathEvalError, match=r"matches\(\): not a regular expression"):
        run("status.matches('(')")
    with pytest.raises(FhirPathError, match=r"replace\(\) takes 2 argument\(s\), got 1"):
        compile_path("status.replace('a')")
