"""FHIR Bulk Data export, framework-free: one object owns an export's lifecycle.

``BulkExportJob`` ties together the pieces that live in their own modules:

- ``request``, ``protocol``, ``poller``, ``client``: the request, kick-off/status
  interpretation (sans-IO) and the blocking ``BulkExportClient``;
- ``job_manifest``: the manifest and its pages, saved beside the files;
- ``files``, ``download``: file naming, parallel streaming downloads, error files, the summary;
- ``state``: durable JSON state next to the data (resume, ``since="auto"``);
- ``core/http/authorized``: per-hop token and redirect rules.

Lifecycle (each step persisted, so any later try continues where the last one stopped)::

    start()            kick-off, or resume the export an earlier try started   -> kicked_off
    wait() / trigger   poll the status URL until the manifest arrives
    accept_manifest()  write manifest.json beside the files                   -> complete
    download()         files not yet complete (per-file markers)              -> downloaded
    finish()           DELETE the job, check error files, save transactionTime -> done
    abandon()          DELETE the job when giving up                          -> cancelled

The manifest steps (``accept_manifest``, the pages, the planned files) are
``job_manifest.py``'s ``ManifestPages``, which this class mixes in: one owner for where pages
are saved, how the next one is fetched and when it counts as recorded.

Each step also records its events in ``log.ndjson`` beside the files (``exportlog``: the
bulk-data-client export log format), appended to by every try.

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_provider_backendauth.core.bulk.client import BulkExportClient
from airflow_provider_backendauth.core.bulk.compress import check_compression
from airflow_provider_backendauth.core.bulk.download import BulkDownloader
from airflow_provider_backendauth.core.bulk.exportlog import (
    LOG_NAME,
    ExportLog,
    export_id,
    request_parameters,
)
from airflow_provider_backendauth.core.bulk.files import (
    ExportFile,
    FileResult,
    scan_error_files,
    summarize,
)
from airflow_provider_backendauth.core.bulk.job_manifest import MANIFEST_NAME, ManifestPages
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.pages import plan_pages
from airflow_provider_backendauth.core.bulk.poller import Observed
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.bulk.state import (
    CANCELLED,
    COMPLETE,
    DONE,
    DOWNLOADED,
    KICKED_OFF,
    BulkStateStore,
    FileMarker,
    JobRecord,
    utc_now,
)
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.redact import get_logger, short_error
from airflow_provider_backendauth.core.storage.leftovers import remove_partials
from airflow_provider_backendauth.core.storage.paths import StoragePath, as_path
from airflow_provider_backendauth.core.urls import display_url

log = get_logger(__name__)


class BulkExportJob(ManifestPages):
    """One export, from kick-off to verified files, resumable across tries and workers.

    Args:
        client: kick-off/poll/cancel.
        store: the durable state.
        key: this job's key (``job_key(...)``): the same on every try of the same task.
        destination: the folder for the files and ``manifest.json``.
        downloader: needed only by ``download()``.
    """

    def __init__(
        self,
        *,
        client: BulkExportClient,
        store: BulkStateStore,
        key: str,
        destination: StoragePath,
        downloader: BulkDownloader | None = None,
        compression: str | None = None,
    ) -> None:
        self.client = client
        self.compression = check_compression(compression)
        self.store = store
        self.key = key
        self.destination: StoragePath = as_path(destination)
        self.downloader = downloader
        self.record: JobRecord | None = None
        self.resumed = False
        self._log: ExportLog | None = None

    def __repr__(self) -> str:
        return f"BulkExportJob(key={self.key!r}, destination={str(self.destination)!r})"

    # -- start or resume -------------------------------------------------------------

    def load(self) -> JobRecord | None:
        """The record of this job saved by an earlier try (any state), or None."""
        self.record = self.store.load_job(self.key)
        return self.record

    def start(
        self,
        request: BulkExportRequest,
        *,
        since_key: str,
        description: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """Continue the export an earlier try of this job started, or kick off a new one.

        The status URL is saved durably right after the kick-off returns.
        """
        record = self.load()
        if record is not None and record.active:
            self.resumed = True
            log.info(
                "Resuming the export started at %s (state %s, status URL %s); no new kick-off",
                record.kicked_off_at,
                record.state,
                display_url(record.status_url),
            )
            return record
        try:
            status_url = self.client.kickoff(request)
        except BulkExportError as exc:
            failed = ExportLog(self.log_path, export_id(self.key, utc_now()))
            failed.kickoff(
                request.url(self.client.base_url),
                request_parameters(request.query()),
                error_code=exc.status_code or 500,
                error_body=exc.diagnostics or short_error(exc, limit=2000),
            )
            failed.flush(quiet=True)
            raise
        record = JobRecord(
            status_url=status_url,
            state=KICKED_OFF,
            export_key=since_key,
            request=request.to_dict(),
            destination=str(self.destination),
            description=dict(description or {}),
            compression=self.compression,
        )
        try:
            self.store.save_job(self.key, record)
        except Exception:
            # Without durable state a retry would start a second export: cancel this one.
            log.error("Could not save the export state to %s; cancelling the export", self.store)
            self.client.cancel(status_url)
            raise
        self.record = record
        self.export_log.kickoff(
            request.url(self.client.base_url), request_parameters(request.query())
        )
        self.export_log.flush()
        return record

    # -- the export log ----------------------------------------------------------------

    @property
    def log_path(self) -> StoragePath:
        """``log.ndjson`` beside the files."""
        return self.destination / LOG_NAME

    @property
    def export_log(self) -> ExportLog:
        """This export's ``log.ndjson`` (the same ``exportId`` in every try)."""
        if self._log is None:
            record = self.record or self.load()  # a mapped download task has not loaded it
            if record is None:
                raise BulkExportError(f"No export state for {self!r}; start() it first.")
            self._log = ExportLog(self.log_path, export_id(self.key, record.kicked_off_at))
        return self._log

    def record_failure(self, exc: BaseException) -> None:
        """Log why a try failed (``status_error`` while waiting for the export, else
        ``client_error``) and write the log. Never raises."""
        if self.record is None:
            return
        try:
            if self.record.state == KICKED_OFF:
                self.export_log.status_error(exc)
            else:
                self.export_log.client_error(exc)
            self.export_log.flush(quiet=True)
        except Exception:
            log.warning("Could not record the failure in the export log", exc_info=True)

    @property
    def stored_compression(self) -> str | None:
        """How this export's files are stored: as the try that kicked it off chose (its
        record), so a retry or a mapped download names them alike; else this job's."""
        record = self.record or self.load()
        return record.compression if record is not None else self.compression

    @property
    def status_url(self) -> str:
        return self._record.status_url

    @property
    def _record(self) -> JobRecord:
        if self.record is None:
            raise BulkExportError(f"No export state for {self!r}; start() it first.")
        return self.record

    @property
    def needs_wait(self) -> bool:
        """Whether the server has not delivered the manifest yet."""
        return self._record.state == KICKED_OFF

    # -- waiting ---------------------------------------------------------------------

    def wait(self, *, deadline: float | None = None) -> BulkManifest:
        """Block until the export completes (non-deferrable mode); returns the manifest."""
        if not self.needs_wait:
            return self.local_manifest()
        return self.client.wait(self.status_url, deadline=deadline, on_progress=self._progress)

    def _progress(self, seen: Observed, at: float) -> None:
        """A 202 while waiting (for the export or a manifest page): a status_progress event
        (buffered: written with the next milestone)."""
        self.export_log.status_progress(seen.x_progress, seen.retry_after, at=at)

    # -- downloading -----------------------------------------------------------------

    def completed(self, file: ExportFile) -> FileResult | None:
        """The file's result if an earlier try (or mapped task) completed it."""
        marker = self.store.file_marker(self.key, file.name)
        if marker is None:
            return None
        target = self.destination / file.name
        if not target.exists():
            return None
        return FileResult(
            marker.name, marker.kind, marker.type, marker.count, marker.bytes, skipped=True
        )

    def mark_done(self, file: ExportFile, result: FileResult) -> None:
        self.store.mark_file_done(
            self.key, FileMarker(file.name, file.kind, file.type, result.count, result.bytes)
        )

    def _logged_download(self, elog: ExportLog) -> dict[str, Any]:
        """The downloader's callbacks that record a file's ``download_request``,
        ``download_complete`` (after its marker is saved) and ``download_error`` events."""

        def on_start(file: ExportFile) -> None:
            elog.download_request(file.url, file.kind, file.type or None)

        def on_done(file: ExportFile, result: FileResult) -> None:
            self.mark_done(file, result)
            elog.download_complete(file.url, result.bytes, result.count)

        def on_error(file: ExportFile, exc: BaseException) -> None:
            elog.download_error(file.url, exc)

        return {"on_start": on_start, "on_done": on_done, "on_error": on_error}

    def download(
        self, manifest: BulkManifest | None = None, *, deadline: float | None = None
    ) -> list[FileResult]:
        """Download every file not complete yet, page by page (each page's files before the
        next page is fetched); returns results for all files of all pages.

        ``manifest`` is page 1 (default: the one ``accept_manifest`` saved); the pages after
        it come from the destination when an earlier try saved them, else from the server."""
        if self.downloader is None:
            raise BulkExportError(f"{self!r} has no downloader.")
        self.sweep_partials()
        results: list[FileResult] = []
        seen: list[BulkManifest] = []
        record = self._record
        if record.pages_done:
            log.info("Resuming: %d manifest page(s) were already downloaded", record.pages_done)
        for page, current in self.pages(manifest, deadline=deadline):
            seen.append(current)
            files = plan_pages(seen, self.stored_compression)[-1]
            if current.next_url is not None or page > 1:
                log.info("Manifest page %d: %d files", page, len(files))
            try:
                results.extend(
                    self.downloader.download(
                        files,
                        self.destination,
                        requires_access_token=current.requires_access_token,
                        already_done=self.completed,
                        **self._logged_download(self.export_log),
                    )
                )
            finally:
                self.export_log.flush(quiet=True)
            if (record.pages_done or 0) < page:
                self.store.update_job(self.key, record, pages_done=page)
        self.store.update_job(self.key, record, state=DOWNLOADED)
        return results

    def sweep_partials(self) -> int:
        """Remove temporary ``.partial-`` files an earlier, killed try of this job left in
        the destination's folders (a retry is the only writer there). Returns how many."""
        removed = sum(
            len(remove_partials(folder))
            for folder in (
                self.destination,
                self.destination / "error",
                self.destination / "deleted",
            )
        )
        if removed:
            log.info("Removed %d partial file(s) left by an earlier try", removed)
        return removed

    def download_file(self, file: ExportFile, *, requires_access_token: bool) -> FileResult:
        """Download one file unless complete (mapped download tasks)."""
        if self.downloader is None:
            raise BulkExportError(f"{self!r} has no downloader.")
        done = self.completed(file)
        if done is not None:
            log.info("%s is already complete; skipping it", file.name)
            return done
        # This task's own log object (merged by finish()): mapped tasks run concurrently.
        part = ExportLog(self.store.log_part_path(self.key, file.name), self.export_log.export_id)
        logged = self._logged_download(part)
        logged["on_start"](file)
        try:
            result = self.downloader.download_one(
                file, self.destination, requires_access_token=requires_access_token
            )
        except BaseException as exc:
            logged["on_error"](file, exc)
            part.flush(quiet=True)
            raise
        logged["on_done"](file, result)
        part.flush()
        return result

    def collected_results(self, manifest: BulkManifest | None = None) -> list[FileResult]:
        """Results of files downloaded by other tasks (every saved page); fails naming the
        missing ones."""
        files = self.planned_files()
        results = []
        missing = []
        for file in files:
            result = self.completed(file)
            if result is None:
                missing.append(file.name)
            else:
                results.append(result)
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise BulkExportError(
                f"{len(missing)} of {len(files)} export files are not complete in "
                f"{self.destination}: {shown}"
            )
        if self._record.state in (KICKED_OFF, COMPLETE):
            self.store.update_job(self.key, self._record, state=DOWNLOADED)
        return results

    # -- finishing -------------------------------------------------------------------

    def finish(
        self,
        manifest: BulkManifest,
        results: Sequence[FileResult],
        *,
        tolerate_errors: bool = False,
        cleanup: bool = True,
    ) -> dict[str, Any]:
        """After every file is in place: DELETE the job on the server (``cleanup``), check
        the error files, save ``transactionTime`` for ``since="auto"``; returns the summary.

        Raises:
            BulkExportError: error files hold ``fatal``/``error`` outcomes and
                ``tolerate_errors`` is False (the files stay in the destination).
        """
        record = self._record
        last = self.local_manifest(record.pages or 1)
        if last.next_url is not None:
            # A page with a next link is never the end of the export.
            raise BulkExportError(
                f"Manifest page {record.pages or 1} links to another page that was not "
                "downloaded; the export is not complete."
            )
        if cleanup and record.state != DONE:
            self.client.cancel(record.status_url)
        errors = scan_error_files([self.destination / r.name for r in results if r.kind == "error"])
        self._log_completion(results)
        if errors.errors:
            message = (
                f"The export's error files hold {errors.errors} OperationOutcome(s) of severity "
                f"fatal/error; first: {' | '.join(errors.samples) or 'unreadable lines'}"
            )
            if not tolerate_errors:
                raise BulkExportError(message + ". Set tolerate_errors=True to accept them.")
            log.warning("%s (tolerated)", message)
        if manifest.transaction_time:
            self.store.save_since(
                record.export_key, manifest.transaction_time, export=record.description
            )
        self.store.update_job(self.key, record, state=DONE)
        self.store.clear_markers(self.key, [r.name for r in results])
        summary = summarize(
            manifest,
            results,
            errors,
            destination=str(self.destination),
            manifest_name=MANIFEST_NAME,
        )
        # The _since this export used (None: a full export): what tells a table writer to
        # merge rather than replace (operators/views.py).
        summary["since"] = record.request.get("since")
        return summary

    def _log_completion(self, results: Sequence[FileResult]) -> None:
        """Fold the mapped tasks' log parts into ``log.ndjson`` and add ``export_complete``
        (duration from the kick-off)."""
        elog = self.export_log
        elog.merge_parts(self.store.log_parts(self.key))
        started = datetime.fromisoformat(self._record.kicked_off_at)
        elapsed = datetime.now(timezone.utc) - started
        elog.export_complete(
            files=len(results),
            resources=sum(r.count for r in results),
            size=sum(r.bytes for r in results),
            duration_ms=max(0, int(elapsed.total_seconds() * 1000)),
        )
        elog.flush()

    def abandon(self, *, cancel: bool = True) -> None:
        """Give up on this export: DELETE it on the server (``cancel``) and forget it, so the
        next run starts afresh. Never raises."""
        record = self.record or self.store.load_job(self.key)
        if record is None or not record.active:
            return
        if cancel:
            self.client.cancel(record.status_url)
        try:
            self.store.update_job(self.key, record, state=CANCELLED)
        except Exception:
            log.warning("Could not record the cancelled export in %s", self.store, exc_info=True)
