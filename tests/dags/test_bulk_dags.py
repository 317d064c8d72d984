"""The bulk export example DAGs, run unchanged with real Airflow against the sandbox.

``dag.test()`` runs the deferrable export with its trigger inline; a separate e2e test runs
the nightly DAG under a real scheduler, triggerer and dag processor (``airflow standalone``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.bulkkit import BulkEnv, ndjson_lines
from tests.conftest import REPO

pytest_plugins = ("tests.bulk_fixtures",)
pytestmark = pytest.mark.e2e

TYPES = {"Patient", "Observation", "Condition", "Encounter"}


@pytest.fixture(scope="module")
def dagbag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def fhir(bulk_env: BulkEnv) -> BulkEnv:
    """The sandbox client exposed as the examples' connection ``backendauth_fhir``."""
    bulk_env.conn_id = "backendauth_fhir"
    bulk_env.set_connection()
    return bulk_env


def run(dagbag: Any, dag_id: str, day: int, **conf: Any) -> Any:
    dag = dagbag.get_dag(dag_id)
    assert dag is not None, dag_id
    dag_run = dag.test(logical_date=pendulum.datetime(2024, 6, day, tz="UTC"), run_conf=conf)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    return dag_run


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def test_bulk_examples_parse(dagbag: Any) -> None:
    assert {"backendauth_bulk_export", "backendauth_bulk_export_mapped"} <= set(dagbag.dag_ids)
    nightly = dagbag.get_dag("backendauth_bulk_export")
    assert nightly.get_task("export").deferrable is True
    assert nightly.get_task("export").since == "auto"


def test_nightly_incremental_group_export(dagbag: Any, fhir: BulkEnv, tmp_path: Path) -> None:
    output = tmp_path.as_uri()
    run(dagbag, "backendauth_bulk_export", 1, output=output, group_id="g1")
    group = tmp_path / "bulk" / "group-g1"
    (first,) = run_dirs(group)
    assert {p.name.split(".")[0] for p in first.glob("*.ndjson")} == TYPES
    assert len(ndjson_lines(first / "Patient.000.ndjson")) == 10
    manifest = json.loads((first / "manifest.json").read_text())
    assert "_since" not in manifest["request"]  # the first run exports everything

    run(dagbag, "backendauth_bulk_export", 2, output=output, group_id="g1")
    second = next(d for d in run_dirs(group) if d != first)
    manifest2 = json.loads((second / "manifest.json").read_text())
    assert "_since=" in manifest2["request"]  # the next one only what changed since
    assert manifest["transactionTime"].replace(":", "%3A") in manifest2["request"]
    assert "deleted" in manifest2
    stats = fhir.sb.stats
    assert stats["bulk_kickoffs"] == 2
    assert stats["bulk_cancels"] == 2  # each job deleted on the server after download
    assert stats["foreign_origin"]["authorization_headers"] == []


def test_mapped_download_example(dagbag: Any, fhir: BulkEnv, tmp_path: Path) -> None:
    fhir.sb.settings.update(bulk_lines_per_file=7)
    dag_run = run(dagbag, "backendauth_bulk_export_mapped", 3, output=tmp_path.as_uri())
    downloads = [ti for ti in dag_run.get_task_instances() if ti.task_id == "download"]
    (folder,) = run_dirs(tmp_path / "bulk" / "system")
    files = sorted(folder.glob("*.ndjson"))
    assert len(downloads) == len(files) > 4  # one mapped task per file
    assert sum(len(ndjson_lines(f)) for f in files if f.name.startswith("Patient")) == 20
    stats = fhir.sb.stats
    assert stats["file_downloads"] == len(files)
    assert stats["bulk_cancels"] == 1  # finalize deleted the job
