"""FHIR search parameters: parsing (strict, 400 naming the parameter) and filtering.

Shared by the REST search endpoints and by bulk ``_typeFilter``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .fhir_store import PATIENT_COMPARTMENT, RESOURCE_TYPES, FhirStore, StoredResource

SEARCHABLE_TYPES = (*RESOURCE_TYPES, "Group")
COMMON_PARAMS = ("_id", "_lastUpdated")
RESULT_PARAMS = ("_count", "_include", "_total", "_format", "_sort", "_summary", "_cursor")
TYPE_PARAMS: dict[str, tuple[str, ...]] = {
    "Patient": (),
    "Group": (),
    **{t: ("patient", "subject") for t in PATIENT_COMPARTMENT},
}
INCLUDES: dict[str, tuple[str, ...]] = {
    t: (f"{t}:patient", f"{t}:subject", f"{t}:subject:Patient") for t in PATIENT_COMPARTMENT
}
SORTS = ("_id", "-_id", "_lastUpdated", "-_lastUpdated")
DATE_PREFIXES = ("eq", "ge", "gt", "le", "lt")

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<frac>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class SearchError(ValueError):
    """A bad search request; ``param`` names the offending parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def parse_date_range(text: str, param: str = "_lastUpdated") -> tuple[float, float]:
    """A FHIR date/dateTime/instant -> [start, end) in epoch seconds, by its precision."""
    match = _DATE.match(text)
    if match is None:
        raise SearchError(param, f"'{text}' is not a FHIR date, dateTime or instant")
    parts = match.groupdict()
    year = int(parts["y"])
    month = int(parts["m"] or 1)
    day = int(parts["d"] or 1)
    hour = int(parts["H"] or 0)
    minute = int(parts["M"] or 0)
    second = int(parts["S"] or 0)
    try:
        start = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
        if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
            raise ValueError
        if hour > 23 or minute > 59 or second > 60:
            raise ValueError
    except (ValueError, OverflowError):
        raise SearchError(param, f"'{text}' is not a valid date") from None
    tz = parts["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        start -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if parts["S"] is not None:
        start += float(parts["frac"] or 0.0)
        end = start + (1.0 if parts["frac"] is None else 0.001)
    elif parts["M"] is not None:
        end = start + 60
    elif parts["d"] is not None:
        end = start + 86_400
    elif parts["m"] is not None:
        end = float(calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0, 0, 0, 0)))
    else:
        end = float(calendar.timegm((year + 1, 1, 1, 0, 0, 0, 0, 0, 0)))
    return start, end


@dataclass(frozen=True)
class DateCondition:
    """One ``_lastUpdated`` value: prefix + range; a comma list of them is ORed."""

    prefix: str
    start: float
    end: float

    def matches(self, t: float) -> bool:
        if self.prefix == "eq":
            return self.start <= t < self.end
        if self.prefix == "ge":
            return t >= self.start
        if self.prefix == "gt":
            return t >= self.end
        if self.prefix == "le":
            return t < self.end
        return t < self.start  # lt


def parse_date_param(value: str, param: str = "_lastUpdated") -> list[DateCondition]:
    conditions = []
    for item in value.split(","):
        item = item.strip()
        prefix = item[:2] if item[:2].isalpha() else "eq"
        if item[:2].isalpha() and prefix not in DATE_PREFIXES:
            raise SearchError(param, f"prefix '{item[:2]}' is not supported (use eq/ge/gt/le/lt)")
        text = item[2:] if item[:2].isalpha() else item
        start, end = parse_date_range(text, param)
        conditions.append(DateCondition(prefix, start, end))
    return conditions


@dataclass
class Search:
    """A parsed, validated search on one resource type."""

    resource_type: str
    ids: set[str] | None = None
    patients: set[str] | None = None
    last_updated: list[list[DateCondition]] = field(default_factory=list)
    count: int = 50
    includes: list[str] = field(default_factory=list)
    sort: str | None = None
    summary_count: bool = False
    offset: int = 0
    canonical: list[tuple[str, str]] = field(default_factory=list)

    def matches(self, stored: StoredResource) -> bool:
        if self.ids is not None and stored.id not in self.ids:
            return False
        if self.patients is not None and stored.patient_id not in self.patients:
            return False
        return all(
            any(c.matches(stored.last_updated) for c in conditions)
            for conditions in self.last_updated
        )

    def result_key(self) -> tuple[object, ...]:
        """What decides the matches and their order (not the page: ``_count``, the offset)."""
        return (
            self.resource_type,
            None if self.ids is None else frozenset(self.ids),
            None if self.patients is None else frozenset(self.patients),
            tuple(tuple(conditions) for conditions in self.last_updated),
            self.sort,
        )

    def run(self, store: FhirStore) -> Sequence[StoredResource]:
        """The matches, in the store's order (seq) or ``_sort``'s. Computed once per query
        and store (the store is immutable once generated), so paging through N results
        costs a page each, not a scan of the type each."""
        return store.cached_results(self.result_key(), lambda: self._compute(store))

    def _compute(self, store: FhirStore) -> Sequence[StoredResource]:
        # Narrow with the indexes first, then keep the store's order (seq) for stable paging.
        pool: Sequence[StoredResource]
        date_conditions = self.last_updated
        if self.ids is not None:
            found = (store.get(self.resource_type, i) for i in self.ids)
            pool = sorted((r for r in found if r is not None), key=lambda r: r.seq)
        elif self.patients is not None and self.resource_type in PATIENT_COMPARTMENT:
            pool = sorted(
                (
                    r
                    for pid in self.patients
                    for r in store.by_patient.get(pid, {}).get(self.resource_type, [])
                ),
                key=lambda r: r.seq,
            )
        elif date_conditions:
            # The narrowest _lastUpdated parameter, by binary search on the date index.
            narrowest = min(
                (store.updated_between(self.resource_type, c) for c in date_conditions),
                key=len,
            )
            pool = sorted(narrowest, key=lambda r: r.seq)
        else:
            pool = store.by_type.get(self.resource_type, [])
        if self.ids is None and self.patients is None and not date_conditions:
            results: Sequence[StoredResource] = pool  # everything matches: no copy
        else:
            results = [r for r in pool if self.matches(r)]
        if self.sort:
            key = self.sort.lstrip("-")
            results = sorted(
                results,
                key=(lambda r: r.id) if key == "_id" else (lambda r: (r.last_updated, r.id)),
                reverse=self.sort.startswith("-"),
            )
        return results


def _reference_id(value: str, param: str) -> str:
    value = value.strip()
    if "/" in value:
        kind, _, ident = value.rstrip("/").rpartition("/")
        if not kind.endswith("Patient") or not ident:
            raise SearchError(param, f"'{value}' is not a Patient reference")
        return ident
    if not value:
        raise SearchError(param, "empty reference")
    return value


def encode_cursor(params: list[tuple[str, str]], offset: int) -> str:
    raw = json.dumps({"p": params, "o": offset}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[list[tuple[str, str]], int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        params = [(str(k), str(v)) for k, v in data["p"]]
        offset = int(data["o"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SearchError("_cursor", "invalid or corrupted page cursor") from None
    return params, offset


def parse_search(
    resource_type: str,
    params: list[tuple[str, str]],
    default_count: int = 50,
    max_count: int = 1000,
    allow_result_params: bool = True,
) -> Search:
    """Validate ``params`` (name, value pairs as sent) for ``resource_type``."""
    if resource_type not in SEARCHABLE_TYPES:
        raise SearchError("type", f"resource type '{resource_type}' is not supported")
    cursor = [v for k, v in params if k == "_cursor"]
    offset = 0
    if cursor:
        if len(params) > 1 and any(k not in ("_cursor", "_count", "_format") for k, _ in params):
            raise SearchError("_cursor", "a page cursor cannot be combined with other parameters")
        params, offset = decode_cursor(cursor[0])
    search = Search(resource_type, count=default_count, offset=offset)
    allowed = set(COMMON_PARAMS) | set(TYPE_PARAMS.get(resource_type, ()))
    if allow_result_params:
        allowed |= set(RESULT_PARAMS)
    for name, value in params:
        base = name.split(":", 1)[0]
        if base not in allowed:
            raise SearchError(name, f"unknown or unsupported search parameter for {resource_type}")
        if ":" in name:
            raise SearchError(name, "search parameter modifiers are not supported")
        search.canonical.append((name, value))
        if name == "_id":
            ids = {v.strip() for v in value.split(",") if v.strip()}
            search.ids = ids if search.ids is None else search.ids & ids
        elif name in ("patient", "subject"):
            refs = {_reference_id(v, name) for v in value.split(",")}
            search.patients = refs if search.patients is None else search.patients & refs
        elif name == "_lastUpdated":
            search.last_updated.append(parse_date_param(value, name))
        elif name == "_count":
            try:
                count = int(value)
            except ValueError:
                raise SearchError(name, f"'{value}' is not a non-negative integer") from None
            if count < 0:
                raise SearchError(name, f"'{value}' is not a non-negative integer")
            search.count = min(count, max_count)
        elif name == "_include":
            if value not in INCLUDES.get(resource_type, ()):
                supported = ", ".join(INCLUDES.get(resource_type, ())) or "none"
                raise SearchError(
                    name, f"'{value}' is not supported for {resource_type} (supported: {supported})"
                )
            search.includes.append(value)
        elif name == "_sort":
            if value not in SORTS:
                raise SearchError(name, f"'{value}' is not supported (use {', '.join(SORTS)})")
            search.sort = value
        elif name == "_summary":
            if value not in ("count", "false"):
                raise SearchError(name, "only _summary=count is supported")
            search.summary_count = value == "count"
        elif name == "_format":
            if value not in ("json", "application/json", "application/fhir+json"):
                raise SearchError(name, "only JSON is supported")
        elif name == "_total" and value not in ("none", "estimate", "accurate"):
            raise SearchError(name, "must be none, estimate or accurate")
    return search


def parse_type_filter(value: str) -> tuple[str, Search]:
    """A bulk ``_typeFilter`` entry (``Observation?_lastUpdated=ge2024-06-01``)."""
    from urllib.parse import parse_qsl

    resource_type, sep, query = value.partition("?")
    if not sep:
        raise SearchError("_typeFilter", f"'{value}' must look like Type?param=value")
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SearchError("_typeFilter", f"'{value}' has a malformed query") from None
    try:
        search = parse_search(resource_type, params, allow_result_params=False)
    except SearchError as exc:
        raise SearchError("_typeFilter", str(exc)) from None
    return resource_type, search


def include_targets(
    store: FhirStore, page: Sequence[StoredResource], includes: list[str]
) -> list[StoredResource]:
    if not includes:
        return []
    seen: set[str] = set()
    included: list[StoredResource] = []
    for stored in page:
        if stored.patient_id in seen or stored.type == "Patient":
            continue
        seen.add(stored.patient_id)
        patient = store.get("Patient", stored.patient_id)
        if patient is not None:
            included.append(patient)
    return included
