"""FhirViewTableOperator on real sandbox exports: tables from the export's summary, from the
mapped downloads' list, per resource type; full(_until=T1) + incremental(_since=T1) equals a
full export row for row; invalid views fail before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth._compat import AirflowFailException
from airflow_provider_backendauth.core.tables import read_snapshot
from airflow_provider_backendauth.operators.bulk import FhirBulkDownloadOperator
from airflow_provider_backendauth.operators.views import FhirViewTableOperator
from tests.operators.test_bulk import export_op
from tests.support.bulkkit import BulkEnv, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)

READY = ["patient_demographics", "observation", "condition", "encounter"]
T1 = "2024-07-01T00:00:00Z"


def tables_op(**kwargs: Any) -> FhirViewTableOperator:
    return FhirViewTableOperator(task_id="tables", **{"views": READY, **kwargs})


def _rows(table: Path) -> list[tuple[Any, ...]]:
    import deltalake

    rows = deltalake.DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    return sorted(tuple(r.values()) for r in rows)


def test_tables_from_an_export_summary(bulk_env: BulkEnv) -> None:
    raw = bulk_env.tmp / "raw"
    summary = export_op(raw).execute(task_context())
    assert summary["since"] is None
    result = tables_op(export=summary, destination=str(bulk_env.tmp / "tables")).execute(
        task_context()
    )
    assert result["incremental"] is False
    assert set(result["tables"]) == set(READY)
    patients = result["tables"]["patient_demographics"]
    assert patients["rows"] == summary["output"]["Patient"]["count"]
    assert patients["resource"] == "Patient" and patients["version"] == 0
    observations = result["tables"]["observation"]
    assert observations["rows"] == summary["output"]["Observation"]["count"]
    assert result["rows"] == sum(t["rows"] for t in result["tables"].values())
    assert len(_rows(bulk_env.tmp / "tables" / "observation")) == observations["rows"]


def test_openlineage_names_the_files_read_and_the_tables_written(bulk_env: BulkEnv) -> None:
    raw = bulk_env.tmp / "raw"
    summary = export_op(raw).execute(task_context())
    op = tables_op(export=summary, destination=str(bulk_env.tmp / "tables"), views=["condition"])
    op.execute(task_context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(i.namespace, i.name) for i in lineage.inputs] == [
        ("file", str(raw / name)) for name in summary["output"]["Condition"]["files"]
    ]
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("file", str(bulk_env.tmp / "tables" / "condition"))
    statistics = output.outputFacets["outputStatistics"]
    assert statistics.rowCount == summary["output"]["Condition"]["count"]
    assert statistics.size > 0


def test_full_until_t1_plus_since_t1_equals_full(bulk_env: BulkEnv) -> None:
    full_t1 = export_op(bulk_env.tmp / "t1", until=T1).execute(task_context("t1"))
    since_t1 = export_op(bulk_env.tmp / "inc", since=T1).execute(task_context("inc"))
    full_t2 = export_op(bulk_env.tmp / "t2").execute(task_context("t2"))
    assert since_t1["since"] and since_t1["deleted"]["count"] > 0
    incremental = bulk_env.tmp / "incremental"
    tables_op(export=full_t1, destination=str(incremental)).execute(task_context())
    merged = tables_op(export=since_t1, destination=str(incremental)).execute(task_context())
    assert merged["incremental"] is True
    assert merged["tables"]["observation"]["mode"] == "merge"
    full = bulk_env.tmp / "full"
    tables_op(export=full_t2, destination=str(full)).execute(task_context())
    for name in READY:
        assert _rows(incremental / name) == _rows(full / name), name


def test_mapped_per_resource_type_from_the_download_list(bulk_env: BulkEnv) -> None:
    raw = bulk_env.tmp / "raw"
    files = export_op(raw, download=False).execute(task_context())
    downloads = [
        FhirBulkDownloadOperator(
            task_id="download", file=f, destination=str(raw), backendauth_conn_id=bulk_env.conn_id
        ).execute(task_context(task_id="download"))
        for f in files
    ]
    out = bulk_env.tmp / "tables"
    counts = {}
    for kind in ("Patient", "Observation"):
        result = tables_op(
            export=downloads, source=str(raw), destination=str(out), resource_types=[kind]
        ).execute(task_context())
        counts.update({name: t["rows"] for name, t in result["tables"].items()})
    assert set(counts) == {"patient_demographics", "observation"}
    expected = {d["type"]: d["count"] for d in downloads if d["kind"] == "output"}
    assert counts == {
        "patient_demographics": expected["Patient"],
        "observation": expected["Observation"],
    }
    assert not (out / "condition").exists()


def test_an_invalid_view_fails_for_good_with_nothing_written(bulk_env: BulkEnv) -> None:
    raw = bulk_env.tmp / "raw"
    summary = export_op(raw).execute(task_context())
    bad = {
        "resourceType": "ViewDefinition",
        "name": "bad",
        "resource": "Patient",
        "select": [{"column": [{"name": "x", "path": "name.("}]}],
    }
    out = bulk_env.tmp / "tables"
    with pytest.raises(AirflowFailException, match="name\\.\\("):
        tables_op(
            export=summary, destination=str(out), views=["patient_demographics", bad]
        ).execute(task_context())
    assert not out.exists()
    with pytest.raises(AirflowFailException, match="neither a .json file nor a ready view"):
        tables_op(export=summary, destination=str(out), views=["allergies"]).execute(task_context())


def test_a_malformed_export_file_fails_for_good_leaving_the_table(bulk_env: BulkEnv) -> None:
    raw = bulk_env.tmp / "raw"
    summary = export_op(raw).execute(task_context())
    out = bulk_env.tmp / "tables"
    tables_op(export=summary, destination=str(out), views=["encounter"]).execute(task_context())
    name = summary["output"]["Encounter"]["files"][0]
    with (raw / name).open("ab") as handle:
        handle.write(b'{"resourceType": "Encounter", "id": \n')
    with pytest.raises(AirflowFailException, match="is not valid JSON"):
        tables_op(export=summary, destination=str(out), views=["encounter"]).execute(task_context())
    snapshot = read_snapshot(out / "encounter")
    assert snapshot is not None and snapshot.version == 0  # the first table, untouched


def test_view_files_and_templating(bulk_env: BulkEnv, tmp_path: Path) -> None:
    import json

    from airflow_provider_backendauth.view_definitions import load

    view_file = tmp_path / "enc.json"
    view_file.write_text(json.dumps({**load("encounter"), "name": "enc"}))
    raw = bulk_env.tmp / "raw"
    export_op(raw).execute(task_context())
    result = tables_op(
        source=str(raw), destination=str(bulk_env.tmp / "t"), views=[str(view_file)]
    ).execute(task_context())
    assert list(result["tables"]) == ["enc"] and result["tables"]["enc"]["rows"] > 0
    assert set(FhirViewTableOperator.template_fields) >= {
        "views",
        "destination",
        "export",
        "source",
    }
