"""FHIR Bulk Data export operators.

- ``FhirBulkExportOperator``: kick-off (or resume), wait (in the triggerer when deferrable),
  then either download every file and return a summary, or (``download=False``) return the
  list of files for mapped downloads.
- ``FhirBulkDownloadOperator``: downloads one file; map it over the export's output with
  ``.partial(...).expand(file=export.output)`` to spread downloads over the workers.
- ``FhirBulkFinalizeOperator``: after the mapped downloads, checks that every file is there,
  checks the error files, deletes the job on the server and records ``transactionTime``.

State (status URL for resuming, per-file completion, the ``since="auto"`` watermark) is kept
as JSON files in object storage under ``{state_dir}/_bulk_state/`` (``state_dir`` defaults
to the destination): durable, shared by every worker, and it travels with the data. When the
destination changes per run (``.../{{ ds }}/``), point ``state_dir`` at a stable parent so
that ``since="auto"`` finds the previous run's watermark.

The heavy lifting lives in ``airflow_provider_backendauth.core.bulk.job`` (no Airflow imports);
these classes are thin adapters, and importing this module imports neither requests nor
aiohttp.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth._compat import conf
from airflow_provider_backendauth.core.bulk.compress import check_compression
from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.operators._common import (
    as_task_failure,
)
from airflow_provider_backendauth.operators._lineage import declare_outlet, emit_export_events

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_backendauth.core.bulk.job import BulkExportJob
    from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
    from airflow_provider_backendauth.core.bulk.request import BulkExportRequest


from airflow_provider_backendauth.operators._bulk_base import (
    AUTO,
    DEFAULT_CONN_ID,
    _BulkBase,
    _fails_for_good,
    _seconds,
)

_POLL = PollSettings()  # the defaults, shown in the signature


class FhirBulkExportOperator(_BulkBase):
    """Run a FHIR Bulk Data ``$export`` and store its files in object storage.

    Kick-off at system, patient or group level (GET, or POST with a ``Parameters`` body),
    wait (deferrable: in the triggerer, holding no worker slot), then download the manifest's
    ``output``, ``error`` and ``deleted`` files in parallel to ``destination`` with
    ``manifest.json`` beside them, and return a summary to XCom::

        {"transactionTime": ..., "destination": ..., "manifest": "manifest.json",
         "output": {"Patient": {"files": ["Patient.000.ndjson"], "count": 20, "bytes": ...}},
         "error": {"files": 1, "count": 2, "errors": 0, "warnings": 2},
         "deleted": {"files": 0, "count": 0}, "files": 5, "bytes": ..., "resumed_files": 0,
         "since": None}

    (``since``: the ``_since`` the export used, None for a full export.)

    A retried task (or one whose worker died) continues the same export: the status URL is
    saved durably right after the kick-off, and files already complete are not downloaded
    again.

    Args:
        destination: folder for the files (``file://``, ``s3://conn@bucket/...``, ``gs://``
            ..., or a local path). Templated.
        backendauth_conn_id: the ``backendauth`` connection (FHIR base URL = host).
        level: ``system``, ``patient`` or ``group``.
        group_id: the Group id for ``level="group"``. Templated.
        types: ``_type`` (list or comma-separated). Templated.
        since: ``_since`` (instant or datetime), or ``"auto"``: the ``transactionTime`` of
            the last successful export with the same connection, level, group and types
            (none yet: a full export). Templated.
        until: ``_until`` (Bulk Data 3.0). Templated.
        elements: ``_elements``. Templated.
        type_filters: ``_typeFilter`` queries (list; a string is one filter). Templated.
        patients: ``patient`` references or ids (sent with POST). Templated.
        include_associated_data: ``includeAssociatedData``. Templated.
        output_format: ``_outputFormat``. Templated.
        organize_output_by: ``organizeOutputBy`` (Bulk Data 3.0), e.g. ``"Patient"``: files
            hold one block per patient, each led by a header line (not counted as a resource).
            Templated.
        allow_partial_manifests: send ``allowPartialManifests=true`` (Bulk Data 3.0): the
            server may page its manifest. Pages are followed (``next`` links to allowed
            origins only) and downloaded one after the other, whether asked for or not.
        method: ``GET`` or ``POST``; default POST when ``patients`` are given, else GET.
        extra_params: more kick-off parameters (vendor extensions). Templated.
        state_dir: where the durable state lives (default: ``destination``). Templated.
        download: False returns the list of files for mapped ``FhirBulkDownloadOperator``
            tasks instead of downloading them here.
        parallel_downloads: concurrent downloads (halved while the server answers 429).
        compression: ``"gzip"`` stores every file as ``.ndjson.gz`` (about 15x smaller for
            FHIR NDJSON; the fastest installed deflater: isal, zlib-ng, zlib), ``None``
            (default) as plain ``.ndjson``. Counts and completeness checks are those of the
            decoded NDJSON either way; mapped downloads and retries keep the kick-off's
            choice.
        download_retries: retries per file (network errors, 5xx, 429, short files).
        check_counts: fail a file whose line count differs from the manifest's ``count``.
        tolerate_errors: accept ``fatal``/``error`` OperationOutcomes in the error files
            (they are logged); by default they fail the task after the download.
        cleanup: ``DELETE`` the job on the server after a successful download (some servers
            allow one export per client at a time).
        cancel_on_failure: ``DELETE`` the job when the task is killed or fails for good.
        poll_interval_min, poll_interval_max: the first wait between status polls when
            the server sends no ``Retry-After``, and the longest wait. A ``Retry-After``
            (seconds or HTTP-date) is honoured down to 1 s and up to ``poll_interval_max``.
        max_wait: give up when the export has not completed this long after the kick-off
            (default: 7 days; polling is always bounded).
        kickoff_busy_budget: seconds to keep retrying a kick-off answered 429 (another
            export running) before failing.
        max_transient_errors: consecutive 5xx/transient errors tolerated while polling.
        max_poll_errors: such errors tolerated in all while waiting, whatever answers lie
            between them (a status URL flapping 500/202 fails the wait; default 100).
            The six poll values are validated together as ``PollSettings`` (bounds in
            ``core/bulk/poll_settings.py``): absurd values fail when the DAG is parsed.
        chunk_size: download chunk in bytes (memory use ~ parallel_downloads * chunk_size).
        max_file_bytes: the most bytes one downloaded file may decode to (default 64 GiB).
        max_compression_ratio: the most decoded bytes per byte received (default 200; a
            decompression bomb is ~1000).
        deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = (
        "destination",
        "state_dir",
        "group_id",
        "types",
        "since",
        "until",
        "elements",
        "type_filters",
        "patients",
        "include_associated_data",
        "output_format",
        "organize_output_by",
        "extra_params",
    )
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        destination: str | ObjectStoragePath,
        backendauth_conn_id: str = DEFAULT_CONN_ID,
        level: str = "system",
        group_id: str | None = None,
        types: str | Sequence[str] | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        elements: str | Sequence[str] | None = None,
        type_filters: str | Sequence[str] | None = None,
        patients: str | Sequence[str] | None = None,
        include_associated_data: str | Sequence[str] | None = None,
        output_format: str | None = None,
        organize_output_by: str | None = None,
        allow_partial_manifests: bool = False,
        method: str | None = None,
        extra_params: Mapping[str, str | Sequence[str]] | None = None,
        state_dir: str | ObjectStoragePath | None = None,
        download: bool = True,
        parallel_downloads: int = 4,
        compression: str | None = None,
        download_retries: int = 5,
        check_counts: bool = True,
        tolerate_errors: bool = False,
        cleanup: bool = True,
        cancel_on_failure: bool = True,
        poll_interval_min: float = _POLL.poll_interval_min,
        poll_interval_max: float = _POLL.poll_interval_max,
        max_wait: timedelta | float | None = None,
        kickoff_busy_budget: float = _POLL.kickoff_busy_budget,
        max_transient_errors: int = _POLL.max_transient_errors,
        max_poll_errors: int = _POLL.max_poll_errors,
        chunk_size: int = 1 << 20,
        max_file_bytes: int = 64 * 1024**3,
        max_compression_ratio: float = 200.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            destination=destination,
            backendauth_conn_id=backendauth_conn_id,
            state_dir=state_dir,
            **kwargs,
        )
        if level not in ("system", "patient", "group"):
            raise ConfigurationError(f"level must be 'system', 'patient' or 'group', not {level!r}")
        if parallel_downloads < 1:
            raise ConfigurationError("parallel_downloads must be >= 1")
        self.poll_settings = PollSettings(
            poll_interval_min=poll_interval_min,
            poll_interval_max=poll_interval_max,
            max_wait=_seconds(max_wait),
            kickoff_busy_budget=kickoff_busy_budget,
            max_transient_errors=max_transient_errors,
            max_poll_errors=max_poll_errors,
        )
        self.level = level
        self.group_id = group_id
        self.types = types
        self.since = since
        self.until = until
        self.elements = elements
        self.type_filters = type_filters
        self.patients = patients
        self.include_associated_data = include_associated_data
        self.output_format = output_format
        self.organize_output_by = organize_output_by
        self.allow_partial_manifests = allow_partial_manifests
        self.method = method
        self.extra_params = extra_params
        self.download = download
        self.parallel_downloads = parallel_downloads
        self.compression = check_compression(compression)
        self.download_retries = download_retries
        self.check_counts = check_counts
        self.tolerate_errors = tolerate_errors
        self.cleanup = cleanup
        self.cancel_on_failure = cancel_on_failure
        self.chunk_size = chunk_size
        self.max_file_bytes = max_file_bytes
        self.max_compression_ratio = max_compression_ratio
        self.deferrable = deferrable
        if download:  # with download=False, FhirBulkFinalizeOperator emits the Asset events
            declare_outlet(self, backendauth_conn_id)

    # -- building blocks -------------------------------------------------------------

    def _job_for(self, context: Context) -> BulkExportJob:
        from airflow_provider_backendauth.core.retry import RetryPolicy

        return self._build_job(
            self._job_key(context, self.task_id),
            client_options={"poll_settings": self.poll_settings},
            downloader_options={
                "parallel": self.parallel_downloads,
                "retry": RetryPolicy(
                    attempts=self.download_retries + 1,
                    initial_wait=1.0,
                    max_wait=30.0,
                    max_retry_after=300.0,
                ),
                "chunk_size": self.chunk_size,
                "check_counts": self.check_counts,
                "max_file_bytes": self.max_file_bytes,
                "max_compression_ratio": self.max_compression_ratio,
            },
            compression=self.compression,
        )

    def _since_key(self, job: BulkExportJob) -> str:
        from airflow_provider_backendauth.core.bulk.request import as_list
        from airflow_provider_backendauth.core.bulk.state import export_key

        return export_key(
            connection=self.backendauth_conn_id,
            base_url=job.client.base_url,
            level=self.level,
            group_id=self.group_id,
            types=as_list(self.types),
        )

    def _request(self, job: BulkExportJob, since_key: str) -> BulkExportRequest:
        from airflow_provider_backendauth.core.bulk.request import BulkExportRequest

        since = self.since
        if isinstance(since, str) and since.strip().lower() == AUTO:
            since = job.store.load_since(since_key)
            if since:
                self.log.info("since='auto': exporting changes since %s", since)
            else:
                self.log.info("since='auto': no earlier successful export; exporting everything")
        return BulkExportRequest.create(
            self.level,
            group_id=self.group_id,
            types=self.types,
            since=since,
            until=self.until,
            elements=self.elements,
            type_filters=self.type_filters,
            patients=self.patients,
            include_associated_data=self.include_associated_data,
            output_format=self.output_format,
            method=self.method,
            extra_params=self.extra_params,
            organize_output_by=self.organize_output_by,
            allow_partial_manifests=self.allow_partial_manifests,
        )

    def _deadline(self, job: BulkExportJob) -> float | None:
        """``max_wait`` after the kick-off (7 days when unset): every try and the trigger
        count from the same moment, so retries never extend the wait."""
        if job.record is None:
            return None
        started = datetime.fromisoformat(job.record.kicked_off_at).timestamp()
        return self.poll_settings.deadline_after(started)

    # -- execution -------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        job = self._job_for(context)
        try:
            since_key = self._since_key(job)
            request = self._request(job, since_key)
            job.start(
                request,
                since_key=since_key,
                description={
                    "connection": self.backendauth_conn_id,
                    "level": self.level,
                    "group_id": self.group_id,
                    "types": list(request.types),
                },
            )
            if not job.needs_wait:
                return self._after_manifest(context, job, job.local_manifest())
            if self.deferrable:
                self._defer(job)
            manifest = job.wait(deadline=self._deadline(job))
            job.accept_manifest(manifest)
            return self._after_manifest(context, job, manifest)
        except Exception as exc:
            failure = as_task_failure(exc)
            self._on_failure(context, job, failure)
            if failure is exc:
                raise
            raise failure from exc

    def _requested_inputs(self) -> list[Any]:
        from airflow_provider_backendauth.core.bulk.request import as_list
        from airflow_provider_backendauth.operators._lineage import fhir_input

        types = as_list(self.types)
        if not types:
            return []  # the server decides: known when the export completes
        try:
            base_url = self._base_url(self._hook())
        except Exception:
            return []  # lineage never fails a task; the task itself reports the connection
        group_id = self.group_id if self.level == "group" else None
        return [fhir_input(base_url, kind, group_id) for kind in types]

    def _defer(self, job: BulkExportJob) -> None:
        from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger

        self.log.info("Deferring: the triggerer waits for the export")
        self.defer(
            trigger=BulkExportTrigger(
                self.backendauth_conn_id,
                job.status_url,
                poll_settings=self.poll_settings,
                deadline=self._deadline(job),
                cancel_on_kill=self.cancel_on_failure,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Resumes after the trigger fired: download (or hand over) the files."""
        from airflow_provider_backendauth.core.bulk.events import (
            error_from_event,
            progress_trail,
        )
        from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
        from airflow_provider_backendauth.core.errors import BulkExportError

        job = self._job_for(context)
        try:
            if job.load() is None:
                raise BulkExportError(
                    f"The export state of this task is missing from {job.store}; was state_dir "
                    "changed or deleted while the export ran?"
                )
            event = dict(event or {})
            if event.get("progress"):  # logged by the triggerer; the task log shows it too
                self.log.info("The server's last progress report: %s", event["progress"])
            if job.needs_wait:  # the triggerer writes no log: its 202s arrive in the event
                elog = job.export_log
                for at, seen in progress_trail(event):
                    elog.status_progress(seen.x_progress, seen.retry_after, at=at)
            if event.get("status") != "complete":
                # The exception the wait would have raised in a worker (same class and flags).
                raise error_from_event(event)
            if not job.needs_wait:  # a retry after the manifest was saved
                return self._after_manifest(context, job, job.local_manifest())
            manifest = (
                BulkManifest.from_json(event["manifest"], expires=event.get("expires"))
                if event.get("manifest")
                else job.client.fetch_manifest(job.status_url)
            )
            job.accept_manifest(manifest)
            return self._after_manifest(context, job, manifest)
        except Exception as exc:
            failure = as_task_failure(exc)
            self._on_failure(context, job, failure)
            if failure is exc:
                raise
            raise failure from exc

    def _after_manifest(self, context: Context, job: BulkExportJob, manifest: BulkManifest) -> Any:
        if not self.download:
            files = job.planned_files(job.collect_pages(deadline=self._deadline(job)))
            self.log.info("Handing %d files over to mapped download tasks", len(files))
            # No URLs in XCom (signed storage URLs carry credentials): the download tasks
            # read them from manifest.json in the destination.
            return [
                {
                    "job": job.key,
                    "name": file.name,
                    "kind": file.kind,
                    "type": file.type,
                    "count": file.count,
                }
                for file in files
            ]
        started = time.monotonic()
        results = job.download(manifest, deadline=self._deadline(job))
        elapsed = time.monotonic() - started
        total = sum(r.bytes for r in results if not r.skipped)
        self.log.info(
            "Downloaded %d files (%d skipped as complete), %.1f MB in %.1f s",
            len(results),
            sum(1 for r in results if r.skipped),
            total / 1e6,
            elapsed,
        )
        summary = job.finish(
            manifest, results, tolerate_errors=self.tolerate_errors, cleanup=self.cleanup
        )
        emit_export_events(context, self.backendauth_conn_id, job, summary)
        self._record_lineage(job, results)
        return summary

    def _on_failure(self, context: Context, job: BulkExportJob, exc: BaseException) -> None:
        job.record_failure(exc)  # in log.ndjson, whether a retry follows or not
        self._task_error = exc
        if job.record is None or not job.record.active:
            return  # the kick-off itself failed, or the job is over: nothing to cancel
        if self.cancel_on_failure and _fails_for_good(context, exc, self.retries):
            self.log.warning("The task fails for good: cancelling the export on the server")
            job.abandon(cancel=True)

    def on_kill(self) -> None:
        super().on_kill()
        if self.cancel_on_failure and self._job is not None:
            self.log.warning("Task killed: cancelling the export on the server")
            self._job.abandon(cancel=True)


# The mapped-download operators live in their own module; they are part of this public one.
from airflow_provider_backendauth.operators.bulk_mapped import (  # noqa: E402
    FhirBulkDownloadOperator,
    FhirBulkFinalizeOperator,
)

__all__ = ["FhirBulkDownloadOperator", "FhirBulkExportOperator", "FhirBulkFinalizeOperator"]
