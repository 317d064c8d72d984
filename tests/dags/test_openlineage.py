"""OpenLineage events of real DAG runs, through the OpenLineage provider's file transport.

``airflow dags test`` runs tests/dags/lineage/lineage_dags.py against the sandbox in a
subprocess whose Airflow has the OpenLineage provider configured with its file transport;
every event it wrote is validated against the OpenLineage JSON schemas (vendored from the
OpenLineage spec in tests/support/openlineage_schema, with their licence), then checked for what
the operators report: FHIR inputs named by the server, storage outputs with row counts,
the error facet of a failed task, and no secret anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.lineage import fhir_namespace
from tests.support.bulkkit import BulkEnv, assert_no_token_in, ndjson_lines
from tests.support.openlineage import EventValidator

pytest_plugins = ("tests.support.bulk_fixtures",)
pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "lineage"


def run_dag(
    fhir: BulkEnv, tmp_path: Path, airflow_db: Path, dag_id: str, events: Path
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(HERE),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "backendauth-tests",
            "BACKENDAUTH_OUTPUT": tmp_path.as_uri(),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, "2024-06-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def asset_events_of(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Asset URI -> the ``extra`` of the Asset events whose path is under ``tmp_path``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra).join(
                AssetEvent, AssetEvent.asset_id == AssetModel.id
            )
        ).all()
    found = {}
    for uri, extra in rows:
        if str((extra or {}).get("path", "")).startswith(tmp_path.as_uri()):
            assert uri not in found, "one event per Asset and run"
            found[uri] = dict(extra)
    return found


def read_events(events: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()]


def by_task(events: list[dict[str, Any]], task: str, kind: str) -> dict[str, Any]:
    (event,) = [
        e for e in events if e["eventType"] == kind and e["job"]["name"].endswith(f".{task}")
    ]
    return event


def test_lineage_of_an_export_and_a_search(fhir: BulkEnv, tmp_path: Path, airflow_db: Path) -> None:
    events_path = tmp_path / "openlineage.ndjson"
    done = run_dag(fhir, tmp_path, airflow_db, "lineage_export", events_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = events_path.read_text()
    events = read_events(events_path)
    check = EventValidator()
    for event in events:
        check.validate(event)
    assert "outputStatistics" in check.checked
    assert_no_token_in(text, fhir.sb, fhir.client_id)
    assert fhir.key.private_pem.split("\n")[1] not in text
    namespace = fhir_namespace(fhir.sb.fhir_base)

    start = by_task(events, "export", "START")
    assert {(d["namespace"], d["name"]) for d in start["inputs"]} == {
        (namespace, "Group/g1/Patient"),
        (namespace, "Group/g1/Observation"),
    }
    complete = by_task(events, "export", "COMPLETE")
    assert {(d["namespace"], d["name"]) for d in complete["inputs"]} == {
        (namespace, "Group/g1/Patient"),
        (namespace, "Group/g1/Observation"),
    }
    folder = tmp_path / "bulk" / "2024-06-01"
    outputs = {(d["namespace"], d["name"]): d for d in complete["outputs"]}
    written = sorted(folder.glob("*.*.ndjson"))
    assert set(outputs) == {("file", str(p)) for p in written}
    for path in written:
        stats = outputs[("file", str(path))]["outputFacets"]["outputStatistics"]
        assert stats == {
            **{k: v for k, v in stats.items() if k.startswith("_")},
            "rowCount": len(ndjson_lines(path)),
            "size": path.stat().st_size,
        }

    # The same run's Asset events, as Airflow's metadata database holds them.
    assets = asset_events_of(tmp_path)
    assert set(assets) == {
        f"{namespace}/Group/g1/Patient",
        f"{namespace}/Group/g1/Observation",
        f"{namespace}/Observation",
    }
    patient = assets[f"{namespace}/Group/g1/Patient"]
    assert patient["resources"] == len(ndjson_lines(folder / "Patient.000.ndjson"))
    assert patient["path"] == f"file://{folder}" and patient["transactionTime"]

    search = by_task(events, "search", "COMPLETE")
    assert [(d["namespace"], d["name"]) for d in search["inputs"]] == [(namespace, "Observation")]
    search_folder = tmp_path / "search" / "2024-06-01"
    rows = {d["name"]: d["outputFacets"]["outputStatistics"]["rowCount"] for d in search["outputs"]}
    assert rows == {
        str(search_folder / "Observation.ndjson"): len(
            ndjson_lines(search_folder / "Observation.ndjson")
        ),
        str(search_folder / "Observation.included.ndjson"): len(
            ndjson_lines(search_folder / "Observation.included.ndjson")
        ),
    }


def test_a_failed_task_reports_its_error(fhir: BulkEnv, tmp_path: Path, airflow_db: Path) -> None:
    events_path = tmp_path / "openlineage.ndjson"
    done = run_dag(fhir, tmp_path, airflow_db, "lineage_failure", events_path)
    assert done.returncode != 0
    events = read_events(events_path)
    check = EventValidator()
    for event in events:
        check.validate(event)
    assert "errorMessage" in check.checked
    fail = by_task(events, "refused", "FAIL")
    error = fail["run"]["facets"]["errorMessage"]
    assert "400" in error["message"] and error["programmingLanguage"] == "python"
    assert [d["name"] for d in fail["inputs"]] == ["Observation"]
