"""``FhirViewTableOperator``: a bulk export's NDJSON files -> one typed table per
SQL-on-FHIR ViewDefinition (Parquet committed as Delta Lake versions; docs/tables.md).

Needs the ``tables`` extra (pyarrow), imported when the task runs, not when the DAG is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth._compat import BaseOperator
from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.core.lineage import public_url, table_asset_extra
from airflow_provider_backendauth.operators._common import fails_fast, storage_path
from airflow_provider_backendauth.operators._lineage import (
    TABLES_ALIAS,
    declare_outlet,
    emit_asset_events,
)

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

_MAX_VIEW_BYTES = 4 * 2**20
_NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")


class FhirViewTableOperator(BaseOperator):
    """Write one table per ViewDefinition from a bulk export's files.

    Example::

        export = FhirBulkExportOperator(task_id="export", destination=raw, since="auto", ...)
        FhirViewTableOperator(
            task_id="tables",
            export=export.output,               # or source="s3://aws@bucket/raw/{{ ds }}"
            views=["patient_demographics", "observation", "views/my_view.json"],
            destination="s3://aws_default@bucket/tables",
        )

    Each view's table is ``destination/<view name>``. Nothing of a table is visible until its
    whole new version is committed; every view is checked before any file is read, so an
    invalid view fails the task with nothing written. A retry is safe: an overwrite writes
    the same table again, a merge applied twice gives the same rows.

    Spread it over workers by mapping per resource type, one task per table
    (``.partial(...).expand(resource_types=[["Patient"], ["Observation"]])``). Not per file:
    several tasks would then write one table, and a table has one writer at a time.

    Returns ``{"destination", "incremental", "since", "rows", "tables": {name: {"path",
    "resource", "version", "mode", "rows", "rows_written", "rows_removed", "files",
    "bytes", "columns"}}}``.

    Args:
        views: ViewDefinitions: dicts, JSON files (``.json``, local or URL), or the names of
            the ready views (``airflow_provider_backendauth.view_definitions``). Templated.
        destination: the folder of the tables (``s3://conn@bucket/...``, ``gs://``,
            ``abfs://``, ``file://`` or a local path). Templated.
        export: what ``FhirBulkExportOperator`` returned (its summary), or the list the
            mapped ``FhirBulkDownloadOperator`` tasks returned (then ``source`` is needed).
            Templated.
        source: the export's folder; default the summary's ``destination``. Templated.
        resource_types: only the views of these types (for mapping). Templated.
        incremental: merge into the existing tables (the export used ``_since``) instead
            of replacing them; ``"auto"``: merge when the export's summary says it used
            ``_since``, or its ``manifest.json`` request did.
        decimals, temporal: the type options (``core.tables.TypeOptions``).
        row_group_rows: rows per Parquet row group (the memory bound).
    """

    template_fields: Sequence[str] = ("views", "destination", "export", "source", "resource_types")
    ui_color = "#e8eef8"

    def __init__(
        self,
        *,
        views: Sequence[str | Mapping[str, Any]],
        destination: str | ObjectStoragePath,
        export: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        source: str | ObjectStoragePath | None = None,
        resource_types: Sequence[str] | None = None,
        incremental: bool | str = "auto",
        decimals: str = "string",
        temporal: str = "string",
        row_group_rows: int = 50_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(views, (str, Mapping)):
            views = [views]
        if incremental not in (True, False, "auto"):
            raise ConfigurationError(
                f"incremental must be True, False or 'auto', not {incremental!r}"
            )
        self.views = views
        self.destination = destination
        self.export = export
        self.source = source
        self.resource_types = resource_types
        self.incremental = incremental
        self.decimals = decimals
        self.temporal = temporal
        self.row_group_rows = row_group_rows
        # What this run read and wrote, for OpenLineage (the provider calls the methods below).
        self._lineage_inputs: list[str] = []
        self._lineage_tables: list[tuple[str, int, int, list[Any]]] = []
        declare_outlet(self, TABLES_ALIAS)  # one Asset event per table written

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_backendauth.core.tables import TypeOptions
        from airflow_provider_backendauth.core.tables.flatten import flatten, table_name
        from airflow_provider_backendauth.core.views import compile_view

        options = TypeOptions(decimals=self.decimals, temporal=self.temporal)
        views = [self._view(v) for v in self.views]
        wanted = None if self.resource_types is None else set(_as_list(self.resource_types))
        chosen = []
        columns: dict[str, list[Any]] = {}
        for view in views:
            compiled = compile_view(view)  # every view checked before any file is read
            name = table_name(view)
            if wanted is None or compiled.resource in wanted:
                chosen.append((name, compiled.resource, view))
                columns[name] = list(compiled.columns)
        names = [name for name, _, _ in chosen]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"two views have the same name (a table each): {names}")
        source = self._source()
        destination = storage_path(self.destination)
        since = self._since(source)
        incremental = since is not None if self.incremental == "auto" else bool(self.incremental)
        tables: dict[str, Any] = {}
        for name, resource, view in chosen:
            inputs = self._files(source, "output", resource)
            deleted = self._files(source, "deleted", "Bundle") if incremental else []
            self.log.info(
                "View %s: %d %s file(s)%s -> %s/%s",
                name,
                len(inputs),
                resource,
                f", {len(deleted)} deleted file(s), merging" if incremental else "",
                destination,
                name,
            )
            result = flatten(
                view,
                inputs,
                destination / name,
                incremental=incremental,
                deleted=deleted,
                options=options,
                row_group_rows=self.row_group_rows,
            )
            self.log.info(
                "Table %s version %d: %d rows (%d written, %d removed), %d file(s), %d bytes",
                name,
                result.version,
                result.rows,
                result.rows_written,
                result.rows_removed,
                result.files,
                result.bytes,
            )
            tables[name] = {"resource": resource, **result.as_dict()}
            self._lineage_inputs += [str(p) for p in [*inputs, *deleted]]
            self._lineage_tables.append(
                (result.path, result.rows, result.bytes, _stored_columns(columns[name], result))
            )
        emit_asset_events(
            context,
            TABLES_ALIAS,
            {
                public_url(t["path"]): table_asset_extra(name, t, since=since)
                for name, t in tables.items()
            },
        )
        return {
            "destination": str(destination),
            "incremental": incremental,
            "since": since,
            "rows": sum(t["rows"] for t in tables.values()),
            "tables": tables,
        }

    # --- OpenLineage (called by the OpenLineage provider when it is installed) -------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the NDJSON files read; outputs: one per table, with its rows and the bytes
        this version added."""
        from airflow.providers.common.compat.openlineage.facet import InputDataset

        from airflow_provider_backendauth.core.lineage import storage_dataset
        from airflow_provider_backendauth.operators._lineage import (
            operator_lineage,
            storage_output,
        )

        inputs = [
            InputDataset(*storage_dataset(path)) for path in dict.fromkeys(self._lineage_inputs)
        ]
        outputs = [
            storage_output(path, rows, size, columns)
            for path, rows, size, columns in self._lineage_tables
        ]
        return operator_lineage(inputs, outputs)

    # --- inputs ------------------------------------------------------------------------------

    def _view(self, given: str | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(given, Mapping):
            return dict(given)
        text = str(given).strip()
        if not text.endswith(".json"):
            from airflow_provider_backendauth.view_definitions import load, names

            if text not in names():
                raise ConfigurationError(
                    f"view {text!r} is neither a .json file nor a ready view ({', '.join(names())})"
                )
            return load(text)
        path = storage_path(text)
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_VIEW_BYTES + 1)
        except FileNotFoundError:
            raise ConfigurationError(f"view file {text} does not exist") from None
        if len(data) > _MAX_VIEW_BYTES:
            raise ConfigurationError(f"view file {text} is larger than 4 MiB")
        try:
            view = json.loads(data)
        except ValueError:
            raise ConfigurationError(f"view file {text} is not JSON") from None
        if not isinstance(view, dict):
            raise ConfigurationError(f"view file {text} does not hold a JSON object")
        return view

    def _source(self) -> Any:
        if self.source:
            return storage_path(self.source)
        if isinstance(self.export, Mapping) and self.export.get("destination"):
            return storage_path(str(self.export["destination"]))
        raise ConfigurationError(
            "set 'source' (the export's folder), or pass FhirBulkExportOperator's output "
            "as 'export'"
        )

    def _since(self, source: Any) -> str | None:
        """The ``_since`` the export used, or None for a full export (as far as is known)."""
        export = self.export
        if isinstance(export, Mapping) and "since" in export:
            return str(export["since"]) if export["since"] else None
        try:
            with (source / "manifest.json").open("rb") as handle:
                manifest = json.loads(handle.read(_MAX_VIEW_BYTES))
        except (FileNotFoundError, ValueError):
            return None
        from urllib.parse import parse_qs, urlsplit

        request = str(manifest.get("request") or "") if isinstance(manifest, dict) else ""
        values = parse_qs(urlsplit(request).query).get("_since")
        return values[0] if values else None

    def _files(self, source: Any, kind: str, resource: str) -> list[Any]:
        """The export's files of one kind (``output``/``deleted``) and resource type."""
        from airflow_provider_backendauth.core.names import safe_type_name

        prefix = f"{safe_type_name(resource)}."
        export = self.export
        if isinstance(export, Mapping) and kind == "output" and "output" in export:
            entry = (export.get("output") or {}).get(resource) or {}
            return [source / name for name in entry.get("files") or []]
        if isinstance(export, Sequence) and not isinstance(export, (str, Mapping)):
            return [
                source / str(item["name"])
                for item in export
                if isinstance(item, Mapping)
                and item.get("kind") == kind
                and (kind == "deleted" or item.get("type") == resource)
            ]
        folder = source / "deleted" if kind == "deleted" else source
        try:
            children = sorted(folder.iterdir(), key=lambda p: p.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [
            child
            for child in children
            if child.name.endswith(_NDJSON_SUFFIXES)
            and (kind == "deleted" or child.name.startswith(prefix))
        ]


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _stored_columns(columns: list[Any], result: Any) -> list[Any]:
    """The view's columns plus those the table layer adds (``_resource_key``), in the
    table's order: what the OpenLineage schema facet describes."""
    from airflow_provider_backendauth.core.views import Column

    by_name = {c.name: c for c in columns}
    added = "added by the table layer: getResourceKey() of the row's resource"
    return [
        by_name.get(name) or Column(name, "string", False, added)
        for name in (result.columns or list(by_name))
    ]
