"""SQL-on-FHIR view output as typed tables: Arrow types (``types.py``), Parquet files committed
as Delta Lake versions (``table.py``, ``delta.py``). See docs/tables.md.

Needs the ``tables`` extra (pyarrow); imported lazily, so importing this package is cheap.
This package imports no Airflow.
"""

from airflow_provider_backendauth.core.tables.delta import (
    DataFile,
    Snapshot,
    read_snapshot,
    table_files,
)
from airflow_provider_backendauth.core.tables.table import (
    KEY_COLUMN,
    TableResult,
    ViewTable,
)
from airflow_provider_backendauth.core.tables.types import TypeOptions, column_type

__all__ = [
    "KEY_COLUMN",
    "DataFile",
    "Snapshot",
    "TableResult",
    "TypeOptions",
    "ViewTable",
    "column_type",
    "read_snapshot",
    "table_files",
]
