"""DAGs for tests/dags/test_openlineage.py: an export and a search that succeed, and a search
the server refuses (``$BACKENDAUTH_OUTPUT`` is the output root)."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_backendauth.operators.bulk import FhirBulkExportOperator
from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

CONN_ID = "backendauth_fhir"
OUTPUT = os.environ.get("BACKENDAUTH_OUTPUT", "/tmp/backendauth-lineage").rstrip("/")
TRIGGERED = {"schedule": None, "start_date": pendulum.datetime(2024, 1, 1, tz="UTC")}

with DAG(dag_id="lineage_export", **TRIGGERED):
    FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=CONN_ID,
        level="group",
        group_id="g1",
        types=["Patient", "Observation"],
        destination=OUTPUT + "/bulk/{{ ds }}",
        deferrable=False,
        poll_interval_min=0.05,
        poll_interval_max=0.2,
    )
    FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=CONN_ID,
        resource_type="Observation",
        search_params={"_include": "Observation:subject"},
        destination=OUTPUT + "/search/{{ ds }}",
    )

with DAG(dag_id="lineage_failure", **TRIGGERED):
    FhirSearchOperator(
        task_id="refused",
        backendauth_conn_id=CONN_ID,
        resource_type="Observation",
        search_params={"no-such-parameter": "x"},
        destination=OUTPUT + "/refused",
    )
