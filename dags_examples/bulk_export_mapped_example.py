"""A very large FHIR Bulk Data export, downloaded by many workers (dynamic task mapping).

``export`` kicks off a system-level ``$export`` and waits in the triggerer; instead of
downloading, it saves ``manifest.json`` and returns the list of files. ``download`` is
mapped over that list (one task per file, spread over the Celery/Kubernetes workers; each
streams its file to a temporary name, verifies the line count and renames it; a retried
task skips a file already complete). ``finalize`` then checks that every file arrived,
checks the error files, deletes the job on the server and records ``transactionTime`` (for
``since="auto"``); it runs even when downloads failed, to cancel the export on the server.

Files land in ``{output}/bulk/system/{run}/``. Connection ``backendauth_fhir``: see
``bulk_export_example.py``. Output root: the ``output`` param (``$BACKENDAUTH_OUTPUT`` or
``$AIRFLOW_HOME/backendauth-output``).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_backendauth.operators.bulk import (
    FhirBulkDownloadOperator,
    FhirBulkExportOperator,
    FhirBulkFinalizeOperator,
)

CONN_ID = "backendauth_fhir"


def _default_output() -> str:
    configured = os.environ.get("BACKENDAUTH_OUTPUT", "").strip()
    if configured:
        return configured.rstrip("/")
    home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser().resolve()
    return (home / "backendauth-output").as_uri()


def run_folder(run_id: str) -> str:
    """A folder name for a run: its run id with only path-safe characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


STATE_DIR = "{{ params.output }}/bulk/system"
DESTINATION = STATE_DIR + "/{{ run_folder(run_id) }}"

with DAG(
    dag_id="backendauth_bulk_export_mapped",
    description="System $export with one mapped download task per file",
    schedule="@weekly",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    user_defined_macros={"run_folder": run_folder},
    params={
        "output": Param(
            _default_output(),
            type="string",
            description="Output root: a local path or URL (file://, s3://conn@bucket/...).",
        ),
    },
    tags=["backendauth", "fhir", "bulk", "example"],
    doc_md=__doc__,
):
    export = FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=CONN_ID,
        level="system",
        since="auto",
        download=False,  # return the file list; the mapped tasks download
        destination=DESTINATION,
        state_dir=STATE_DIR,
        deferrable=True,
        poll_interval_min=2,
        poll_interval_max=1800,
        max_wait=timedelta(days=3),
        retries=2,
    )
    download = FhirBulkDownloadOperator.partial(
        task_id="download",
        backendauth_conn_id=CONN_ID,
        destination=DESTINATION,
        state_dir=STATE_DIR,
        retries=3,
        retry_delay=timedelta(seconds=30),
        map_index_template="{{ task.file['name'] }}",  # the UI lists mapped tasks by file
    ).expand(file=export.output)
    finalize = FhirBulkFinalizeOperator(
        task_id="finalize",
        export_task_id="export",
        backendauth_conn_id=CONN_ID,
        destination=DESTINATION,
        state_dir=STATE_DIR,
    )
    download >> finalize
