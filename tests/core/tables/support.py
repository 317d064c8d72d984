"""Columns and rows made by hand for the table tests (the view runner has its own tests)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_provider_backendauth.core.tables import KEY_COLUMN


@dataclass(frozen=True)
class Col:
    name: str
    type: str | None
    collection: bool = False


COLUMNS = [
    Col(KEY_COLUMN, "string"),
    Col("id", "id"),
    Col("value", "decimal"),
    Col("issued", "instant"),
    Col("codes", "code", collection=True),
]


def row(key: str, version: int = 1) -> dict[str, Any]:
    return {
        KEY_COLUMN: key,
        "id": f"{key}-v{version}",
        "value": Decimal(f"{version}.50"),
        "issued": f"2024-01-0{version}T10:00:00+02:00",
        "codes": [f"c{version}", "x"],
    }


def read_rows(path: Any) -> list[dict[str, Any]]:
    """The table's rows as an independent reader (delta-rs) sees them, sorted."""
    import deltalake

    table = deltalake.DeltaTable(str(path)).to_pyarrow_table()
    return sorted(table.to_pylist(), key=lambda r: (r[KEY_COLUMN], r["id"]))
