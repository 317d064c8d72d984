"""compile_view / run_view: the schema without data, clear errors, exact values, laziness."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.core.views import (
    Column,
    MalformedResourceError,
    ViewDefinitionError,
    compile_view,
    run_view,
)
from airflow_provider_backendauth.core.views.fhirpath import compile as fhirpath_compile

PATIENTS: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
        "gender": "female",
    },
    {"resourceType": "Observation", "id": "o1", "status": "final"},
    {"resourceType": "Patient", "id": "p2"},
]


def view(*select: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ViewDefinition",
        "resource": "Patient",
        "select": list(select),
        **extra,
    }


def col(name: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "path": path, **extra}


def test_schema_without_data() -> None:
    compiled = compile_view(
        view(
            {"column": [col("id", "getResourceKey()"), col("n", "name.count()")]},
            {
                "forEachOrNull": "name",
                "column": [
                    col(
                        "given",
                        "given",
                        collection=True,
                        type="http://hl7.org/fhir/StructureDefinition/string",
                        description="all",
                    ),
                    col("official", "use = 'official'"),
                    col("row", "%rowIndex", tag=[{"name": "ansi/type", "value": "INTEGER"}]),
                    col("family", "family"),
                ],
            },
            constant=[{"name": "cutoff", "valueDate": "2020-01-01"}],
        )
    )
    assert compiled.resource == "Patient"
    assert compiled.columns == [
        Column("id", "string", False),
        Column("n", "integer", False),
        Column("given", "string", True, "all"),
        Column("official", "boolean", False),
        Column("row", "integer", False, None, (("ansi/type", "INTEGER"),)),
        Column("family", None, False),  # no FHIR model: an element's type is the view's to say
    ]


def test_rows_keep_column_order_and_skip_other_types() -> None:
    rows = list(
        run_view(
            view(
                {"column": [col("id", "id")]},
                {"forEachOrNull": "name", "column": [col("given", "given", collection=True)]},
                {"column": [col("gender", "gender")]},
            ),
            PATIENTS,
        )
    )
    assert rows == [
        {"id": "p1", "given": ["Jane", "Q"], "gender": "female"},
        {"id": "p2", "given": [], "gender": None},
    ]
    assert [list(r) for r in rows] == [["id", "given", "gender"]] * 2
    rows[0]["given"].append("mutated")  # a row's list is its own, not the resource's
    assert PATIENTS[0]["name"][0]["given"] == ["Jane", "Q"]


def test_decimals_stay_exact() -> None:
    line = '{"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 0.10}}'
    resource = json.loads(line, parse_float=Decimal)
    obs_view = {
        "resource": "Observation",
        "select": [
            {
                "column": [
                    col("value", "value.ofType(Quantity).value", type="decimal"),
                    col("sum", "value.ofType(Quantity).value + 0.2", type="decimal"),
                    col("exact", "value.ofType(Quantity).value + 0.2 = 0.3", type="boolean"),
                ]
            }
        ],
    }
    (row,) = run_view(obs_view, [resource])
    assert row == {"value": Decimal("0.10"), "sum": Decimal("0.30"), "exact": True}
    assert str(row["value"]) == "0.10"  # the precision written in the file is kept


def test_paths_are_parsed_once_per_view_not_per_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_parse = fhirpath_compile.parse

    def counting(text: str) -> Any:
        calls.append(text)
        return real_parse(text)

    monkeypatch.setattr(fhirpath_compile, "parse", counting)
    compiled = compile_view(view({"column": [col("id", "id"), col("g", "gender")]}))
    assert len(list(compiled.run(PATIENTS * 50))) == 100
    assert calls == ["id", "gender"]


@pytest.mark.parametrize(
    ("bad_view", "message"),
    [
        ([], "a ViewDefinition must be a JSON object"),
        ({"select": []}, "'resource' must name a FHIR resource type"),
        ({"resource": "Patient"}, "'select' is missing"),
        (view(), "the view defines no columns"),
        (view({"column": [col("1d", "id")]}), r"view.select\[0\].column\[0\]: 'name' must match"),
        (
            view({"column": [col("id", "id")]}, {"column": [col("id", "gender")]}),
            r"view.select\[1\].column\[0\] 'id': column name 'id' is used twice",
        ),
        (view({"foreach": "name", "column": [col("a", "id")]}), r"unknown key\(s\) \['foreach'\]"),
        (
            view({"forEach": "name", "forEachOrNull": "name", "column": [col("a", "id")]}),
            "forEach and forEachOrNull cannot be combined",
        ),
        (view({"forEach": 1, "column": [col("a", "id")]}), "a path must be a non-empty FHIRPath"),
        (
            view({"column": [col("family", "name.family.frob()")]}),
            r"view.select\[0\].column\[0\] 'family': path 'name.family.frob\(\)': "
            r"unsupported FHIRPath function frob\(\)",
        ),
        (
            view({"column": [col("family", "name.where(use = 'x'")]}),
            r"'family': path .*: expected '\)' at position 20, found end of expression",
        ),
        (
            view({"column": [col("c", "collection", collection="yes")]}),
            "'collection' must be true or false",
        ),
        (
            view(
                {
                    "unionAll": [
                        {"column": [col("a", "id"), col("b", "id")]},
                        {"column": [col("b", "id"), col("a", "id")]},
                    ]
                }
            ),
            r"unionAll\[1\]: unionAll branches must have the same columns in the same order; "
            r"got \['b', 'a'\], the first branch has \['a', 'b'\]",
        ),
        (
            view({"column": [col("a", "id")]}, constant=[{"name": "c"}]),
            r"constant\[0\] 'c': needs exactly one value\[x\]",
        ),
        (
            view({"column": [col("a", "%missing")]}),
            r"unknown constant %missing \(the view defines: none\)",
        ),
        (view({"column": [col("a", "id")]}, where=[{"path": ""}]), r"where\[0\]: a path must be"),
        (view({"repeat": [], "column": [col("a", "id")]}), "repeat: must be a non-empty list"),
        (
            view({"column": [col("a", "id")]}, name="patient-demographics"),
            r"'name' must match \^\[A-Za-z\]\[A-Za-z0-9_\]\*\$ \(it names tables\)",
        ),
        (
            view({"column": [col("a", "id")]}, constant=[{"name": "c", "valueCoding": {}}]),
            r"constant\[0\] 'c': valueCoding is not a type a constant can have",
        ),
        (
            view({"column": [col("a", "id")]}, constant=[{"name": "c", "valueInteger": "1"}]),
            r"constant\[0\] 'c': valueInteger must be a JSON int",
        ),
        (
            view({"column": [col("a", "id")]}, constant=[{"name": "c", "valueInteger": True}]),
            r"valueInteger must be a JSON int",
        ),
        (
            view(
                {
                    "unionAll": [
                        {"column": [col("a", "id", type="id")]},
                        {"column": [col("a", "gender", type="code")]},
                    ]
                }
            ),
            r"unionAll\[1\]: column 'a' is code, but id in the first branch",
        ),
        (
            view({"column": [col("a", "id", tag={"ansi/type": "DATE"})]}),
            r"column\[0\] 'a': 'tag' must be a list of \{name, value\} strings",
        ),
    ],
)
def test_invalid_views_are_refused_before_any_row(bad_view: Any, message: str) -> None:
    with pytest.raises(ViewDefinitionError, match=message) as caught:
        run_view(bad_view, iter(()))  # raised on the call, not on the first next()
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.retry_cannot_help


def test_data_that_breaks_the_view_names_the_column_and_input() -> None:
    several = view({"column": [col("given", "name.given")]})
    with pytest.raises(
        ViewDefinitionError,
        match=r"Patient input #0: view.select\[0\].column\[0\] 'given' \(path 'name.given'\) "
        r"gave 2 values; declare it 'collection': true",
    ):
        list(run_view(several, PATIENTS))
    not_boolean = view({"column": [col("id", "id")]}, where=[{"path": "name.family"}])
    with pytest.raises(ViewDefinitionError, match="where: path 'name.family' must give a boolean"):
        list(run_view(not_boolean, PATIENTS))
    comparison = view({"column": [col("x", "name.given < 'b'")]})
    with pytest.raises(ViewDefinitionError, match=r"'x': path .*: '<' needs a single value"):
        list(run_view(comparison, PATIENTS))


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        (["not", "an object"], "input #1 is not a FHIR resource .* got list"),
        ("Patient", "input #1 is not a FHIR resource .* got str"),
        ({"id": "x", "name": [{"family": "SECRET-NAME"}]}, "input #1 has no resourceType"),
        ({"resourceType": 7, "family": "SECRET-NAME"}, "input #1 has no resourceType"),
    ],
)
def test_malformed_resources_get_a_clear_error_without_their_content(
    resource: Any, message: str
) -> None:
    rows = run_view(view({"column": [col("id", "id")]}), [PATIENTS[0], resource])
    assert next(rows) == {"id": "p1"}
    with pytest.raises(MalformedResourceError, match=message) as caught:
        next(rows)
    assert "SECRET" not in str(caught.value)
    assert caught.value.retry_cannot_help


def test_errors_in_foreach_and_where_paths_name_the_path_and_input() -> None:
    each = view({"forEach": "name.where(given < 'x')", "column": [col("f", "family")]})
    with pytest.raises(
        ViewDefinitionError,
        match=r"Patient input #0: view.select\[0\].forEach: path \"name.where\(given < 'x'\)\": "
        r"'<' needs a single value",
    ):
        list(run_view(each, PATIENTS))
    where = view({"column": [col("id", "id")]}, where=[{"path": "name.given < 'x'"}])
    with pytest.raises(ViewDefinitionError, match=r"Patient input #0: where\[0\]: path"):
        list(run_view(where, PATIENTS))


def test_a_resource_nested_beyond_reason_is_named_not_a_traceback() -> None:
    # repeat walks items recursively; a resource nested deeper than Python's stack allows
    # (hostile, or broken) is refused as malformed, not with a RecursionError.
    deep: dict[str, Any] = {"linkId": "leaf"}
    for _ in range(5000):
        deep = {"linkId": "x", "item": [deep]}
    resource = {"resourceType": "QuestionnaireResponse", "id": "q", **deep}
    qr = {
        "resource": "QuestionnaireResponse",
        "select": [{"repeat": ["item"], "column": [col("l", "linkId")]}],
    }
    with pytest.raises(
        MalformedResourceError,
        match=r"QuestionnaireResponse input #0: the view cannot be evaluated on this resource "
        r"\(RecursionError\)",
    ):
        list(run_view(qr, [resource]))


def test_impossible_dates_have_no_boundary() -> None:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "2020-13"}
    bounds = view(
        {"column": [col("low", "birthDate.lowBoundary()"), col("high", "birthDate.highBoundary()")]}
    )
    assert list(run_view(bounds, [patient])) == [{"low": None, "high": None}]


def test_a_view_nested_beyond_reason_is_refused_not_a_traceback() -> None:
    deep_path = "(" * 5000 + "id" + ")" * 5000
    with pytest.raises(ViewDefinitionError, match="nested too deeply"):
        compile_view(view({"column": [col("id", deep_path)]}))
    deep_select: dict[str, Any] = {"column": [col("id", "id")]}
    for _ in range(5000):
        deep_select = {"select": [deep_select]}
    with pytest.raises(ViewDefinitionError, match="nested too deeply"):
        compile_view(view(deep_select))


def test_rows_as_tuples_and_per_resource() -> None:
    compiled = compile_view(
        view(
            {"column": [col("id", "id")]},
            {"forEach": "name.given", "column": [col("given", "$this")]},
            where=[{"path": "gender.exists()"}],
        )
    )
    resources = [*PATIENTS, {"resourceType": "Patient", "id": "p3", "gender": "other"}]
    assert list(compiled.run_tuples(resources)) == [("p1", "Jane"), ("p1", "Q")]
    assert [(r["id"], rows) for r, rows in compiled.run_by_resource(resources)] == [
        ("p1", [("p1", "Jane"), ("p1", "Q")]),
        ("p2", []),  # dropped by where: still reported, so its old rows can be replaced
        ("p3", []),  # kept, but forEach over nothing
    ]
    assert list(compiled.run(resources)) == [
        dict(zip(["id", "given"], row, strict=True)) for row in compiled.run_tuples(resources)
    ]
