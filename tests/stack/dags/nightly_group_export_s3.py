"""The nightly incremental Group export into S3, downloads mapped over the Celery workers.

What tests/stack/test_stack_e2e.py runs on the stack of scripts/stack.py: the README's
object-storage example (``s3://aws_default@bucket/...``, Group export, ``since="auto"``,
deferrable) with the mapped downloads of docs/bulk-export.md, then one Delta table per ready
view under ``tables/``, mapped per resource type (one task per table). ``$BACKENDAUTH_OUTPUT``
is the output root, e.g. ``s3://aws_default@bucket``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_backendauth.operators.bulk import (
    FhirBulkDownloadOperator,
    FhirBulkExportOperator,
    FhirBulkFinalizeOperator,
)
from airflow_provider_backendauth.operators.views import FhirViewTableOperator

CONN_ID = "backendauth_fhir"
OUTPUT = os.environ.get("BACKENDAUTH_OUTPUT", "s3://aws_default@bucket").rstrip("/")
STATE_DIR = f"{OUTPUT}/bulk"
# One folder per night: the run's logical date (a manual run without one: when it ran).
DESTINATION = STATE_DIR + "/{{ (logical_date or dag_run.run_after).strftime('%Y-%m-%d') }}"

with DAG(
    dag_id="nightly_group_export_s3",
    schedule=None,  # the test triggers it; a deployment would say "@daily"
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["backendauth", "bulk", "stack"],
):
    export = FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=CONN_ID,
        level="group",
        group_id="all",
        since="auto",
        download=False,
        destination=DESTINATION,
        state_dir=STATE_DIR,
        deferrable=True,
        poll_interval_min=1,
        poll_interval_max=2,
        retries=2,
        retry_delay=timedelta(seconds=1),
    )
    download = FhirBulkDownloadOperator.partial(
        task_id="download",
        backendauth_conn_id=CONN_ID,
        destination=DESTINATION,
        state_dir=STATE_DIR,
        retries=2,
        retry_delay=timedelta(seconds=1),
        map_index_template="{{ task.file['name'] }}",
    ).expand(file=export.output)
    finalize = FhirBulkFinalizeOperator(
        task_id="finalize",
        export_task_id="export",
        backendauth_conn_id=CONN_ID,
        destination=DESTINATION,
        state_dir=STATE_DIR,
    )
    download >> finalize
    # The finalize summary says where the files are and whether _since was used.
    FhirViewTableOperator.partial(
        task_id="tables",
        export=finalize.output,
        views=["patient_demographics", "observation", "condition", "encounter"],
        destination=f"{OUTPUT}/tables",
        retries=2,
        retry_delay=timedelta(seconds=1),
    ).expand(resource_types=[["Patient"], ["Observation"], ["Condition"], ["Encounter"]])
