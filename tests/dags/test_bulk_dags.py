"""The bulk export example DAGs, run unchanged with real Airflow against the sandbox.

``dag.test()`` runs the deferrable export with its trigger inline; a separate e2e test runs
the nightly DAG under a real scheduler, triggerer and dag processor (``airflow standalone``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.conftest import REPO
from tests.support.bulkkit import BulkEnv, ndjson_lines

pytest_plugins = ("tests.support.bulk_fixtures",)
pytestmark = pytest.mark.e2e

TYPES = {"Patient", "Observation", "Condition", "Encounter"}


@pytest.fixture(scope="module")
def dagbag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    return bag


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
    assert {p.name.split(".")[0] for p in first.glob("*.*.ndjson")} == TYPES
    assert len(ndjson_lines(first / "Patient.000.ndjson")) == 10
    manifest = json.loads((first / "manifest.json").read_text())
    assert "_since" not in manifest["request"]  # the first run exports everything

    run(dagbag, "backendauth_bulk_export", 2, output=output, group_id="g1")
    second = next(d for d in run_dirs(group) if d != first)
    manifest2 = json.loads((second / "manifest.json").read_text())
    assert "_since=" in manifest2["request"]  # the next one only what changed since
    assert manifest["transactionTime"].replace(":", "%3A") in manifest2["request"]
    assert "deleted" in manifest2
    # The tables: written by the first run, merged by the second (nothing changed since).
    from airflow_provider_backendauth.core.tables import read_snapshot

    tables = tmp_path / "tables" / "group-g1"
    patients = read_snapshot(tables / "patient_demographics")
    assert patients is not None and patients.version == 1 and patients.rows == 10
    observations = read_snapshot(tables / "observation")
    assert observations is not None
    assert observations.rows == len(ndjson_lines(first / "Observation.000.ndjson"))
    stats = fhir.sb.stats
    assert stats["bulk_kickoffs"] == 2
    assert stats["bulk_cancels"] == 2  # each job deleted on the server after download
    assert stats["foreign_origin"]["authorization_headers"] == []


def test_mapped_download_example(dagbag: Any, fhir: BulkEnv, tmp_path: Path) -> None:
    fhir.sb.settings.update(bulk_lines_per_file=7)
    dag_run = run(dagbag, "backendauth_bulk_export_mapped", 3, output=tmp_path.as_uri())
    downloads = [ti for ti in dag_run.get_task_instances() if ti.task_id == "download"]
    (folder,) = run_dirs(tmp_path / "bulk" / "system")
    files = sorted(folder.glob("*.*.ndjson"))
    assert len(downloads) == len(files) > 4  # one mapped task per file
    assert {ti.rendered_map_index for ti in downloads} == {f.name for f in files}
    assert sum(len(ndjson_lines(f)) for f in files if f.name.startswith("Patient")) == 20
    stats = fhir.sb.stats
    assert stats["file_downloads"] == len(files)
    assert stats["bulk_cancels"] == 1  # finalize deleted the job


# --- a real deployment shape: scheduler + dag processor + triggerer + API server -------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Standalone:
    """``airflow standalone`` (LocalExecutor, SQLite) in its own AIRFLOW_HOME, driven through
    its REST API."""

    def __init__(self, home: Path, extra_env: dict[str, str]) -> None:
        self.home = home
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        dags = home / "dags"
        dags.mkdir(parents=True)
        # The example file, byte for byte, alone in the dags folder (faster parsing).
        shutil.copy(REPO / "dags_examples" / "bulk_export_example.py", dags)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                # One DAG, one task at a time: 32 idle LocalExecutor workers only slow a
                # 2-core machine down.
                "AIRFLOW__CORE__PARALLELISM": "4",
                **extra_env,
            }
        )
        self.log_path = home / "standalone.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            ["airflow", "standalone"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
        self._headers: dict[str, str] = {}

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        if not self._headers:
            token = requests.get(f"{self.api}/auth/token", timeout=60).json()["access_token"]
            self._headers = {"Authorization": f"Bearer {token}"}
        return requests.request(
            method, f"{self.api}/api/v2/{path}", headers=self._headers, timeout=60, **kwargs
        )

    def wait_for_dag(self, dag_id: str, deadline: float) -> None:
        import requests

        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_tail()
            try:
                if self.request("GET", f"dags/{dag_id}").status_code == 200:
                    return
            except requests.RequestException:
                pass  # the API server is still starting
            time.sleep(0.5)
        raise AssertionError(f"{dag_id} never appeared:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


@pytest.mark.timeout(600)
def test_nightly_dag_under_a_real_scheduler_and_triggerer(fhir: BulkEnv, tmp_path: Path) -> None:
    dag_id = "backendauth_bulk_export"
    # Every status poll answers 202 until the test has seen the task deferred: the wait is
    # held open by the test, not by a duration a loaded machine may outrun.
    hold = fhir.sb.faults.add("/fhir/_bulk/jobs/", status=202, retry_after=1, times=None)
    output = tmp_path / "output"
    connection = json.dumps(
        {
            "conn_type": "backendauth",
            "host": fhir.sb.fhir_base,
            "login": fhir.client_id,
            "password": fhir.key.private_pem,
            "extra": {"scope": "system/*.rs"},
        }
    )
    deadline = (
        time.monotonic() + 480
    )  # generous: a loaded 2-core CI machine starts five Airflow processes
    airflow = Standalone(
        tmp_path / "airflow-home",
        {
            "AIRFLOW_CONN_BACKENDAUTH_FHIR": connection,
            "BACKENDAUTH_OUTPUT": output.as_uri(),
            "BACKENDAUTH_BULK_GROUP": "g1",
        },
    )
    try:
        airflow.wait_for_dag(dag_id, deadline)
        assert airflow.request("PATCH", f"dags/{dag_id}", json={"is_paused": False}).ok
        created = airflow.request("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert created.status_code == 200, created.text
        seen_states: set[str] = set()
        export_tries: dict[str, int] = {}
        while True:
            assert time.monotonic() < deadline, f"runs did not finish:\n{airflow.log_tail()}"
            runs = airflow.request("GET", f"dags/{dag_id}/dagRuns").json()["dag_runs"]
            for run in runs:
                tis = airflow.request(
                    "GET", f"dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances"
                ).json()["task_instances"]
                seen_states |= {ti["state"] for ti in tis if ti["task_id"] == "export"}
                for ti in tis:
                    if ti["task_id"] == "export":
                        export_tries[run["dag_run_id"]] = int(ti.get("try_number") or 1)
            if "deferred" in seen_states:
                fhir.sb.faults.remove(hold)  # let the exports complete
            # Unpausing may add a scheduled run besides ours: wait for all of them.
            if runs and all(r["state"] in ("success", "failed") for r in runs):
                break
            time.sleep(0.5)
    finally:
        airflow.stop()
    assert [r["state"] for r in runs] == ["success"] * len(runs), airflow.log_tail()
    assert "deferred" in seen_states  # the wait ran in the triggerer, not a worker slot

    group = output / "bulk" / "group-g1"
    folders = run_dirs(group)
    assert len(folders) == len(runs)
    assert all((f / "manifest.json").exists() for f in folders)
    full = [f for f in folders if (f / "Patient.000.ndjson").exists()]
    assert len(full) == 1  # the first run exported everything...
    assert {p.name.split(".")[0] for p in full[0].glob("*.*.ndjson")} == TYPES
    assert len(ndjson_lines(full[0] / "Patient.000.ndjson")) == 10
    if len(folders) > 1:  # ...a later one only what changed since (since="auto")
        later = next(f for f in folders if f not in full)
        assert "_since=" in json.loads((later / "manifest.json").read_text())["request"]
    stats = fhir.sb.stats
    # One kick-off per run. Only when Airflow itself ran an export task again (a worker it
    # lost on an overloaded machine, a success it could not record) may a later try start
    # one more export: never more kick-offs than tries, and every export is cleaned up.
    assert len(runs) <= stats["bulk_kickoffs"] <= sum(export_tries.values()), export_tries
    if all(tries == 1 for tries in export_tries.values()):
        assert stats["bulk_kickoffs"] == len(runs)
    assert stats["bulk_cancels"] == stats["bulk_kickoffs"]
