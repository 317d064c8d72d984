"""NDJSON files -> one view table: read, run the view, write the table (full or incremental).

- ``read_resources(paths)``: NDJSON (``.ndjson`` or gzipped ``.ndjson.gz``) from local or
  object-store paths, one line at a time, decimals parsed as ``Decimal`` (no float loss) by
  the runner's reader. A line that is not JSON fails with ``MalformedResourceError`` naming
  the file and line, never quoting it.
- ``deleted_ids(paths, resource_type)``: the ids a bulk export's ``deleted`` files remove
  (Bundles of ``DELETE`` requests, ``request.url`` = ``Type/id``).
- ``flatten(view, inputs, table)``: the view's rows into its table. Each row also carries
  ``_resource_key`` (``getResourceKey()`` of its resource, added to the view as one more
  top-level column, which adds no rows). ``incremental=True`` merges: every resource of the
  view's type in ``inputs`` replaces all rows of its key (even if it now yields no row), every
  deleted id removes them, so full(T1) + incremental(T1->T2) == full(T2).

The view is compiled (and checked) before any file is opened. This module imports no Airflow.
"""

from __future__ import annotations

import copy
import gzip
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_backendauth.core.errors import MalformedResourceError, ViewDefinitionError
from airflow_provider_backendauth.core.storage.paths import StoragePath, as_path
from airflow_provider_backendauth.core.tables.table import KEY_COLUMN, TableResult, ViewTable
from airflow_provider_backendauth.core.tables.types import TypeOptions
from airflow_provider_backendauth.core.views import Column, CompiledView, compile_view

_ID_KEY_PREFIX = "zzbackendauthkey"


def _lines(path: StoragePath) -> Iterator[bytes]:
    with path.open("rb") as raw:
        if str(path.name).endswith(".gz"):
            with gzip.open(raw, "rb") as inflated:
                yield from inflated
        else:
            yield from raw


def read_resources(paths: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every resource in the NDJSON files, in order (blank lines skipped), parsed by the
    runner's reader (``core.views.read_resources``: the fastest installed parser, exact
    decimals)."""
    from airflow_provider_backendauth.core.views import read_resources as parse_lines

    for given in paths:
        path = as_path(given)
        try:
            for resource in parse_lines(_lines(path)):
                if not isinstance(resource, dict):
                    raise MalformedResourceError("a line is not a FHIR resource (a JSON object)")
                yield resource
        except MalformedResourceError as exc:
            raise MalformedResourceError(f"{path.name}: {exc}") from None


def deleted_ids(paths: Iterable[Any], resource_type: str) -> Iterator[str]:
    """The ids of ``resource_type`` that the bulk ``deleted`` files remove."""
    for bundle in read_resources(paths):
        if bundle.get("resourceType") != "Bundle":
            raise MalformedResourceError("a deleted-resources file holds a non-Bundle resource")
        for entry in bundle.get("entry") or []:
            request = entry.get("request") if isinstance(entry, dict) else None
            if not isinstance(request, dict) or str(request.get("method", "")).upper() != "DELETE":
                continue
            url = str(request.get("url", "")).split("?", 1)[0].rstrip("/")
            parts = url.split("/")
            if "_history" in parts:  # Type/id/_history/vid
                parts = parts[: parts.index("_history")]
            if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
                yield parts[-1]


class KeyedView:
    """A view with its rows' ``getResourceKey()`` added as one more top-level column."""

    def __init__(self, view: Mapping[str, Any]) -> None:
        plain = compile_view(view)  # the view as written, checked first: errors name its parts
        self.key_name = f"{_ID_KEY_PREFIX}{secrets.token_hex(4)}"
        keyed = copy.deepcopy(dict(view))
        keyed["select"] = [
            *list(view.get("select") or []),
            {"column": [{"name": self.key_name, "path": "getResourceKey()", "type": "string"}]},
        ]
        self.compiled: CompiledView = compile_view(keyed)
        self.resource = plain.resource
        self.view_columns: list[Column] = plain.columns
        self.columns: list[Any] = [*plain.columns, Column(KEY_COLUMN, "string", False)]
        self.keys_only = compile_view(
            {
                "resource": plain.resource,
                "select": [{"column": [{"name": "k", "path": "getResourceKey()"}]}],
            }
        )
        # The spec's type hint: a column's ansi/type tag (the runner validated the tags).
        self.tags = {c.name: v for c in plain.columns for k, v in c.tags if k == "ansi/type"}

    def key_of(self, resource: Mapping[str, Any]) -> list[str]:
        return [str(row["k"]) for row in self.keys_only.run([resource]) if row["k"] is not None]


def table_name(view: Mapping[str, Any]) -> str:
    """The folder name of a view's table: its ``name`` (the spec restricts it to letters,
    digits and ``_``)."""
    name = view.get("name")
    if not isinstance(name, str) or not name or not name.replace("_", "a").isalnum():
        raise ViewDefinitionError(
            "the view needs a 'name' of letters, digits and '_' (its table's folder name)"
        )
    return name


def flatten(
    view: Mapping[str, Any],
    inputs: Iterable[Any],
    table: Any,
    *,
    incremental: bool = False,
    deleted: Iterable[Any] = (),
    options: TypeOptions | None = None,
    **table_options: Any,
) -> TableResult:
    """Run ``view`` over the resources in the NDJSON ``inputs`` and write its table.

    Args:
        view: the ViewDefinition (a dict).
        inputs: NDJSON files (paths or URLs; ``.gz`` inflated).
        table: the table folder.
        incremental: merge into the existing table (the inputs are an export with
            ``_since``) instead of replacing it.
        deleted: the export's ``deleted`` files (Bundles of DELETE requests); incremental only.
        options: type choices (``TypeOptions``).
        table_options: passed to ``ViewTable`` (``row_group_rows``, ``target_file_bytes``...).

    Raises:
        ViewDefinitionError: an invalid view (before any file is read).
        MalformedResourceError: an input line that is not a resource.
        TableError: a value that does not fit its column; a merge without a table.
    """
    keyed = KeyedView(view)
    writer = ViewTable(
        table,
        keyed.columns,
        options=options,
        tags=keyed.tags,
        name=str(view.get("name") or keyed.resource),
        **table_options,
    )
    resources: Iterable[dict[str, Any]] = read_resources(inputs)
    parameters = {"view": view.get("name")}
    if not incremental:
        rows = keyed.compiled.run_tuples(resources)
        return writer.write(rows, parameters=parameters, tuples=True)
    replaced: set[str] = set()
    for resource_id in deleted_ids(deleted, keyed.resource):
        replaced.update(keyed.key_of({"resourceType": keyed.resource, "id": resource_id}))

    def tracked() -> Iterator[tuple[Any, ...]]:
        # Every resource of the view's type replaces its rows, whether or not it yields one.
        for resource, rows in keyed.compiled.run_by_resource(resources):
            if rows:
                replaced.add(rows[0][-1])  # the key column, last
                yield from rows
            else:
                replaced.update(keyed.key_of(resource))

    return writer.write(tracked(), replace_keys=replaced, parameters=parameters, tuples=True)
