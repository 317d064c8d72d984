"""Nightly incremental FHIR Bulk Data export of a Group to object storage.

Each run asks the server for what changed since the previous successful run
(``since="auto"``: the ``transactionTime`` of the last export of this connection, group and
types, kept in ``{output}/bulk/group-{group}/_bulk_state/``), waits in the triggerer
(``deferrable=True``: an export taking hours holds no worker slot), then downloads the
NDJSON files in parallel to::

    {output}/bulk/group-{group}/{run}/
        Patient.000.ndjson, Observation.000.ndjson, ...   (output)
        error/OperationOutcome.000.ndjson                 (the server's error file, if any)
        deleted/Bundle.000.ndjson                         (deletions since the last run)
        manifest.json

The first run exports everything. A retried run continues the same export (no second
kick-off) and skips the files already complete. The job is deleted on the server after the
download, and cancelled when the task is killed or fails for good.

Then ``tables`` flattens the files with the ready SQL-on-FHIR views (US Core Patient,
Observation, Condition, Encounter) into Delta Lake tables (needs the ``tables`` extra)::

    {output}/tables/group-{group}/patient_demographics/, observation/, condition/, encounter/

The first run writes them; each later run merges what changed since (and removes what was
deleted), so the tables always equal a full export's (docs/tables.md). Query them with DuckDB,
Spark or polars.

Connection ``backendauth_fhir`` (any SMART Backend Services server with Bulk Data)::

    export AIRFLOW_CONN_BACKENDAUTH_FHIR='{"conn_type": "backendauth",
      "host": "https://fhir.example.org/api/FHIR/R4",
      "login": "<client id>",
      "password": "-----BEGIN PRIVATE KEY-----\\n...",
      "extra": {"profile": "smart", "scope": "system/*.rs"}}'

Against the bundled sandbox, point ``host`` at ``sb.fhir_base`` (its groups: ``all``,
``g1``, ``g2``). Output root: the ``output`` param, defaulting to ``$BACKENDAUTH_OUTPUT`` or
``$AIRFLOW_HOME/backendauth-output`` (a local path or a URL such as
``s3://aws_default@bucket/fhir``). The group: the ``group_id`` param, defaulting to
``$BACKENDAUTH_BULK_GROUP`` or ``all``.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_backendauth.operators.bulk import FhirBulkExportOperator
from airflow_provider_backendauth.operators.views import FhirViewTableOperator

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


# The incremental watermark and resume state live at a stable place per group; each run's
# files go to their own folder below it.
STATE_DIR = "{{ params.output }}/bulk/group-{{ params.group_id }}"
DESTINATION = STATE_DIR + "/{{ run_folder(run_id) }}"
TABLES = "{{ params.output }}/tables/group-{{ params.group_id }}"
READY_VIEWS = ["patient_demographics", "observation", "condition", "encounter"]

with DAG(
    dag_id="backendauth_bulk_export",
    description="Nightly incremental Group $export -> NDJSON files in object storage",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one export at a time: servers often allow one per client
    user_defined_macros={"run_folder": run_folder},
    params={
        "output": Param(
            _default_output(),
            type="string",
            description="Output root: a local path or URL (file://, s3://conn@bucket/...).",
        ),
        "group_id": Param(
            os.environ.get("BACKENDAUTH_BULK_GROUP", "all"),
            type="string",
            description="The FHIR Group to export.",
        ),
        "types": Param(
            "",
            type="string",
            description="Comma-separated resource types (_type); empty: everything.",
        ),
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["backendauth", "fhir", "bulk", "example"],
    doc_md=__doc__,
):
    export = FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=CONN_ID,
        level="group",
        group_id="{{ params.group_id }}",
        types="{{ params.types }}",
        since="auto",
        destination=DESTINATION,
        state_dir=STATE_DIR,
        deferrable=True,
        poll_interval_min=2,
        poll_interval_max=1800,
        max_wait=timedelta(days=2),
        parallel_downloads=4,
    )

    @task
    def report(summary: dict[str, Any]) -> None:
        """Log what arrived (the summary holds counts and file names, no data)."""
        for resource_type, files in sorted(summary["output"].items()):
            print(f"{resource_type}: {files['count']} resources in {len(files['files'])} files")
        print(f"deleted: {summary['deleted']['count']}, errors: {summary['error']['count']}")
        print(f"next run exports changes since {summary['transactionTime']}")

    report(export.output)

    # One Delta table per view; merged (incremental="auto") when the export used _since.
    FhirViewTableOperator(
        task_id="tables", export=export.output, views=READY_VIEWS, destination=TABLES
    )
