"""``log.ndjson``: the export log beside the data, in bulk-data-client's "Export Log Items" format.

SMART's bulk-data-client writes one JSON line per export event (``kickoff``,
``status_complete``, ``status_page_complete``, ``manifest_complete``, ``download_request``,
``download_complete``, ``download_error``, ``status_error``, ``export_complete``,
``client_error``), each ``{"exportId", "timestamp", "eventId", "eventDetail"}``, and tools
that compare EHR exports (BulkUP, CumulusQ dashboards) read it. This module writes the same
events with the same fields (see docs/lineage.md for what differs: no CapabilityStatement
lookup, URLs without query strings), so those tools read an export made by this provider.

Guarantees:
- **Never partially visible**: the log is one object, rewritten whole through
  ``atomic_writer`` (object stores cannot append): readers see the previous version or the
  new one. Events are buffered and written at milestones (kick-off, manifest, each manifest
  page's downloads, failure, the end) and every ``FLUSH_EVERY`` events, so a long export
  rewrites it a bounded number of times (``status_progress``, one per 202 status answer, is
  flushed by count only, never by time, so a multi-day wait is not a rewrite per poll); a
  try killed between two writes loses the events since the last one (the files' state is
  not affected).
- **One writer per object**: the export task (or the finalize task) owns ``log.ndjson``;
  a mapped download task writes its events to its own part object in the job's state folder,
  which ``merge_parts`` folds into the log at the end. Concurrent writers therefore never
  overwrite each other, on any store.
- **Resumed and retried tries append**: a try reads what earlier tries wrote and adds its
  events; the ``exportId`` is derived from the job and its kick-off time, so it is the same
  in every try of one export. Merging skips lines already in the log, so a finalize retried
  after a crash does not duplicate events.
- **Nothing secret**: file and kick-off URLs lose their query strings (signed URLs carry
  credentials there), messages are redacted (``short_error``), response headers and bodies
  are not recorded, and ``patient`` references are left out of the request parameters.

This module imports no Airflow.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_provider_backendauth.core.lineage import public_url
from airflow_provider_backendauth.core.redact import get_logger, redact, short_error
from airflow_provider_backendauth.core.storage.atomic import atomic_writer
from airflow_provider_backendauth.core.storage.paths import StoragePath

log = get_logger(__name__)

LOG_NAME = "log.ndjson"
LOG_VERSION = "2"  # the "logVersion" bulk-data-client's kick-off event carries
FLUSH_EVERY = 200  # buffered events before the log is rewritten anyway
FLUSH_SECONDS = 60.0  # ... or this long after the last write
MAX_PROGRESS_CHARS = 200  # a status_progress event's xProgress, after escaping

EVENT_IDS = (
    "kickoff",
    "status_progress",
    "status_complete",
    "status_error",
    "status_page_complete",
    "manifest_complete",
    "download_request",
    "download_complete",
    "download_error",
    "export_complete",
    "client_error",
)


def export_id(job_key: str, kicked_off_at: str) -> str:
    """The ``exportId`` of one export: the same in every try of the job, new for a new
    kick-off (20 hex digits, like bulk-data-client's random one)."""
    return hashlib.sha256(f"{job_key}\n{kicked_off_at}".encode()).hexdigest()[:20]


def _timestamp(at: float | None = None) -> str:
    moment = datetime.now(timezone.utc) if at is None else datetime.fromtimestamp(at, timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def _read_lines(path: StoragePath) -> list[bytes]:
    try:
        with path.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n") if line.strip()]


def request_parameters(query: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The kick-off parameters as bulk-data-client logs them (``{"_since": ..., "_type":
    ...}``; a repeated parameter becomes a list)."""
    params: dict[str, Any] = {}
    for name, value in query:
        if name in params:
            existing = params[name]
            params[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            params[name] = value
    return params


class ExportLog:
    """The events of one export, written to one log object (``log.ndjson`` or a part).

    Thread-safe: parallel downloads record into one instance.

    Args:
        path: the log object.
        export_id: see ``export_id``.
        metadata: key/values added to every line (bulk-data-client's ``log.metadata``).
    """

    def __init__(
        self, path: StoragePath, export_id: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.path = path
        self.export_id = export_id
        self.metadata = dict(metadata or {})
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def __repr__(self) -> str:
        return f"ExportLog({str(self.path)!r})"

    def record(
        self,
        event_id: str,
        detail: Mapping[str, Any],
        *,
        at: float | None = None,
        timed_flush: bool = True,
    ) -> None:
        """Add one event (written at the next ``flush``, or now when many are waiting).
        ``at``: when it happened (``time.time()``; None: now). ``timed_flush=False``: the
        event never makes the log due by time alone (``FLUSH_SECONDS``), only by count."""
        line = json.dumps(
            {
                **self.metadata,
                "exportId": self.export_id,
                "timestamp": _timestamp(at),
                "eventId": event_id,
                "eventDetail": dict(detail),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        with self._lock:
            self._pending.append(line)
            due = len(self._pending) >= FLUSH_EVERY or (
                timed_flush and time.monotonic() - self._last_flush >= FLUSH_SECONDS
            )
        if due:
            self.flush()

    def flush(self, *, quiet: bool = False) -> None:
        """Rewrite the log object with the waiting events appended (atomically). ``quiet``:
        log a failure instead of raising it (on the way out of a failed task)."""
        with self._lock:
            if not self._pending:
                return
            try:
                self._append(self._pending)
            except Exception:
                if not quiet:
                    raise
                log.warning("Could not write the export log %s", self.path, exc_info=True)
                return
            self._pending = []
            self._last_flush = time.monotonic()

    def _append(self, lines: Sequence[bytes]) -> None:
        existing = _read_lines(self.path)
        with atomic_writer(self.path, "wb") as handle:
            handle.write(b"".join(line + b"\n" for line in [*existing, *lines]))

    def merge_parts(self, parts: Sequence[StoragePath]) -> int:
        """Fold part logs (one per mapped download task) into this log, in time order,
        skipping lines already in it; deletes the parts once the log holds them. Returns
        how many lines were added."""
        self.flush()
        with self._lock:
            existing = _read_lines(self.path)
            seen = set(existing)
            new: list[tuple[str, bytes]] = []
            for part in parts:
                for line in _read_lines(part):
                    if line in seen:
                        continue
                    seen.add(line)
                    try:
                        stamp = str(json.loads(line).get("timestamp") or "")
                    except ValueError:
                        continue  # a line we did not write: leave it out
                    new.append((stamp, line))
            if new:
                new.sort(key=lambda item: item[0])
                with atomic_writer(self.path, "wb") as handle:
                    handle.write(
                        b"".join(line + b"\n" for line in [*existing, *(n for _, n in new)])
                    )
        for part in parts:
            try:
                part.unlink(missing_ok=True)
            except Exception:
                log.warning("Could not delete the export log part %s", part, exc_info=True)
        return len(new)

    # -- the events, with bulk-data-client's fields ---------------------------------------

    def kickoff(
        self,
        export_url: str,
        parameters: Mapping[str, Any],
        *,
        error_code: int | None = None,
        error_body: str | None = None,
    ) -> None:
        self.record(
            "kickoff",
            {
                "exportUrl": public_url(export_url),
                "errorCode": error_code,
                "errorBody": error_body,
                # bulk-data-client reads these from the CapabilityStatement; the provider
                # does not fetch it for an export.
                "softwareName": None,
                "softwareVersion": None,
                "softwareReleaseDate": None,
                "fhirVersion": None,
                "requestParameters": dict(parameters),
                "responseHeaders": {},
                "logVersion": LOG_VERSION,
            },
        )

    def status_progress(
        self, x_progress: str | None, retry_after: float | None, *, at: float | None = None
    ) -> None:
        """One 202 status answer. ``x_progress`` is server text: redacted, control characters
        escaped and cut to ``MAX_PROGRESS_CHARS`` here too, whoever passes it. ``retryAfter``
        is the wait the server asked for, in seconds, as a string like the header's
        delay-seconds (an HTTP-date arrives converted). The body of a 202 is not recorded
        (``body`` is None). Progress events are buffered until a milestone or ``FLUSH_EVERY``
        events, never flushed by time: a long wait does not rewrite the log on every poll."""
        text = None if x_progress is None else redact(x_progress)[:MAX_PROGRESS_CHARS]
        self.record(
            "status_progress",
            {
                "body": None,
                "xProgress": text,
                "retryAfter": None if retry_after is None else f"{retry_after:g}",
            },
            at=at,
            timed_flush=False,
        )

    def status_complete(self, transaction_time: str | None) -> None:
        self.record("status_complete", {"transactionTime": transaction_time})

    def status_page_complete(
        self, transaction_time: str | None, *, output: int, deleted: int, error: int
    ) -> None:
        self.record(
            "status_page_complete",
            {
                "transactionTime": transaction_time,
                "outputFileCount": output,
                "deletedFileCount": deleted,
                "errorFileCount": error,
            },
        )

    def manifest_complete(
        self, transaction_time: str | None, *, output: int, deleted: int, error: int, pages: int
    ) -> None:
        self.record(
            "manifest_complete",
            {
                "transactionTime": transaction_time,
                "totalOutputFileCount": output,
                "totalDeletedFileCount": deleted,
                "totalErrorFileCount": error,
                "totalManifests": pages,
            },
        )

    def status_error(self, exc: BaseException) -> None:
        self.record(
            "status_error",
            {
                "body": None,
                "code": getattr(exc, "status_code", None),
                "message": short_error(exc),
                "responseHeaders": {},
            },
        )

    def download_request(self, file_url: str, item_type: str, resource_type: str | None) -> None:
        self.record(
            "download_request",
            {"fileUrl": public_url(file_url), "itemType": item_type, "resourceType": resource_type},
        )

    def download_complete(self, file_url: str, size: int, resources: int) -> None:
        self.record(
            "download_complete",
            {"fileUrl": public_url(file_url), "fileSize": size, "resourceCount": resources},
        )

    def download_error(self, file_url: str, exc: BaseException) -> None:
        self.record(
            "download_error",
            {
                "body": None,
                "code": getattr(exc, "status_code", None),
                "fileUrl": public_url(file_url),
                "message": short_error(exc),
                "responseHeaders": {},
            },
        )

    def export_complete(self, *, files: int, resources: int, size: int, duration_ms: int) -> None:
        self.record(
            "export_complete",
            {
                "files": files,
                "resources": resources,
                "bytes": size,
                "attachments": 0,
                "duration": duration_ms,
            },
        )

    def client_error(self, exc: BaseException) -> None:
        self.record("client_error", {"error": short_error(exc)})
