"""FHIR column types -> Arrow: the spec's default table, the options, ansi/type tags, and
clear errors for values that do not fit (without quoting them)."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path

import deltalake
import pyarrow as pa
import pytest

from airflow_provider_backendauth.core.errors import TableError, ViewDefinitionError
from airflow_provider_backendauth.core.tables.flatten import flatten
from airflow_provider_backendauth.core.tables.types import TypeOptions, column_type

UTC = datetime.timezone.utc


@pytest.mark.parametrize(
    ("fhir", "arrow"),
    [
        ("boolean", pa.bool_()),
        ("integer", pa.int32()),
        ("positiveInt", pa.int32()),
        ("unsignedInt", pa.int32()),
        ("integer64", pa.int64()),
        ("decimal", pa.string()),
        ("date", pa.string()),
        ("dateTime", pa.string()),
        ("time", pa.string()),
        ("instant", pa.timestamp("us", tz="UTC")),
        ("base64Binary", pa.binary()),
        ("code", pa.string()),
        ("uri", pa.string()),
        ("System.Boolean", pa.bool_()),
        ("Coding", pa.string()),
        (None, pa.string()),
    ],
)
def test_default_mapping_follows_the_spec_table(fhir: str | None, arrow: pa.DataType) -> None:
    assert column_type("c", fhir, False).arrow == arrow
    assert column_type("c", fhir, True).arrow == pa.list_(arrow)


def test_decimals_keep_their_exact_text_by_default() -> None:
    column = column_type("v", "decimal", False)
    values = [Decimal("1.50"), Decimal("0.0000001"), 7, None, Decimal("1E+2")]
    assert column.to_arrow(values).to_pylist() == ["1.50", "0.0000001", "7", None, "100"]


def test_decimal_option_is_exact_and_refuses_to_round() -> None:
    column = column_type("v", "decimal", False, TypeOptions(decimals="decimal"))
    assert column.arrow == pa.decimal128(38, 18)
    assert column.to_arrow([Decimal("1.50"), 2, None]).to_pylist() == [
        Decimal("1.5"),
        Decimal(2),
        None,
    ]
    with pytest.raises(TableError, match="'v'.*DECIMAL\\(38,18\\)") as caught:
        column.to_arrow([Decimal("0.1234567890123456789")])
    assert "0.1234" not in str(caught.value)  # values are patient data: never quoted


def test_timestamp_option_widens_partial_dates() -> None:
    options = TypeOptions(temporal="timestamp")
    date = column_type("d", "date", False, options)
    assert date.arrow == pa.date32()
    assert date.to_arrow(["1970", "1970-05", "1970-05-06", None]).to_pylist() == [
        datetime.date(1970, 1, 1),
        datetime.date(1970, 5, 1),
        datetime.date(1970, 5, 6),
        None,
    ]
    moment = column_type("t", "dateTime", False, options)
    assert moment.to_arrow(["2020", "2020-02-03", "2020-02-03T04:05:06+01:00"]).to_pylist() == [
        datetime.datetime(2020, 1, 1, tzinfo=UTC),
        datetime.datetime(2020, 2, 3, tzinfo=UTC),
        datetime.datetime(2020, 2, 3, 3, 5, 6, tzinfo=UTC),
    ]
    assert column_type("t", "time", False, options).arrow == pa.string()


def test_instants_to_the_microsecond() -> None:
    column = column_type("i", "instant", False)
    got = column.to_arrow(["2015-02-07T13:28:17.123456789-05:00", "2015-02-07T13:28:17Z"])
    assert got.to_pylist() == [
        datetime.datetime(2015, 2, 7, 18, 28, 17, 123456, tzinfo=UTC),
        datetime.datetime(2015, 2, 7, 13, 28, 17, tzinfo=UTC),
    ]
    with pytest.raises(TableError, match="'i'.*FHIR instant"):
        column.to_arrow(["yesterday"])


def test_values_that_do_not_fit_fail_with_the_column_named() -> None:
    with pytest.raises(TableError, match="'n'.*32-bit integer"):
        column_type("n", "integer", False).to_arrow([1, "two"])
    with pytest.raises(TableError, match="'n'.*32-bit integer"):
        column_type("n", "integer", False).to_arrow([2**40])
    with pytest.raises(TableError, match="'b'"):
        column_type("b", "base64Binary", False).to_arrow(["not base64!"])
    assert column_type("b", "base64Binary", False).to_arrow(["aGk="]).to_pylist() == [b"hi"]


def test_untyped_columns_store_text_and_json() -> None:
    column = column_type("x", None, False)
    values = [True, 3, Decimal("2.50"), {"system": "s", "code": "c"}, None]
    assert column.to_arrow(values).to_pylist() == [
        "true",
        "3",
        "2.50",
        '{"system":"s","code":"c"}',
        None,
    ]


def test_collections_keep_nulls_empty_lists_and_order() -> None:
    column = column_type("c", "integer", True)
    assert column.to_arrow([[1, 2], [], None, [3]]).to_pylist() == [[1, 2], [], None, [3]]


def test_ansi_type_tags_override_the_default(tmp_path: Path) -> None:
    view = {
        "name": "tagged",
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {
                        "name": "born",
                        "path": "birthDate",
                        "tag": [{"name": "ansi/type", "value": "DATE"}],
                    },
                    {"name": "id", "path": "id"},
                ],
                "select": [
                    {
                        "unionAll": [
                            {
                                "column": [
                                    {
                                        "name": "v",
                                        "path": "multipleBirth.ofType(integer)",
                                        "tag": [{"name": "ansi/type", "value": "decimal(10, 2)"}],
                                    }
                                ]
                            }
                        ]
                    }
                ],
            }
        ],
    }
    source = tmp_path / "p.ndjson"
    source.write_text(
        '{"resourceType": "Patient", "id": "a", "birthDate": "1970-02", "multipleBirthInteger": 2}\n'
    )
    flatten(view, [source], tmp_path / "t")
    table = deltalake.DeltaTable(str(tmp_path / "t")).to_pyarrow_table()
    assert table.schema.field("born").type == pa.date32()
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("v").type == pa.decimal128(10, 2)
    assert table.to_pylist()[0]["born"] == datetime.date(1970, 2, 1)
    with pytest.raises(ViewDefinitionError, match="ansi/type 'MONEY'"):
        column_type("m", "decimal", False, ansi_type="MONEY")
    with pytest.raises(ViewDefinitionError, match="precision"):
        column_type("m", "decimal", False, ansi_type="DECIMAL(40,2)")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="decimals"):
        TypeOptions(decimals="float")
    with pytest.raises(ValueError, match="temporal"):
        TypeOptions(temporal="epoch")
