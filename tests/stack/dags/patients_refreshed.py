"""Scheduled on the Asset the nightly Group export emits (tests/stack/test_stack_e2e.py): runs
after each export of the group's Patients, and fails unless the triggering event says how
many were exported, when, and where the run put them. ``$BACKENDAUTH_FHIR_BASE`` is the FHIR
server's base URL (the connection's host)."""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

from airflow_provider_backendauth.core.lineage import fhir_asset_uri

PATIENTS = Asset(
    fhir_asset_uri(
        os.environ.get("BACKENDAUTH_FHIR_BASE", "https://fhir.invalid/r4"),
        "Patient",
        group_id="all",
    )
)

with DAG(
    dag_id="patients_refreshed",
    schedule=[PATIENTS],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["backendauth", "stack"],
):

    @task
    def check_event(triggering_asset_events: Any = None) -> dict[str, Any]:
        (event,) = triggering_asset_events[PATIENTS]
        extra = dict(event.extra)
        if not (extra.get("resources", 0) > 0 and extra.get("transactionTime")):
            raise ValueError(f"the export's event lacks its count or transactionTime: {extra}")
        if not str(extra.get("path", "")).startswith("s3://"):
            raise ValueError(f"the event does not say where the files are: {extra}")
        return extra

    check_event()
