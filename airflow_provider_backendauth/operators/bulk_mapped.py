"""The mapped-download half of a bulk export: ``FhirBulkDownloadOperator`` (one file per
mapped task) and ``FhirBulkFinalizeOperator`` (checks, cleanup, watermark).

Import them from ``airflow_provider_backendauth.operators.bulk``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.operators._common import (
    fails_fast,
)
from airflow_provider_backendauth.operators._lineage import declare_outlet, emit_export_events

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


from airflow_provider_backendauth.operators._bulk_base import (
    DEFAULT_CONN_ID,
    _BulkBase,
    _fails_for_good,
)


class FhirBulkDownloadOperator(_BulkBase):
    """Download one file of a bulk export (use with dynamic task mapping).

    Example::

        export = FhirBulkExportOperator(task_id="export", download=False, destination=dest, ...)
        files = FhirBulkDownloadOperator.partial(
            task_id="download", destination=dest, backendauth_conn_id=conn,
            map_index_template="{{ task.file['name'] }}",  # name mapped tasks by file
        ).expand(file=export.output)
        FhirBulkFinalizeOperator(task_id="finalize", export_task_id="export",
                                 destination=dest, backendauth_conn_id=conn)

    The file's URL and ``requiresAccessToken`` come from ``manifest.json`` in the destination
    (XCom carries only names). The file is streamed to a temporary name and renamed when
    complete and verified; a retry skips it if it is already complete. Returns
    ``{"name", "kind", "type", "count", "bytes", "skipped"}``.

    Args:
        file: one element of the export task's output (``download=False``). Templated.
        destination: the same destination as the export task's. Templated.
        backendauth_conn_id: the connection (token and origins).
        state_dir: the same ``state_dir`` as the export task's. Templated.
        download_retries: retries for this file.
        check_counts: verify the line count against the manifest's ``count``.
        chunk_size: bytes per read/write.
        max_file_bytes: the most bytes one downloaded file may decode to (default 64 GiB).
        max_compression_ratio: the most decoded bytes per byte received (default 200; a
            decompression bomb is ~1000).
    """

    template_fields: Sequence[str] = ("file", "destination", "state_dir")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        file: Mapping[str, Any],
        destination: str | ObjectStoragePath,
        backendauth_conn_id: str = DEFAULT_CONN_ID,
        state_dir: str | ObjectStoragePath | None = None,
        download_retries: int = 5,
        check_counts: bool = True,
        chunk_size: int = 1 << 20,
        max_file_bytes: int = 64 * 1024**3,
        max_compression_ratio: float = 200.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            destination=destination,
            backendauth_conn_id=backendauth_conn_id,
            state_dir=state_dir,
            **kwargs,
        )
        self.file = file
        self.download_retries = download_retries
        self.check_counts = check_counts
        self.chunk_size = chunk_size
        self.max_file_bytes = max_file_bytes
        self.max_compression_ratio = max_compression_ratio

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_backendauth.core.retry import RetryPolicy

        spec = dict(self.file)
        if "job" not in spec or "name" not in spec:
            raise ConfigurationError(
                "'file' must be an element of FhirBulkExportOperator(download=False)'s output."
            )
        job = self._build_job(
            str(spec["job"]),
            downloader_options={
                "parallel": 1,
                "retry": RetryPolicy(attempts=self.download_retries + 1, max_retry_after=300.0),
                "chunk_size": self.chunk_size,
                "check_counts": self.check_counts,
                "max_file_bytes": self.max_file_bytes,
                "max_compression_ratio": self.max_compression_ratio,
            },
        )
        manifest = job.local_manifest()
        file = next((f for f in job.planned_files() if f.name == spec["name"]), None)
        if file is None:
            raise ConfigurationError(
                f"{spec['name']!r} is not a file of the export whose manifest.json is in "
                f"{job.destination}: is 'destination' the export task's?"
            )
        result = job.download_file(file, requires_access_token=manifest.requires_access_token)
        self.log.info("%s: %d resources, %d bytes", result.name, result.count, result.bytes)
        self._record_lineage(job, [result])
        return result.to_dict()


class FhirBulkFinalizeOperator(_BulkBase):
    """Finish a bulk export whose files were downloaded by mapped tasks.

    Checks that every file is complete, ``DELETE``s the job on the server (``cleanup``),
    checks the error files, records ``transactionTime`` for ``since="auto"`` and returns the
    same summary as ``FhirBulkExportOperator``. Runs by default with
    ``trigger_rule="all_done"``, so that when downloads failed for good it can cancel the
    export on the server (``cancel_on_failure``) before failing.

    Args:
        export_task_id: the ``FhirBulkExportOperator(download=False)`` task.
        destination, state_dir: the same as the export task's. Templated.
        tolerate_errors, cleanup, cancel_on_failure: as for ``FhirBulkExportOperator``.
    """

    template_fields: Sequence[str] = ("destination", "state_dir")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        export_task_id: str,
        destination: str | ObjectStoragePath,
        backendauth_conn_id: str = DEFAULT_CONN_ID,
        state_dir: str | ObjectStoragePath | None = None,
        tolerate_errors: bool = False,
        cleanup: bool = True,
        cancel_on_failure: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(
            destination=destination,
            backendauth_conn_id=backendauth_conn_id,
            state_dir=state_dir,
            **kwargs,
        )
        self.export_task_id = export_task_id
        self.tolerate_errors = tolerate_errors
        self.cleanup = cleanup
        self.cancel_on_failure = cancel_on_failure
        declare_outlet(self, backendauth_conn_id)

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_backendauth.core.errors import BulkExportError

        job = self._build_job(self._job_key(context, self.export_task_id))
        record = job.load()
        if record is None:
            raise BulkExportError(
                f"No export state for task {self.export_task_id!r} of this run in {job.store}: "
                "did the export task run, with the same destination/state_dir?"
            )
        try:
            manifest = job.local_manifest()
            results = job.collected_results(manifest)
        except Exception as exc:
            if self.cancel_on_failure and _fails_for_good(context, exc, self.retries):
                self.log.warning("Downloads incomplete: cancelling the export on the server")
                job.abandon(cancel=True)
            raise
        summary = job.finish(
            manifest, results, tolerate_errors=self.tolerate_errors, cleanup=self.cleanup
        )
        emit_export_events(context, self.backendauth_conn_id, job, summary)
        self._record_lineage(job, results)
        return summary
