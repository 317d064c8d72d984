"""Durable bulk-export state, kept as small JSON files in object storage next to the data.

Why object storage and not memory, a local file or an Airflow Variable: the state must
survive the worker that wrote it (Celery and Kubernetes workers come and go), be visible
to every worker and to retries, and travel with the exported data (copy the folder and
the incremental watermark comes along). Every worker that can write the export's files can
also read and write this state, with the same credentials.

Layout under the state directory (by default the export's destination)::

    _bulk_state/
      since/<export key>.json           {"transactionTime": ..., "export": {...}}
      jobs/<job key>.json               status URL, request, progress state
      jobs/<job key>/files/<name>.json  one marker per completely downloaded file
      jobs/<job key>/log/<name>.ndjson  a mapped download task's export log events, merged
                                        into log.ndjson by the finalize task

The export key hashes connection, base URL, level, group and types (what ``since="auto"``
must match); the job key hashes DAG, task, run and map index (what a retry must match).
Each file is written atomically (temporary name, then rename), so concurrent mapped
download tasks never see half-written state.

This module imports no Airflow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.atomic import atomic_writer
from airflow_provider_backendauth.core.storage.paths import StoragePath, as_path

log = get_logger(__name__)

STATE_DIR_NAME = "_bulk_state"

# Job states, in order.
KICKED_OFF = "kicked_off"
COMPLETE = "complete"  # the server finished; manifest known
DOWNLOADED = "downloaded"  # every file is in the destination
DONE = "done"  # finished successfully
CANCELLED = "cancelled"  # given up (and DELETEd when configured)
ACTIVE_STATES = frozenset({KICKED_OFF, COMPLETE, DOWNLOADED})


def fingerprint(parts: Iterable[Any]) -> str:
    """A short, stable hash of JSON-able parts."""
    data = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def export_key(
    *, connection: str, base_url: str | None, level: str, group_id: str | None, types: Iterable[str]
) -> str:
    """Identifies "the same export" for ``since="auto"``: connection, level, group, types."""
    return fingerprint(
        [
            "since-v1",
            connection,
            (base_url or "").rstrip("/"),
            level,
            group_id or "",
            sorted(set(types)),
        ]
    )


def job_key(*, dag_id: str, task_id: str, run_id: str, map_index: int | None = -1) -> str:
    """Identifies one task's export across its tries."""
    return fingerprint(["job-v1", dag_id, task_id, run_id, -1 if map_index is None else map_index])


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class JobRecord:
    """What a later try needs to continue an export instead of starting another.

    Attributes:
        status_url: the export's status URL (from the kick-off).
        state: one of kicked_off, complete, downloaded, done, cancelled.
        export_key: the ``since`` key of this export.
        request: the kick-off request (``BulkExportRequest.to_dict()``).
        destination: where the files go (string form).
        transaction_time: the manifest's ``transactionTime`` once known.
        requires_access_token: the manifest's flag once known.
        pages: manifest pages saved beside the files (``manifest.json``, ``manifest.002.json``
            ...); a later try reads them instead of fetching them again.
        pages_done: pages whose files are all complete.
        compression: how the files are stored (None: plain NDJSON; ``gzip``: ``.ndjson.gz``),
            fixed by the try that kicked the export off, so retries and mapped downloads
            name the files alike.
    """

    status_url: str
    state: str
    export_key: str
    request: dict[str, Any]
    destination: str
    kicked_off_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    transaction_time: str | None = None
    requires_access_token: bool | None = None
    description: dict[str, Any] = field(default_factory=dict)
    pages: int = 0  # manifest pages saved in the destination (partial manifests)
    pages_done: int = 0  # pages whose every file is complete
    compression: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class FileMarker:
    """A completely downloaded (and verified) file."""

    name: str
    kind: str
    type: str
    count: int
    bytes: int
    finished_at: str = field(default_factory=utc_now)


def _marker_name(file_name: str) -> str:
    # File names may contain one folder level ("error/OperationOutcome.000.ndjson").
    return file_name.replace("/", "__") + ".json"


class BulkStateStore:
    """Reads and writes the state files under ``{root}/_bulk_state``.

    Args:
        root: the state directory: a ``pathlib.Path``, ``ObjectStoragePath``, ``UPath`` or
            a URL/path string.
    """

    def __init__(self, root: StoragePath) -> None:
        self.root: StoragePath = as_path(root) / STATE_DIR_NAME

    def __repr__(self) -> str:
        return f"BulkStateStore({str(self.root)!r})"

    # -- generic JSON files ----------------------------------------------------------

    @staticmethod
    def _read(path: StoragePath) -> dict[str, Any] | None:
        try:
            with path.open("rb") as handle:
                data = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("Ignoring the unreadable state file %s", path)
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _write(path: StoragePath, data: Mapping[str, Any]) -> None:
        with atomic_writer(path, "wb") as handle:
            handle.write(json.dumps(data, indent=1, sort_keys=True).encode())

    @staticmethod
    def _delete(path: StoragePath) -> None:
        try:
            path.unlink(missing_ok=True)
        except Exception:
            log.warning("Could not delete the state file %s", path, exc_info=True)

    # -- incremental watermark -------------------------------------------------------

    def since_path(self, key: str) -> StoragePath:
        return self.root / "since" / f"{key}.json"

    def load_since(self, key: str) -> str | None:
        """The ``transactionTime`` of the last successful export with this key, or None."""
        data = self._read(self.since_path(key))
        value = (data or {}).get("transactionTime")
        return value if isinstance(value, str) and value else None

    def save_since(
        self, key: str, transaction_time: str, *, export: Mapping[str, Any] | None = None
    ) -> None:
        """Record a successful export's ``transactionTime`` as the next ``_since``."""
        self._write(
            self.since_path(key),
            {
                "transactionTime": transaction_time,
                "saved_at": utc_now(),
                "export": dict(export or {}),
            },
        )

    # -- jobs ------------------------------------------------------------------------

    def job_path(self, key: str) -> StoragePath:
        return self.root / "jobs" / f"{key}.json"

    def load_job(self, key: str) -> JobRecord | None:
        data = self._read(self.job_path(key))
        if data is None:
            return None
        try:
            return JobRecord.from_dict(data)
        except TypeError:
            log.warning("Ignoring the malformed job state %s", self.job_path(key))
            return None

    def save_job(self, key: str, record: JobRecord) -> None:
        record.updated_at = utc_now()
        self._write(self.job_path(key), record.to_dict())

    def update_job(self, key: str, record: JobRecord, **changes: Any) -> JobRecord:
        for name, value in changes.items():
            setattr(record, name, value)
        self.save_job(key, record)
        return record

    # -- per-file completion markers ---------------------------------------------------

    def marker_path(self, key: str, file_name: str) -> StoragePath:
        return self.root / "jobs" / key / "files" / _marker_name(file_name)

    def file_marker(self, key: str, file_name: str) -> FileMarker | None:
        data = self._read(self.marker_path(key, file_name))
        if data is None:
            return None
        try:
            return FileMarker(**data)
        except TypeError:
            return None

    def mark_file_done(self, key: str, marker: FileMarker) -> None:
        self._write(self.marker_path(key, marker.name), asdict(marker))

    def clear_markers(self, key: str, file_names: Iterable[str]) -> None:
        """Delete this job's file markers (after it finished)."""
        for name in file_names:
            self._delete(self.marker_path(key, name))

    # -- export log parts of mapped download tasks (see exportlog.py) ------------------

    def log_part_path(self, key: str, file_name: str) -> StoragePath:
        """Where the mapped task downloading ``file_name`` writes its export log events: its
        own object, so concurrent tasks never overwrite each other's."""
        return self.root / "jobs" / key / "log" / (file_name.replace("/", "__") + ".ndjson")

    def log_parts(self, key: str) -> list[StoragePath]:
        """This job's export log parts, by name."""
        folder = self.root / "jobs" / key / "log"
        try:
            return sorted(
                (p for p in folder.iterdir() if p.name.endswith(".ndjson")), key=lambda p: p.name
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
