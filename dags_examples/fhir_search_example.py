"""Monthly incremental FHIR extract: Patients and Observations updated in the data interval.

Each run covers the month before it (``airflow dags test backendauth_fhir_search 2024-06-01``
covers May 2024): it searches ``_lastUpdated`` within
``[data_interval_start, data_interval_end)`` and writes NDJSON files (one resource per line) under
``{output}/fhir_search/{data_interval_start | ds}/``:

- ``Patient.ndjson``
- ``Observation.ndjson`` and ``Observation.included.ndjson`` (the Patients the Observations
  refer to, fetched with ``_include=Observation:patient``).

Files appear only when their search completed; a failed run leaves no complete-looking file.

Connection ``backendauth_fhir`` (any SMART Backend Services server), e.g.::

    export AIRFLOW_CONN_BACKENDAUTH_FHIR='{"conn_type": "backendauth",
      "host": "https://fhir.example.org/api/FHIR/R4",
      "login": "<client id>",
      "password": "-----BEGIN PRIVATE KEY-----\\n...",
      "extra": {"profile": "smart", "scope": "system/Patient.rs system/Observation.rs"}}'

Against the bundled sandbox, point ``host`` at ``sb.fhir_base``. Output root: the ``output``
param, defaulting to ``$BACKENDAUTH_OUTPUT`` or ``$AIRFLOW_HOME/backendauth-output`` (a local
path or a URL such as ``s3://aws_default@bucket/fhir``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

CONN_ID = "backendauth_fhir"


def _default_output() -> str:
    configured = os.environ.get("BACKENDAUTH_OUTPUT", "").strip()
    if configured:
        return configured.rstrip("/")
    home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser().resolve()
    return (home / "backendauth-output").as_uri()


# A list value repeats the parameter: _lastUpdated=ge...&_lastUpdated=lt... (an AND).
UPDATED_IN_INTERVAL = {
    "_lastUpdated": ["ge{{ data_interval_start | ts }}", "lt{{ data_interval_end | ts }}"],
}
DESTINATION = "{{ params.output }}/fhir_search/{{ data_interval_start | ds }}"

with DAG(
    dag_id="backendauth_fhir_search",
    description="Patients and Observations updated in the data interval -> NDJSON",
    # A data-interval timetable: each run covers the month before it (Airflow 3's plain
    # cron schedules give runs a zero-length interval).
    schedule=CronDataIntervalTimetable("@monthly", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "output": Param(
            _default_output(),
            type="string",
            description="Output root: a local path or URL (file://, s3://conn@bucket/...).",
        )
    },
    tags=["backendauth", "fhir", "example"],
    doc_md=__doc__,
):
    patients = FhirSearchOperator(
        task_id="patients",
        backendauth_conn_id=CONN_ID,
        resource_type="Patient",
        search_params=UPDATED_IN_INTERVAL,
        count=50,
        destination=DESTINATION,
    )
    observations = FhirSearchOperator(
        task_id="observations",
        backendauth_conn_id=CONN_ID,
        resource_type="Observation",
        search_params={**UPDATED_IN_INTERVAL, "_include": "Observation:patient"},
        count=50,
        include_mode="separate",
        destination=DESTINATION,
    )
    # Independent searches; run them one after the other to be gentle with the server.
    patients >> observations
