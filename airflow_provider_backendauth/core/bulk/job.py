"""FHIR Bulk Data export, framework-free: one object owns an export's lifecycle.

``BulkExportJob`` ties together the pieces that live in their own modules:

- ``export``: the request, kick-off/status interpretation (sans-IO), the manifest and
  the blocking ``BulkExportClient``;
- ``download``: file naming, parallel streaming downloads, error files, the summary;
- ``state``: durable JSON state next to the data (resume, ``since="auto"``);
- ``http``: per-hop token and redirect rules.

Lifecycle (each step persisted, so any later try continues where the last one stopped)::

    start()            kick-off, or resume the export an earlier try started   -> kicked_off
    wait() / trigger   poll the status URL until the manifest arrives
    accept_manifest()  write manifest.json beside the files                   -> complete
    download()         files not yet complete (per-file markers)              -> downloaded
    finish()           DELETE the job, check error files, save transactionTime -> done
    abandon()          DELETE the job when giving up                          -> cancelled

This module imports no Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth.core.bulk.client import BulkExportClient
from airflow_provider_backendauth.core.bulk.download import (
    BulkDownloader,
    ExportFile,
    FileResult,
    plan_files,
    scan_error_files,
    summarize,
)
from airflow_provider_backendauth.core.bulk.http import BulkHttp, display_url
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
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
)
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage import StoragePath, as_path, atomic_writer

if TYPE_CHECKING:
    from airflow_provider_backendauth.core.auth.client import BackendAuthClient
    from airflow_provider_backendauth.core.auth.tokens import AccessToken

log = get_logger(__name__)

MANIFEST_NAME = "manifest.json"


class BulkExportJob:
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
    ) -> None:
        self.client = client
        self.store = store
        self.key = key
        self.destination: StoragePath = as_path(destination)
        self.downloader = downloader
        self.record: JobRecord | None = None
        self.resumed = False

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
        status_url = self.client.kickoff(request)
        record = JobRecord(
            status_url=status_url,
            state=KICKED_OFF,
            export_key=since_key,
            request=request.to_dict(),
            destination=str(self.destination),
            description=dict(description or {}),
        )
        try:
            self.store.save_job(self.key, record)
        except Exception:
            # Without durable state a retry would start a second export: cancel this one.
            log.error("Could not save the export state to %s; cancelling the export", self.store)
            self.client.cancel(status_url)
            raise
        self.record = record
        return record

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
        return self.client.wait(self.status_url, deadline=deadline)

    # -- the manifest ----------------------------------------------------------------

    @property
    def manifest_path(self) -> StoragePath:
        return self.destination / MANIFEST_NAME

    def accept_manifest(self, manifest: BulkManifest) -> list[ExportFile]:
        """Write ``manifest.json`` beside the files and record the job as complete; returns
        the files to download."""
        with atomic_writer(self.manifest_path, "wb") as handle:
            handle.write(json.dumps(manifest.raw, indent=1).encode())
        record = self._record
        self.store.update_job(
            self.key,
            record,
            state=COMPLETE if record.state == KICKED_OFF else record.state,
            transaction_time=manifest.transaction_time,
            requires_access_token=manifest.requires_access_token,
        )
        files = plan_files(manifest)
        log.info(
            "Export complete (transactionTime %s): %d output, %d error, %d deleted files",
            manifest.transaction_time,
            len(manifest.output),
            len(manifest.error),
            len(manifest.deleted),
        )
        return files

    def local_manifest(self) -> BulkManifest:
        """The manifest saved in the destination by ``accept_manifest``."""
        try:
            with self.manifest_path.open("rb") as handle:
                data = json.loads(handle.read())
        except FileNotFoundError:
            raise BulkExportError(
                f"{self.manifest_path} is missing: the export's manifest was not saved, or the "
                "destination differs from the export task's."
            ) from None
        return BulkManifest.from_json(data)

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

    def download(self, manifest: BulkManifest) -> list[FileResult]:
        """Download every file not complete yet; returns results for all files."""
        if self.downloader is None:
            raise BulkExportError(f"{self!r} has no downloader.")
        files = plan_files(manifest)
        results = self.downloader.download(
            files,
            self.destination,
            requires_access_token=manifest.requires_access_token,
            already_done=self.completed,
            on_done=self.mark_done,
        )
        self.store.update_job(self.key, self._record, state=DOWNLOADED)
        return results

    def download_file(self, file: ExportFile, *, requires_access_token: bool) -> FileResult:
        """Download one file unless complete (mapped download tasks)."""
        if self.downloader is None:
            raise BulkExportError(f"{self!r} has no downloader.")
        done = self.completed(file)
        if done is not None:
            log.info("%s is already complete; skipping it", file.name)
            return done
        result = self.downloader.download_one(
            file, self.destination, requires_access_token=requires_access_token
        )
        self.mark_done(file, result)
        return result

    def collected_results(self, manifest: BulkManifest) -> list[FileResult]:
        """Results of files downloaded by other tasks; fails naming the missing ones."""
        files = plan_files(manifest)
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
        if cleanup and record.state != DONE:
            self.client.cancel(record.status_url)
        errors = scan_error_files([self.destination / r.name for r in results if r.kind == "error"])
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
        return summarize(
            manifest,
            results,
            errors,
            destination=str(self.destination),
            manifest_name=MANIFEST_NAME,
        )

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


class _ClientTokens:
    """The client's token cache, looked up on first use (it may need discovery, i.e. the
    network, which building a ``BulkHttp`` should not)."""

    def __init__(self, auth_client: BackendAuthClient) -> None:
        self._client = auth_client

    def get(self) -> AccessToken:
        return self._client.tokens.get()

    def invalidate(self, value: str | None = None) -> None:
        self._client.tokens.invalidate(value)


def bulk_http_for(auth_client: BackendAuthClient, *, timeout: float | None = None) -> BulkHttp:
    """A ``BulkHttp`` for a ``BackendAuthClient``: its token cache, its allowed origins (the
    base URL's and the connection's ``allowed_hosts``) and its TLS settings."""
    return BulkHttp(
        auth_client.new_plain_session,
        _ClientTokens(auth_client),
        auth_client.allowed_origins,
        timeout=timeout or auth_client.settings.timeout,
    )
