"""Airflow Assets for what the operators wrote (not public API; see docs/lineage.md).

Guarantee: a task that wrote FHIR data emits, when it succeeds, one Asset event per resource
type (or table) it wrote, for the Asset named by ``core.lineage`` (``{base URL}/{Type}``;
``{base URL}/Group/{id}/{Type}`` for a Group export), with the counts, ``transactionTime``,
``_since`` and this run's storage path in the event's ``extra``. A DAG scheduled on
``Asset(fhir_asset_uri(...))`` runs after every such export, whatever the run's destination.

Why an ``AssetAlias``: the Asset's identity contains the server's base URL, which lives in the
connection; reading a connection while a DAG file is parsed is not allowed (and the types an
export returns are known only when it completes). So each operator declares the alias
``backendauth:{connection id}`` as its outlet when the DAG is parsed, and adds the concrete
Assets to it at run time; Airflow creates an Asset the first time an event names it and
triggers the DAGs scheduled on it. Events are registered only when the task succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import AssetAlias, BaseOperator

ALIAS_PREFIX = "backendauth:"
TABLES_ALIAS = "tables"  # the alias of the table operator's events: backendauth:tables


def lineage_alias(conn_id: str) -> AssetAlias:
    """The ``AssetAlias`` every task writing through connection ``conn_id`` emits through."""
    from airflow.sdk import AssetAlias

    return AssetAlias(name=f"{ALIAS_PREFIX}{conn_id}", group="backendauth")


def declare_outlet(operator: BaseOperator, conn_id: str) -> None:
    """Add the connection's alias to ``operator.outlets`` (after any the DAG author set)."""
    alias = lineage_alias(conn_id)
    if alias not in operator.outlets:
        operator.outlets.append(alias)


def emit_asset_events(
    context: Mapping[str, Any], conn_id: str, events: Mapping[str, Mapping[str, Any]]
) -> int:
    """Add one Asset event per ``{asset URI: extra}`` through the connection's alias; returns
    how many. A context without ``outlet_events`` (``execute`` called outside a task run)
    records nothing."""
    from airflow.sdk import Asset

    accessors = context.get("outlet_events")
    if accessors is None or not events:
        return 0
    accessor = accessors[lineage_alias(conn_id)]
    for uri, extra in events.items():
        accessor.add(Asset(uri=uri), extra=dict(extra))
    return len(events)


def emit_export_events(context: Mapping[str, Any], conn_id: str, job: Any, summary: Any) -> int:
    """The Asset events of a finished bulk export (``BulkExportJob.finish``'s summary): one
    per output resource type, named by the job's server and (Group exports) group."""
    from airflow_provider_backendauth.core.lineage import export_asset_extras, fhir_asset_uri

    if not isinstance(summary, Mapping):
        return 0
    request = (job.record.request if job.record is not None else None) or {}
    group_id = request.get("group_id") if request.get("level") == "group" else None
    extras = export_asset_extras(
        summary,
        since=request.get("since"),
        level=str(request.get("level") or "system"),
        group_id=group_id,
        types=[str(t) for t in request.get("types") or ()],
    )
    base_url = job.client.base_url
    events = {fhir_asset_uri(base_url, k, group_id=group_id): e for k, e in extras.items()}
    return emit_asset_events(context, conn_id, events)


def emit_search_event(
    context: Mapping[str, Any], conn_id: str, search: Any, summary: Mapping[str, Any], path: str
) -> int:
    """The Asset event of a search written to files: one, for the searched type (included
    resources of other types are a few referred to, not that type's data)."""
    from airflow_provider_backendauth.core.lineage import fhir_asset_uri, search_asset_extra

    uri = fhir_asset_uri(search.base_url, search.resource_type)
    return emit_asset_events(context, conn_id, {uri: search_asset_extra(summary, path=path)})


# -- OpenLineage ----------------------------------------------------------------------------
#
# The operators' ``get_openlineage_facets_on_start/complete/failure`` build their answer
# here. The OpenLineage provider calls them (it is optional: ``pip install
# airflow-provider-backendauth[openlineage]``); these imports run only then.


def fhir_input(base_url: str, resource_type: str, group_id: str | None = None) -> Any:
    """The OpenLineage input dataset of one resource type on a FHIR server."""
    from airflow.providers.common.compat.openlineage.facet import InputDataset

    from airflow_provider_backendauth.core.lineage import fhir_dataset_name, fhir_namespace

    return InputDataset(
        namespace=fhir_namespace(base_url),
        name=fhir_dataset_name(resource_type, group_id=group_id),
    )


def storage_output(
    location: str, rows: int, size: int, columns: Sequence[Any] | None = None
) -> Any:
    """The OpenLineage output dataset of one written file (or table), with its rows and
    bytes; ``columns`` (a view's ``Column``s: name, FHIR type, collection, description) add a
    ``schema`` facet."""
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )

    from airflow_provider_backendauth.core.lineage import storage_dataset

    namespace, name = storage_dataset(location)
    facets: dict[str, Any] = {}
    if columns is not None:
        from airflow.providers.common.compat.openlineage.facet import (
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )

        facets["schema"] = SchemaDatasetFacet(
            fields=[
                SchemaDatasetFacetFields(
                    name=column.name,
                    type=f"array<{column.type or 'unknown'}>"
                    if column.collection
                    else (column.type or "unknown"),
                    description=column.description,
                )
                for column in columns
            ]
        )
    return OutputDataset(
        namespace=namespace,
        name=name,
        facets=facets,
        outputFacets={
            "outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=rows, size=size)
        },
    )


def operator_lineage(
    inputs: Sequence[Any] = (), outputs: Sequence[Any] = (), error: BaseException | None = None
) -> Any:
    """An ``OperatorLineage``; with ``error``, an ``errorMessage`` run facet whose message is
    redacted (no token, no signed URL's query)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    run_facets: dict[str, Any] = {}
    if error is not None:
        from airflow.providers.common.compat.openlineage.facet import ErrorMessageRunFacet

        from airflow_provider_backendauth.core.redact import short_error

        run_facets["errorMessage"] = ErrorMessageRunFacet(
            message=short_error(error, limit=2000), programmingLanguage="python"
        )
    return OperatorLineage(inputs=list(inputs), outputs=list(outputs), run_facets=run_facets)


def export_lineage(
    base_url: str, destination: str, results: Sequence[Any], group_id: str | None
) -> tuple[list[Any], list[Any]]:
    """Inputs (one per resource type exported) and outputs (one per data file written, with
    its rows and bytes) of a finished bulk export; ``results`` are its ``FileResult``s.
    Error files (OperationOutcomes about the export) are not data: not outputs."""
    from airflow_provider_backendauth.core.lineage import public_url

    folder = public_url(destination)
    types: dict[str, None] = {}
    outputs = []
    for result in results:
        if result.kind == "error":
            continue
        if result.kind == "output":
            types.setdefault(result.type or "Unknown")
        outputs.append(storage_output(f"{folder}/{result.name}", result.count, result.bytes))
    return [fhir_input(base_url, kind, group_id) for kind in types], outputs
