"""SQL-on-FHIR v2 ViewDefinitions: FHIR resources flattened into rows (imports no Airflow).

``compile_view(view)`` validates a ViewDefinition and compiles its FHIRPath once;
``.columns`` is the output schema without any data; ``.run(resources)`` yields one dict
per row, keys in column order. ``run_view(view, resources)`` does both.
``read_resources(lines)`` parses NDJSON lines for them with exact decimals, fast. See
``view.py`` for the guarantees and ``fhirpath/compile.py`` for why paths are compiled to
closures.
"""

from __future__ import annotations

from airflow_provider_backendauth.core.errors import MalformedResourceError, ViewDefinitionError
from airflow_provider_backendauth.core.views.reader import read_resources
from airflow_provider_backendauth.core.views.view import (
    Column,
    CompiledView,
    compile_view,
    run_view,
)

__all__ = [
    "Column",
    "CompiledView",
    "MalformedResourceError",
    "ViewDefinitionError",
    "compile_view",
    "read_resources",
    "run_view",
]
