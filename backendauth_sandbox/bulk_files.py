"""Writing export files to disk fast, and streaming them back (plain or gzip).

Files are materialised once per job in a temp directory, in multi-megabyte writes, so that
downloads can use ``sendfile`` and run at loopback speed; a benchmark export of hundreds of MB
(``bulk_resource_padding_bytes``) is written in about a second and never held in memory.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from .fhir_search import Search
from .fhir_store import DeletedResource, FhirStore, StoredResource, format_instant

_WRITE_BUFFER = 8 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


class ExportCancelled(Exception):
    """The job was deleted (or the sandbox stopped) while its files were being written."""


@dataclass
class ExportFile:
    """One NDJSON file of a finished job."""

    name: str
    section: str  # "output" | "error" | "deleted"
    type: str
    path: str
    count: int


@dataclass
class ExportPlan:
    """What a job exports; fixed at kick-off time."""

    types: list[str]
    patients: set[str] | None
    since: float | None
    until: float | None
    type_filters: dict[str, list[Search]] = field(default_factory=dict)
    elements: list[str] | None = None
    error_severity: str | None = None
    lines_per_file: int | None = None
    padding_bytes: int = 0
    seed: int = 0
    organize_by: str | None = None  # "Patient": one block per patient, each led by a header

    def selects(self, stored: StoredResource) -> bool:
        if self.patients is not None and stored.patient_id not in self.patients:
            return False
        if self.since is not None and stored.last_updated <= self.since:
            return False
        if self.until is not None and stored.last_updated > self.until:
            return False
        filters = self.type_filters.get(stored.type)
        return not filters or any(f.matches(stored) for f in filters)

    def deletes(self, deleted: DeletedResource) -> bool:
        if self.since is None or deleted.type not in self.types:
            return False
        if self.patients is not None and deleted.patient_id not in self.patients:
            return False
        if deleted.deleted_at <= self.since:
            return False
        return self.until is None or deleted.deleted_at <= self.until


def padding_suffix(size: int, seed: int) -> bytes:
    """A narrative ``text`` element of about ``size`` bytes, appended to every resource line."""
    if size <= 0:
        return b"}"
    raw = base64.b64encode(random.Random(seed).randbytes(size))[:size]
    return (
        b',"text":{"status":"generated","div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">'
        + raw
        + b'</div>"}}'
    )


def _project(stored: StoredResource, elements: list[str]) -> bytes:
    wanted = {e.split(".", 1)[1] for e in elements if e.startswith(stored.type + ".")}
    wanted |= {e for e in elements if "." not in e}
    resource = stored.resource
    projected = {
        k: v for k, v in resource.items() if k in ("resourceType", "id", "meta") or k in wanted
    }
    meta = dict(projected.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    projected["meta"] = meta
    return json.dumps(projected, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _FileWriter:
    """Splits lines over ``Type.ndjson`` / ``Type.001.ndjson``... and writes in big batches."""

    def __init__(
        self,
        directory: str,
        prefix: str,
        section: str,
        type_: str,
        limit: int | None,
        cancelled: threading.Event,
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.section = section
        self.type = type_
        self.limit = limit
        self.cancelled = cancelled
        self.files: list[ExportFile] = []
        self._parts: list[bytes] = []
        self._buffered = 0
        self._lines_in_file = 0
        self._fh: BinaryIO | None = None

    def _open(self) -> None:
        index = len(self.files)
        name = (
            f"{self.prefix}.ndjson"
            if self.limit is None
            else (f"{self.prefix}.{index + 1:03d}.ndjson")
        )
        path = os.path.join(self.directory, name)
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in _close()
        self.files.append(ExportFile(name, self.section, self.type, path, 0))
        self._lines_in_file = 0

    def _flush(self) -> None:
        if self._parts:
            if self.cancelled.is_set():
                raise ExportCancelled
            assert self._fh is not None
            self._fh.write(b"".join(self._parts))
            self._parts = []
            self._buffered = 0

    def _close(self) -> None:
        self._flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def add(self, *parts: bytes, counted: bool = True) -> None:
        """One line; ``counted=False`` for header lines, which are not resources."""
        if self._fh is None or (self.limit is not None and self._lines_in_file >= self.limit):
            self._close()
            self._open()
        self._parts.extend(parts)
        self._parts.append(b"\n")
        self._buffered += sum(len(p) for p in parts) + 1
        self._lines_in_file += 1
        if counted:
            self.files[-1].count += 1
        if self._buffered >= _WRITE_BUFFER:
            self._flush()

    def finish(self) -> list[ExportFile]:
        self._close()
        return self.files


def write_export(
    store: FhirStore, plan: ExportPlan, directory: str, cancelled: threading.Event
) -> list[ExportFile]:
    """Write every file of one export into ``directory``; return them in manifest order."""
    os.makedirs(directory, exist_ok=True)
    files: list[ExportFile] = []
    suffix = padding_suffix(plan.padding_bytes, plan.seed)
    if plan.organize_by == "Patient":
        files.extend(_write_by_patient(store, plan, directory, cancelled, suffix))
    for resource_type in plan.types if plan.organize_by is None else ():
        writer = _FileWriter(
            directory, resource_type, "output", resource_type, plan.lines_per_file, cancelled
        )
        for stored in _candidates(store, plan, resource_type):
            if not plan.selects(stored):
                continue
            body = _project(stored, plan.elements) if plan.elements else stored.json
            writer.add(body[:-1], suffix)
        files.extend(writer.finish())

    if plan.error_severity is not None:
        writer = _FileWriter(directory, "errors", "error", "OperationOutcome", None, cancelled)
        code = "exception" if plan.error_severity == "fatal" else "processing"
        for resource_type in plan.types[:2] or ["Patient"]:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": plan.error_severity,
                        "code": code,
                        "diagnostics": f"sandbox: simulated {plan.error_severity} while exporting "
                        f"{resource_type}",
                    }
                ],
            }
            writer.add(json.dumps(outcome, separators=(",", ":")).encode("utf-8"))
        files.extend(writer.finish())

    if plan.since is not None:
        writer = _FileWriter(directory, "deleted", "deleted", "Bundle", None, cancelled)
        for resource_type in plan.types:
            for deleted in store.deleted.get(resource_type, []):
                if plan.deletes(deleted):
                    bundle = {
                        "resourceType": "Bundle",
                        "type": "transaction",
                        "meta": {"lastUpdated": format_instant(deleted.deleted_at)},
                        "entry": [
                            {"request": {"method": "DELETE", "url": f"{deleted.type}/{deleted.id}"}}
                        ],
                    }
                    writer.add(json.dumps(bundle, separators=(",", ":")).encode("utf-8"))
        files.extend(writer.finish())
    return files


def header_line(patient_id: str) -> bytes:
    """The header that leads each block of an ``organizeOutputBy=Patient`` file."""
    header = {
        "resourceType": "Parameters",
        "parameter": [{"name": "header", "valueReference": {"reference": f"Patient/{patient_id}"}}],
    }
    return json.dumps(header, separators=(",", ":")).encode("utf-8")


def _write_by_patient(
    store: FhirStore, plan: ExportPlan, directory: str, cancelled: threading.Event, suffix: bytes
) -> list[ExportFile]:
    """``organizeOutputBy=Patient``: per patient a header line, the Patient, then the
    patient's resources of the exported types (one block never spans two files)."""
    writer = _FileWriter(directory, "output", "output", "", None, cancelled)
    patients = sorted(plan.patients) if plan.patients is not None else store.patient_ids()
    for pid in patients:
        bucket = store.by_patient.get(pid, {})
        block = [
            stored
            for resource_type in plan.types
            for stored in bucket.get(resource_type, [])
            if plan.selects(stored)
        ]
        if not block:
            continue
        writer.add(header_line(pid), counted=False)
        for stored in block:
            body = _project(stored, plan.elements) if plan.elements else stored.json
            writer.add(body[:-1], suffix)
    return writer.finish()


def _candidates(store: FhirStore, plan: ExportPlan, resource_type: str) -> Iterable[StoredResource]:
    if plan.patients is None:
        return store.by_type.get(resource_type, [])
    return sorted(
        (r for pid in plan.patients for r in store.by_patient.get(pid, {}).get(resource_type, [])),
        key=lambda r: r.seq,
    )


def read_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            yield chunk


def gzip_chunks(path: str) -> Iterator[bytes]:
    """gzip on the fly (level 1: cheap; the point is exercising the client's decoding)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    for chunk in read_chunks(path):
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()
