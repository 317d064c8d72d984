"""Paged manifests (Bulk Data 3.0 ``allowPartialManifests``): the files of every page named
and numbered as one export, so a page adds files without renaming earlier ones.

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from airflow_provider_backendauth.core.bulk.files import ExportFile, plan_files
from airflow_provider_backendauth.core.bulk.manifest import FILE_KINDS, BulkManifest, ManifestEntry


def plan_pages(
    pages: Sequence[BulkManifest], compression: str | None = None
) -> list[list[ExportFile]]:
    """The files of each manifest page, named and numbered as one export (``Patient.000``
    on page 1, ``Patient.001`` on page 2...). A URL already listed on an earlier page is not
    listed again (the IG repeats ``error`` on every page, and a file lands once); within a
    page every entry counts."""
    seen: set[tuple[str, str]] = set()
    per_page: list[dict[str, list[ManifestEntry]]] = []
    for page in pages:
        kinds: dict[str, list[ManifestEntry]] = {kind: [] for kind in FILE_KINDS}
        for entry in page.entries:
            if (entry.kind, entry.url) not in seen:
                kinds[entry.kind].append(entry)
        seen.update((e.kind, e.url) for e in page.entries)
        per_page.append(kinds)

    def joined(kind: str) -> tuple[ManifestEntry, ...]:
        return tuple(e for kinds in per_page for e in kinds[kind])

    combined = replace(
        pages[0], output=joined("output"), error=joined("error"), deleted=joined("deleted")
    )
    planned = {
        kind: [f for f in plan_files(combined, compression) if f.kind == kind]
        for kind in FILE_KINDS
    }
    result: list[list[ExportFile]] = []
    offsets = dict.fromkeys(FILE_KINDS, 0)
    for kinds in per_page:
        files: list[ExportFile] = []
        for kind in FILE_KINDS:
            count = len(kinds[kind])
            files.extend(planned[kind][offsets[kind] : offsets[kind] + count])
            offsets[kind] += count
        result.append(files)
    return result
