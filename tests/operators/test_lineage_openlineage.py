"""The operators' OpenLineage facets, as the OpenLineage provider asks for them, on the fast
suite (every supported Airflow): datasets named by the server and the storage, per-file row
and byte counts matching the files, the error facet; each facet validated against its
OpenLineage schema. The same through real DAG runs and the provider's listener:
tests/dags/test_openlineage.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.lineage import fhir_namespace
from tests.operators.test_bulk import download_op, export_op, finalize_op
from tests.support.bulkkit import BulkEnv, assert_no_token_in, ndjson_lines, task_context
from tests.support.openlineage import EventValidator

pytest_plugins = ("tests.support.bulk_fixtures",)


def serialised(lineage: Any) -> dict[str, Any]:
    from openlineage.client.serde import Serde

    return {
        "inputs": [Serde.to_dict(d) for d in lineage.inputs],
        "outputs": [Serde.to_dict(d) for d in lineage.outputs],
        "run": {k: Serde.to_dict(v) for k, v in lineage.run_facets.items()},
    }


def check_facets(data: dict[str, Any]) -> set[str]:
    validator = EventValidator()
    validator.validate_facets(data["run"])
    for dataset in data["outputs"]:
        validator.validate_facets(dataset.get("outputFacets", {}))
        validator.validate_facets(dataset.get("facets", {}))
    return validator.checked


def test_mapped_downloads_and_finalize_report_each_file(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=6)
    out = bulk_env.tmp / "out"
    files = export_op(out, download=False, types="Patient,Observation").execute(task_context())
    export = export_op(out, download=False, types="Patient,Observation")
    namespace = fhir_namespace(bulk_env.sb.fhir_base)
    started = serialised(export.get_openlineage_facets_on_start())
    assert {(d["namespace"], d["name"]) for d in started["inputs"]} == {
        (namespace, "Patient"),
        (namespace, "Observation"),
    }
    first = download_op(out, file=files[0])
    first.execute(task_context(task_id="download"))
    one = serialised(first.get_openlineage_facets_on_complete(None))
    path = out / files[0]["name"]
    assert [(d["namespace"], d["name"]) for d in one["outputs"]] == [("file", str(path))]
    stats = one["outputs"][0]["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"]) == (len(ndjson_lines(path)), path.stat().st_size)
    for spec in files[1:]:
        download_op(out, file=spec).execute(task_context(task_id="download"))

    finalize = finalize_op(out)
    finalize.execute(task_context(task_id="finalize"))
    done = serialised(finalize.get_openlineage_facets_on_complete(None))
    assert {d["name"] for d in done["inputs"]} == {"Patient", "Observation"}
    written = sorted(out.glob("*.*.ndjson"))
    rows = {d["name"]: d["outputFacets"]["outputStatistics"]["rowCount"] for d in done["outputs"]}
    assert rows == {str(p): len(ndjson_lines(p)) for p in written}
    assert check_facets(done) == {"outputStatistics"}


def test_a_failed_export_reports_a_redacted_error(bulk_env: BulkEnv, tmp_path: Path) -> None:
    bulk_env.sb.settings.update(bulk_error_file="error")
    op = export_op(tmp_path / "out", types="Patient", level="group", group_id="g1")
    with pytest.raises(Exception, match="OperationOutcome"):
        op.execute(task_context())
    failed = serialised(op.get_openlineage_facets_on_failure(None))
    assert [d["name"] for d in failed["inputs"]] == ["Group/g1/Patient"]
    error = failed["run"]["errorMessage"]
    assert "OperationOutcome" in error["message"] and error["programmingLanguage"] == "python"
    assert check_facets(failed) == {"errorMessage"}
    assert_no_token_in(str(failed), bulk_env.sb, bulk_env.client_id)
