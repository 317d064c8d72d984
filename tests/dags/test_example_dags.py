"""The example DAGs, run with real Airflow (``dag.test()``) against the sandbox.

Connections come from ``AIRFLOW_CONN_*`` environment variables pointing at the sandbox, as a
user would set them up; nothing in the DAG files changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.conftest import REPO, connection_json
from tests.support.clients import register, vendor_extra

pytestmark = pytest.mark.e2e

SEED_VENDORS = ("mydatahelps", "koppeltaal", "helseid", "redox", "nhs_england")
LOGICAL_DATE = pendulum.datetime(2024, 6, 1, tz="UTC")


@pytest.fixture
def connect(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Register a client for ``vendor`` and expose it as connection ``conn_id``."""

    def make(conn_id: str, vendor: str, **extra: Any) -> str:
        client_id, key = register(sandbox, vendor)
        host = (
            f"{sandbox.url}/api/v1/administration" if vendor == "mydatahelps" else sandbox.fhir_base
        )
        if vendor == "helseid":
            extra.setdefault("scope", "nhn:sandbox/read")  # HelseID grants nhn: scopes only
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            connection_json(
                host=host,
                login=client_id,
                password=key.private_pem,
                **{**vendor_extra(sandbox, vendor), **extra},
            ),
        )
        return client_id

    return make


@pytest.fixture(scope="module")
def dagbag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    return bag


def run(dagbag: Any, dag_id: str, **conf: Any) -> Any:
    dag = dagbag.get_dag(dag_id)
    assert dag is not None, dag_id
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf=conf or None)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    return dag_run


def ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_example_dag_parses(dagbag: Any) -> None:
    expected = {
        "backendauth_fhir_search",
        "backendauth_mydatahelps_participants",
        *(f"backendauth_vendor_{v}" for v in SEED_VENDORS),
    }
    assert expected <= set(dagbag.dag_ids)


def test_fhir_search_example(
    dagbag: Any, connect: Callable[..., str], sandbox: Any, tmp_path: Path
) -> None:
    connect("backendauth_fhir", "smart")
    dag_run = run(dagbag, "backendauth_fhir_search", output=tmp_path.as_uri())
    start, end = dag_run.data_interval_start, dag_run.data_interval_end
    assert (start.isoformat(), end.isoformat()) == (
        "2024-05-01T00:00:00+00:00",
        "2024-06-01T00:00:00+00:00",
    )
    day = tmp_path / "fhir_search" / "2024-05-01"
    assert sorted(p.name for p in day.iterdir()) == [
        "Observation.included.ndjson",
        "Observation.ndjson",
        "Patient.ndjson",
    ]
    patients = ndjson(day / "Patient.ndjson")
    observations = ndjson(day / "Observation.ndjson")
    included = ndjson(day / "Observation.included.ndjson")
    assert observations, "May 2024 should hold some Observations"
    for resource in patients + observations:
        # Only what was updated in the data interval [2024-05-01, 2024-06-01).
        assert "2024-05-01" <= resource["meta"]["lastUpdated"] < "2024-06-01"
    assert {r["resourceType"] for r in included} == {"Patient"}
    referenced = {o["subject"]["reference"].split("/")[-1] for o in observations}
    assert {p["id"] for p in included} == referenced


def test_mydatahelps_participants_example(
    dagbag: Any, connect: Callable[..., str], tmp_path: Path
) -> None:
    connect("backendauth_mydatahelps", "mydatahelps")
    dag_run = run(
        dagbag, "backendauth_mydatahelps_participants", output=tmp_path.as_uri(), page_size=6
    )
    target = tmp_path / "mydatahelps" / "2024-06-01" / "participants.ndjson"
    participants = ndjson(target)
    assert len(participants) == 20 == len({p["id"] for p in participants})
    assert sorted(p.name for p in target.parent.iterdir()) == ["participants.ndjson"]
    count = dag_run.get_task_instance("count_participants").xcom_pull(task_ids="count_participants")
    assert count == {"pages": 4, "participants": 20}


@pytest.mark.parametrize("vendor", SEED_VENDORS)
def test_vendor_example(
    dagbag: Any, connect: Callable[..., str], sandbox: Any, vendor: str
) -> None:
    client_id = connect(f"backendauth_{vendor}", vendor)
    run(dagbag, f"backendauth_vendor_{vendor}")
    assert sandbox.stats["token_requests_by_client"][client_id] == 1
