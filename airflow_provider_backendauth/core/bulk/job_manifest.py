"""The manifest half of ``BulkExportJob``: accepting the manifest and its pages, saved
beside the files.

Owns the page-by-page handling of a Bulk Data 3.0 manifest: where each page is saved
(``manifest.json``, then ``manifest.002.json``...), reading saved pages back, fetching the
next page from the previous one's ``next`` link (allowed origins only), the order in which a
page is saved, recorded and yielded (so a crash at any point resumes at the right page), the
export log's page events, and the files planned from all pages as one export. Kept apart
from ``job.py`` (the lifecycle: start, download, finish, abandon) because it is one concept
with its own crash-safety rule; ``BulkExportJob`` mixes it in, the only class that does, so
the job's API stays one object.

This module imports no Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from airflow_provider_backendauth.core.bulk.files import ExportFile, plan_files
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.pages import plan_pages
from airflow_provider_backendauth.core.bulk.state import COMPLETE, KICKED_OFF
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.atomic import atomic_writer
from airflow_provider_backendauth.core.urls import display_url, origin_of

if TYPE_CHECKING:
    from airflow_provider_backendauth.core.bulk.client import BulkExportClient
    from airflow_provider_backendauth.core.bulk.exportlog import ExportLog
    from airflow_provider_backendauth.core.bulk.poller import Observed
    from airflow_provider_backendauth.core.bulk.state import BulkStateStore, JobRecord
    from airflow_provider_backendauth.core.storage.paths import StoragePath

log = get_logger(__name__)

MANIFEST_NAME = "manifest.json"


class ManifestPages:
    """The manifest steps of ``BulkExportJob`` (mixed into it; not used on its own)."""

    # What BulkExportJob provides.
    client: BulkExportClient
    store: BulkStateStore
    key: str
    destination: StoragePath
    record: JobRecord | None

    if TYPE_CHECKING:

        def load(self) -> JobRecord | None: ...

        @property
        def export_log(self) -> ExportLog: ...

        @property
        def stored_compression(self) -> str | None: ...

        @property
        def _record(self) -> JobRecord: ...

        def _progress(self, seen: Observed, at: float) -> None: ...

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
            pages=1,
            pages_done=0,
        )
        files = plan_files(manifest, self.stored_compression)
        self.export_log.status_complete(manifest.transaction_time)
        self._log_page(manifest, [manifest])
        log.info(
            "Export complete (transactionTime %s): %d output, %d error, %d deleted files%s%s",
            manifest.transaction_time,
            len(manifest.output),
            len(manifest.error),
            len(manifest.deleted),
            " on the first manifest page; more pages follow" if manifest.next_url else "",
            f"; the server keeps them until {manifest.expires}" if manifest.expires else "",
        )
        return files

    def local_manifest(self, page: int = 1) -> BulkManifest:
        """A manifest page saved in the destination (page 1: by ``accept_manifest``)."""
        path = self.page_path(page)
        try:
            with path.open("rb") as handle:
                data = json.loads(handle.read())
        except FileNotFoundError:
            raise BulkExportError(
                f"{path} is missing: the export's manifest was not saved, or the "
                "destination differs from the export task's."
            ) from None
        return BulkManifest.from_json(data)

    # -- manifest pages (Bulk Data 3.0 partial manifests) -------------------------------

    def page_path(self, page: int) -> StoragePath:
        """``manifest.json`` for page 1, ``manifest.002.json``... for the pages after it."""
        return self.manifest_path if page == 1 else self.destination / f"manifest.{page:03d}.json"

    def pages(
        self, first: BulkManifest | None = None, *, deadline: float | None = None
    ) -> Iterator[tuple[int, BulkManifest]]:
        """Every manifest page in order, page 1 first. Pages saved by an earlier try are read
        from the destination; the next one is fetched from the previous page's ``next`` link
        (allowed origins only), saved, and recorded before it is yielded, so a crash at any
        point resumes at the right page. A page is yielded only when its predecessors were."""
        page, manifest = 1, first or self.local_manifest(1)
        while True:
            yield page, manifest
            next_url = manifest.next_url
            if next_url is None:
                return
            page += 1
            record = self._record
            if (record.pages or 1) >= page:
                manifest = self.local_manifest(page)
                continue
            manifest = self._fetch_page(page, next_url, deadline)
            self.store.update_job(self.key, record, pages=page)

    def _fetch_page(self, page: int, url: str, deadline: float | None) -> BulkManifest:
        origin = origin_of(url)
        if origin not in self.client.http.token_origins:
            raise BulkExportError(
                f"Manifest page {page - 1} links its next page to {display_url(url)}, whose "
                f"origin {origin} is neither the FHIR server's nor in the connection's "
                "allowed_hosts; refusing to follow it (add the origin to allowed_hosts if the "
                "server really keeps manifests there)."
            )
        log.info("Fetching manifest page %d from %s", page, display_url(url))
        done = self.client.wait_json(url, deadline=deadline, on_progress=self._progress)
        manifest = BulkManifest.from_json(done.manifest, expires=done.expires)
        with atomic_writer(self.page_path(page), "wb") as handle:
            handle.write(json.dumps(manifest.raw, indent=1).encode())
        earlier = [] if manifest.next_url else [self.local_manifest(n) for n in range(1, page)]
        self._log_page(manifest, [*earlier, manifest])
        return manifest

    def _log_page(self, manifest: BulkManifest, pages: Sequence[BulkManifest]) -> None:
        """``status_page_complete`` for a manifest page; ``manifest_complete`` too when it is
        the last (``pages``: every page so far, this one included)."""
        elog = self.export_log
        elog.status_page_complete(
            manifest.transaction_time,
            output=len(manifest.output),
            deleted=len(manifest.deleted),
            error=len(manifest.error),
        )
        if manifest.next_url is None:
            elog.manifest_complete(
                pages[0].transaction_time,
                output=sum(len(p.output) for p in pages),
                deleted=sum(len(p.deleted) for p in pages),
                error=sum(len(p.error) for p in pages),
                pages=len(pages),
            )
        elog.flush()

    def local_pages(self) -> list[BulkManifest]:
        """The manifest pages saved so far (after ``collect_pages``: all of them)."""
        record = self.record or self.load()
        count = record.pages if record is not None and record.pages else 1
        return [self.local_manifest(n) for n in range(1, count + 1)]

    def collect_pages(self, *, deadline: float | None = None) -> list[BulkManifest]:
        """Fetch and save every page (mapped downloads need the whole file list up front)."""
        return [manifest for _, manifest in self.pages(deadline=deadline)]

    def planned_files(self, pages: Sequence[BulkManifest] | None = None) -> list[ExportFile]:
        """Every file of the saved pages, named and numbered as one export."""
        pages = pages or self.local_pages()
        return [f for files in plan_pages(pages, self.stored_compression) for f in files]
