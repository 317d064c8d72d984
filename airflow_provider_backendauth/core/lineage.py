"""The naming rules of what the provider reads and writes, for Assets, OpenLineage and logs.

One place decides how "Observation from this FHIR server" and "where the files went" are
named, so that Airflow Assets, OpenLineage datasets and the export log agree, and so that a
DAG scheduled on an Asset keeps working run after run:

- A **FHIR dataset** is named by the server's base URL (its *namespace*: scheme, host, port
  and path; no user info, query or fragment) and the resource type (its *name*), e.g.
  ``https://fhir.example.org/api/FHIR/R4`` + ``Observation``. A Group export's data is the
  group's, not the server's: ``Group/{id}/Observation``. System- and patient-level exports
  and searches name the type alone. The Airflow Asset URI is ``{namespace}/{name}``.
- The **storage location** of a run (``s3://bucket/out/2024-06-01``) is where this run's files
  went: it changes per run, so it goes into an Asset event's ``extra`` and into OpenLineage's
  output datasets, never into the Asset's identity. User info (an Airflow connection id, or
  worse), query and fragment are dropped.

Nothing here reads secrets, and every string that leaves goes through ``public_url``; server
given type names go through ``safe_type_name`` (the same rule as the file names). This module
imports no Airflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from airflow_provider_backendauth.core.names import safe_type_name

_SCHEME = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.S
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def public_url(url: str) -> str:
    """``url`` without user info, query string and fragment, control characters escaped, a
    trailing slash dropped: fit for an Asset, a lineage namespace or a log that others read.
    Plain paths (no ``scheme://``) keep their text, minus any query or fragment."""
    text = str(url).strip()
    match = _SCHEME.fullmatch(text)
    if match is None:
        shown = re.split(r"[?#]", text, maxsplit=1)[0]
    else:
        authority = match["authority"].rpartition("@")[2]
        path = re.split(r"[?#]", match["rest"], maxsplit=1)[0]
        shown = f"{match['scheme'].lower()}://{authority}{path}"
    shown = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", shown)
    return shown.rstrip("/") or shown


def fhir_namespace(base_url: str) -> str:
    """The namespace of a FHIR server's datasets: its base URL, made public (``public_url``)."""
    return public_url(base_url)


def fhir_dataset_name(resource_type: str, *, group_id: str | None = None) -> str:
    """The dataset name of one resource type on a server: ``Observation``, or
    ``Group/{id}/Observation`` for a Group export (the group's data, not the server's)."""
    kind = safe_type_name(resource_type)
    if group_id:
        return f"Group/{quote(str(group_id), safe='')}/{kind}"
    return kind


def fhir_asset_uri(base_url: str, resource_type: str, *, group_id: str | None = None) -> str:
    """The Airflow Asset URI of one resource type on a server (see the module docstring):
    ``https://fhir.example.org/api/FHIR/R4/Observation``."""
    return f"{fhir_namespace(base_url)}/{fhir_dataset_name(resource_type, group_id=group_id)}"


def storage_dataset(location: str) -> tuple[str, str]:
    """The OpenLineage ``(namespace, name)`` of a stored file or folder, per OpenLineage's
    naming conventions: ``s3://bucket`` + key, ``gs://bucket`` + key, ``file`` + absolute
    path for local files; other stores ``{scheme}://{bucket or container}`` + path. User
    info (an Airflow connection id) and query strings never reach it."""
    shown = public_url(location)
    match = _SCHEME.fullmatch(shown)
    if match is None:
        return "file", shown
    scheme, authority, path = match["scheme"], match["authority"], match["rest"]
    if scheme in ("file", "local"):
        return "file", f"/{authority}{path}".replace("//", "/") if authority else path
    return f"{scheme}://{authority}", path.lstrip("/") or "/"


def export_asset_extras(
    summary: Mapping[str, Any],
    *,
    since: str | None,
    level: str,
    group_id: str | None = None,
    types: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """One Asset event ``extra`` per output resource type of a bulk export's summary (what
    ``BulkExportJob.finish`` returns), keyed by the type's safe name: resources, files and
    bytes of that type, the export's ``transactionTime``, the ``_since`` it used, the level
    (and group), and the run's storage path. Small and JSON-serialisable; no URL of the
    server's files (signed storage URLs carry credentials), no token.

    Each requested type (``_type``) gets an event even when the export holds none of it: an
    incremental export without changes still says "up to date as of transactionTime"."""
    path = public_url(str(summary.get("destination") or ""))
    extras: dict[str, dict[str, Any]] = {}
    output = dict(summary.get("output") or {})
    for requested in types:
        output.setdefault(requested, {})
    for raw_type, entry in output.items():
        kind = safe_type_name(raw_type)
        extra = extras.setdefault(
            kind,
            {
                "source": "bulk-export",
                "resourceType": kind,
                "resources": 0,
                "files": 0,
                "bytes": 0,
                "transactionTime": summary.get("transactionTime"),
                "since": since,
                "level": level,
                "path": path,
            },
        )
        if group_id:
            extra["group"] = group_id
        extra["resources"] += int(entry.get("count") or 0)
        extra["files"] += len(entry.get("files") or [])
        extra["bytes"] += int(entry.get("bytes") or 0)
    return extras


def search_asset_extra(summary: Mapping[str, Any], *, path: str) -> dict[str, Any]:
    """The Asset event ``extra`` of a search written to files (``FhirSearchOperator``)."""
    files = summary.get("files") or []
    return {
        "source": "search",
        "resourceType": safe_type_name(str(summary.get("resource_type") or "")),
        "resources": int(summary.get("resources") or 0),
        "included": int(summary.get("included") or summary.get("included_dropped") or 0),
        "files": len(files),
        "bytes": int(summary.get("bytes") or 0),
        "pages": int(summary.get("pages") or 0),
        "truncated": bool(summary.get("truncated")),
        "path": public_url(path),
    }


def table_asset_extra(
    table: str, result: Mapping[str, Any], *, since: str | None = None
) -> dict[str, Any]:
    """The Asset event ``extra`` of one table written (``TableResult.as_dict()`` plus its
    ``resource``): the Delta version, rows now and changed, bytes added, the ``_since`` of the
    export it came from, and the table's location."""
    return {
        "source": "table",
        "table": table,
        "resourceType": safe_type_name(str(result.get("resource") or "")),
        "version": result.get("version"),
        "mode": result.get("mode"),
        "rows": int(result.get("rows") or 0),
        "rowsWritten": int(result.get("rows_written") or 0),
        "rowsRemoved": int(result.get("rows_removed") or 0),
        "files": int(result.get("files") or 0),
        "bytes": int(result.get("bytes") or 0),
        "since": since,
        "path": public_url(str(result.get("path") or "")),
    }
