"""FhirViewTableOperator's Assets (one event per table) and its OpenLineage schema facet,
on real sandbox exports; the facets validated against their OpenLineage schemas."""

from __future__ import annotations

from typing import Any

from airflow.sdk import AssetAlias

from airflow_provider_backendauth.operators.views import FhirViewTableOperator
from tests.operators.test_bulk import export_op
from tests.operators.test_lineage_openlineage import check_facets, serialised
from tests.support.bulkkit import BulkEnv, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)

ALIAS = AssetAlias(name="backendauth:tables", group="backendauth")


def test_one_asset_event_per_table_and_a_schema_per_output(bulk_env: BulkEnv) -> None:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    raw = bulk_env.tmp / "raw"
    summary = export_op(raw).execute(task_context())
    tables = bulk_env.tmp / "tables"
    op = FhirViewTableOperator(
        task_id="tables",
        views=["patient_demographics", "condition"],
        export=summary,
        destination=str(tables),
    )
    assert op.outlets == [ALIAS]
    context: dict[str, Any] = {**task_context(), "outlet_events": OutletEventAccessors()}
    result = op.execute(context)
    events = {
        e.dest_asset_key.uri: e.extra for e in context["outlet_events"][ALIAS].asset_alias_events
    }
    assert set(events) == {str(tables / "patient_demographics"), str(tables / "condition")}
    patients = events[str(tables / "patient_demographics")]
    assert patients["rows"] == result["tables"]["patient_demographics"]["rows"] == 20
    assert (patients["resourceType"], patients["version"], patients["source"]) == (
        "Patient",
        0,
        "table",
    )
    assert patients["since"] is None and patients["path"] == str(tables / "patient_demographics")

    lineage = serialised(op.get_openlineage_facets_on_complete(None))
    outputs = {d["name"]: d for d in lineage["outputs"]}
    fields = outputs[str(tables / "patient_demographics")]["facets"]["schema"]["fields"]
    assert [f["name"] for f in fields] == result["tables"]["patient_demographics"]["columns"]
    assert all(f["type"] for f in fields)
    assert check_facets(lineage) == {"outputStatistics", "schema"}
