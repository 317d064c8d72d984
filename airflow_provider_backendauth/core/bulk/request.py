"""What to export: the Bulk Data kick-off request (level, parameters, GET query or POST
``Parameters`` body).

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.core.urls import join_url, with_query

LEVELS = ("system", "patient", "group")
FHIR_JSON = "application/fhir+json"
KICKOFF_HEADERS = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
STATUS_HEADERS = {"Accept": "application/json"}


def as_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """A parameter value as a tuple: comma-separated text is split, blanks dropped."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(item.strip() for item in items if item and item.strip())


def format_instant(value: str | datetime | None) -> str | None:
    """A FHIR instant from a datetime (naive means UTC) or text (returned stripped)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class BulkExportRequest:
    """What to export. Build it with ``BulkExportRequest.create(...)`` for friendly inputs.

    Attributes:
        level: ``system`` (``[base]/$export``), ``patient`` (``Patient/$export``) or
            ``group`` (``Group/{group_id}/$export``).
        group_id: the Group's id, for ``level="group"``.
        types: ``_type`` resource types.
        since: ``_since`` instant.
        until: ``_until`` instant (Bulk Data 3.0).
        elements: ``_elements``.
        type_filters: ``_typeFilter`` queries (each like ``Observation?category=vital-signs``).
        patients: ``patient`` references (POST only), e.g. ``Patient/123``.
        include_associated_data: ``includeAssociatedData`` values.
        output_format: ``_outputFormat`` (server default: ``application/fhir+ndjson``).
        organize_output_by: ``organizeOutputBy`` (Bulk Data 3.0): a resource type, e.g.
            ``Patient``; files then hold blocks, each led by a header line.
        allow_partial_manifests: ``allowPartialManifests=true`` (Bulk Data 3.0): the server
            may split the manifest into pages linked by ``next``.
        method: ``GET`` or ``POST`` (a ``Parameters`` body); None picks POST when patients
            are given, else GET.
        extra_params: other (name, value) parameters for vendor extensions.
    """

    level: str = "system"
    group_id: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    elements: tuple[str, ...] = ()
    type_filters: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    include_associated_data: tuple[str, ...] = ()
    output_format: str | None = None
    method: str | None = None
    extra_params: tuple[tuple[str, str], ...] = ()
    organize_output_by: str | None = None
    allow_partial_manifests: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ConfigurationError(
                f"Bulk export level {self.level!r} is not one of {', '.join(LEVELS)}."
            )
        if self.level == "group" and not self.group_id:
            raise ConfigurationError("A group-level export needs group_id (the Group's id).")
        if self.level != "group" and self.group_id:
            raise ConfigurationError(
                f"group_id is only used with level='group', not {self.level!r}."
            )
        if self.method is not None and self.method.upper() not in ("GET", "POST"):
            raise ConfigurationError(
                f"Bulk export method must be GET or POST, not {self.method!r}."
            )
        if self.patients and self.http_method != "POST":
            raise ConfigurationError(
                "The 'patient' parameter can only be sent in a POST kick-off; leave method unset "
                "or set it to 'POST'."
            )
        if self.patients and self.level == "system":
            raise ConfigurationError(
                "The 'patient' parameter applies to patient- and group-level exports only."
            )

    @classmethod
    def create(
        cls,
        level: str = "system",
        *,
        group_id: str | None = None,
        types: str | Iterable[str] | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        elements: str | Iterable[str] | None = None,
        type_filters: str | Iterable[str] | None = None,
        patients: str | Iterable[str] | None = None,
        include_associated_data: str | Iterable[str] | None = None,
        output_format: str | None = None,
        method: str | None = None,
        extra_params: Mapping[str, str | Iterable[str]] | None = None,
        organize_output_by: str | None = None,
        allow_partial_manifests: bool = False,
    ) -> BulkExportRequest:
        """Build a request from strings (comma lists), sequences or datetimes.

        ``type_filters`` is never split on commas (a filter query may contain them): pass
        several filters as a list.
        """
        if isinstance(type_filters, str):
            filters: tuple[str, ...] = (type_filters.strip(),) if type_filters.strip() else ()
        else:
            filters = tuple(str(f).strip() for f in (type_filters or ()) if str(f).strip())
        extra: list[tuple[str, str]] = []
        for name, value in (extra_params or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            extra.extend((str(name), str(v)) for v in values)
        return cls(
            level=(level or "system").strip().lower(),
            group_id=(group_id or "").strip() or None,
            types=as_list(types),
            since=format_instant(since),
            until=format_instant(until),
            elements=as_list(elements),
            type_filters=filters,
            patients=tuple(_patient_reference(p) for p in as_list(patients)),
            include_associated_data=as_list(include_associated_data),
            output_format=(output_format or "").strip() or None,
            method=method.upper() if method else None,
            extra_params=tuple(extra),
            organize_output_by=(organize_output_by or "").strip() or None,
            allow_partial_manifests=bool(allow_partial_manifests),
        )

    @property
    def http_method(self) -> str:
        if self.method:
            return self.method.upper()
        return "POST" if self.patients else "GET"

    @property
    def path(self) -> str:
        """The kick-off path relative to the FHIR base URL."""
        if self.level == "patient":
            return "Patient/$export"
        if self.level == "group":
            return f"Group/{quote(str(self.group_id), safe='')}/$export"
        return "$export"

    def url(self, base_url: str) -> str:
        """The kick-off URL (with the query string for GET)."""
        url = join_url(base_url, self.path)
        return with_query(url, self.query()) if self.http_method == "GET" else url

    def query(self) -> list[tuple[str, str]]:
        """The parameters as query pairs (GET kick-off)."""
        pairs: list[tuple[str, str]] = []
        if self.output_format:
            pairs.append(("_outputFormat", self.output_format))
        if self.since:
            pairs.append(("_since", self.since))
        if self.until:
            pairs.append(("_until", self.until))
        if self.types:
            pairs.append(("_type", ",".join(self.types)))
        if self.elements:
            pairs.append(("_elements", ",".join(self.elements)))
        pairs.extend(("_typeFilter", f) for f in self.type_filters)
        if self.include_associated_data:
            pairs.append(("includeAssociatedData", ",".join(self.include_associated_data)))
        if self.organize_output_by:
            pairs.append(("organizeOutputBy", self.organize_output_by))
        if self.allow_partial_manifests:
            pairs.append(("allowPartialManifests", "true"))
        pairs.extend(self.extra_params)
        return pairs

    def parameters(self) -> dict[str, Any]:
        """The parameters as a FHIR ``Parameters`` resource (POST kick-off)."""
        parameter: list[dict[str, Any]] = []
        for name, value in self.query():
            if name in ("_since", "_until"):
                parameter.append({"name": name, "valueInstant": value})
            elif name == "includeAssociatedData":
                parameter.extend({"name": name, "valueCode": v} for v in value.split(","))
            elif name == "allowPartialManifests":
                parameter.append({"name": name, "valueBoolean": True})
            else:
                parameter.append({"name": name, "valueString": value})
        parameter.extend(
            {"name": "patient", "valueReference": {"reference": p}} for p in self.patients
        )
        return {"resourceType": "Parameters", "parameter": parameter}

    def describe(self) -> str:
        """One line for logs."""
        what = f"{self.level}-level" + (f" (Group/{self.group_id})" if self.group_id else "")
        details = [f"types={','.join(self.types) or 'all'}"]
        if self.since:
            details.append(f"since={self.since}")
        if self.until:
            details.append(f"until={self.until}")
        if self.patients:
            details.append(f"patients={len(self.patients)}")
        return f"{what} $export via {self.http_method}, {', '.join(details)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "group_id": self.group_id,
            "types": list(self.types),
            "since": self.since,
            "until": self.until,
            "elements": list(self.elements),
            "type_filters": list(self.type_filters),
            "patients": list(self.patients),
            "include_associated_data": list(self.include_associated_data),
            "output_format": self.output_format,
            "method": self.method,
            "extra_params": [list(p) for p in self.extra_params],
            "organize_output_by": self.organize_output_by,
            "allow_partial_manifests": self.allow_partial_manifests,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BulkExportRequest:
        return cls(
            level=data.get("level", "system"),
            group_id=data.get("group_id"),
            types=tuple(data.get("types") or ()),
            since=data.get("since"),
            until=data.get("until"),
            elements=tuple(data.get("elements") or ()),
            type_filters=tuple(data.get("type_filters") or ()),
            patients=tuple(data.get("patients") or ()),
            include_associated_data=tuple(data.get("include_associated_data") or ()),
            output_format=data.get("output_format"),
            method=data.get("method"),
            extra_params=tuple((str(n), str(v)) for n, v in data.get("extra_params") or ()),
            organize_output_by=data.get("organize_output_by"),
            allow_partial_manifests=bool(data.get("allow_partial_manifests")),
        )


def _patient_reference(value: str) -> str:
    value = value.strip()
    return value if "/" in value else f"Patient/{value}"
