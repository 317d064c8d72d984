"""Bulk Data files as data: what the manifest asks for under which safe name, what came out,
what the error files say, and the summary an operator returns.

No I/O beyond reading finished error files; the downloads themselves are ``download.py``.
This module imports no Airflow.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_backendauth.core.bulk.compress import is_gzip_name, stored_name
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.fhir.outcome import operation_outcome_text
from airflow_provider_backendauth.core.names import safe_type_name
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.paths import StoragePath

log = get_logger(__name__)

KIND_FOLDERS = {"output": "", "error": "error/", "deleted": "deleted/"}


# --- what to download, under which name ---------------------------------------------------


@dataclass(frozen=True)
class ExportFile:
    """One file to download.

    Attributes:
        kind: ``output``, ``error`` or ``deleted``.
        type: the manifest's ``type`` (informational; never used raw in paths).
        url: where to get it.
        name: its path relative to the destination, e.g. ``Patient.000.ndjson``,
            ``error/OperationOutcome.000.ndjson``, ``deleted/Bundle.000.ndjson``; with
            ``.gz`` appended when the export stores its files gzipped (``compress.py``).
        count: the manifest's ``count``, if given.
        organized: the export was ``organizeOutputBy``: header lines lead each block and are
            not resources (neither counted nor compared with ``count``).
    """

    kind: str
    type: str
    url: str
    name: str
    count: int | None = None
    organized: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportFile:
        count = data.get("count")
        return cls(
            kind=str(data["kind"]),
            type=str(data.get("type") or ""),
            url=str(data["url"]),
            name=str(data["name"]),
            count=int(count) if count is not None else None,
            organized=bool(data.get("organized")),
        )


def plan_files(manifest: BulkManifest, compression: str | None = None) -> list[ExportFile]:
    """The manifest's files with their destination names (numbered per kind and type;
    ``.ndjson.gz`` with ``compression="gzip"``)."""
    seen: dict[tuple[str, str], int] = {}
    files = []
    for entry in manifest.entries:
        organized = manifest.organized_by is not None and entry.kind == "output"
        # Organized files hold several types and the IG omits their "type".
        safe = "output" if organized and not entry.type else safe_type_name(entry.type)
        key = (entry.kind, safe.lower())  # case-insensitive filesystems
        index = seen.get(key, 0)
        seen[key] = index + 1
        name = stored_name(f"{KIND_FOLDERS[entry.kind]}{safe}.{index:03d}.ndjson", compression)
        files.append(ExportFile(entry.kind, entry.type, entry.url, name, entry.count, organized))
    return files


@dataclass(frozen=True)
class FileResult:
    """A file in the destination: ``count`` lines, ``bytes`` bytes (as stored, uncompressed).

    ``skipped`` means it was already complete from an earlier try."""

    name: str
    kind: str
    type: str
    count: int
    bytes: int
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- error files and the summary -----------------------------------------------------------


@dataclass
class ErrorReport:
    """What the export's error files say.

    Attributes:
        outcomes: OperationOutcome lines read.
        errors: outcomes with a ``fatal`` or ``error`` issue.
        warnings: the other outcomes (``warning``/``information``).
        samples: the first few error diagnostics, quoted in the failure message.
    """

    files: int = 0
    outcomes: int = 0
    errors: int = 0
    warnings: int = 0
    unreadable: int = 0
    samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "count": self.outcomes,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def _lines(path: StoragePath) -> Iterator[bytes]:
    with path.open("rb") as handle:
        if is_gzip_name(path.name):  # stored gzipped (compression="gzip")
            with gzip.GzipFile(fileobj=handle) as lines:
                yield from lines
        else:
            yield from handle


def scan_error_files(paths: Iterable[StoragePath], *, max_samples: int = 5) -> ErrorReport:
    """Read the error files (NDJSON of OperationOutcome) and classify their issues; logs the
    non-error ones."""
    report = ErrorReport()
    for path in paths:
        report.files += 1
        for raw in _lines(path):
            if not raw.strip():
                continue
            try:
                outcome = json.loads(raw)
            except ValueError:
                report.unreadable += 1
                report.errors += 1
                continue
            report.outcomes += 1
            text, _ = operation_outcome_text(outcome)
            severities = {
                str(issue.get("severity"))
                for issue in (outcome.get("issue") or [] if isinstance(outcome, dict) else [])
                if isinstance(issue, dict)
            }
            if severities & {"fatal", "error"}:
                report.errors += 1
                if len(report.samples) < max_samples:
                    report.samples.append(text or "an OperationOutcome without diagnostics")
            else:
                report.warnings += 1
                log.info("Export error file %s: %s", path.name, text)
    return report


def summarize(
    manifest: BulkManifest,
    results: Sequence[FileResult],
    errors: ErrorReport,
    *,
    destination: str,
    manifest_name: str,
) -> dict[str, Any]:
    """The small JSON summary an operator returns to XCom (no URLs, no tokens)."""
    output: dict[str, dict[str, Any]] = {}
    deleted = {"files": 0, "count": 0}
    for result in results:
        if result.kind == "output":
            entry = output.setdefault(
                result.type or "Unknown", {"files": [], "count": 0, "bytes": 0}
            )
            entry["files"].append(result.name)
            entry["count"] += result.count
            entry["bytes"] += result.bytes
        elif result.kind == "deleted":
            deleted["files"] += 1
            deleted["count"] += result.count
    return {
        "transactionTime": manifest.transaction_time,
        "destination": destination,
        "manifest": manifest_name,
        "output": output,
        "error": errors.as_dict(),
        "deleted": deleted,
        "files": len(results),
        "bytes": sum(r.bytes for r in results),
        "resumed_files": sum(1 for r in results if r.skipped),
    }
