"""Deterministic synthetic FHIR R4 data: Patients with Observations, Conditions, Encounters.

Everything derives from ``seed`` and ``patients``, so a test can count on the same ids and
``meta.lastUpdated`` values on every run. ``lastUpdated`` is spread over 2024 so that
data-interval filters (``_lastUpdated``, bulk ``_since``/``_until``) select real subsets.
"""

from __future__ import annotations

import bisect
import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fhir_search import DateCondition

RESOURCE_TYPES = ("Patient", "Observation", "Condition", "Encounter")
PATIENT_COMPARTMENT = ("Observation", "Condition", "Encounter")
YEAR_START = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
YEAR_END = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()

_GIVEN = (
    "Ada",
    "Bjorn",
    "Chen",
    "Dara",
    "Emil",
    "Fatima",
    "Goran",
    "Hana",
    "Ingrid",
    "Jonas",
    "Kari",
    "Liam",
    "Mei",
    "Nora",
    "Omar",
    "Priya",
    "Rui",
    "Sofia",
    "Tariq",
    "Una",
)
_FAMILY = (
    "Andersen",
    "Berg",
    "Costa",
    "Dahl",
    "Eze",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Moreau",
    "Nakamura",
    "Olsen",
    "Patel",
)
_VITALS = (
    ("8867-4", "Heart rate", "/min", 50, 110),
    ("9279-1", "Respiratory rate", "/min", 10, 24),
    ("8310-5", "Body temperature", "Cel", 36, 39),
    ("29463-7", "Body weight", "kg", 40, 120),
    ("8302-2", "Body height", "cm", 140, 200),
)
_CONDITIONS = (
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("35489007", "Depressive disorder"),
    ("399211009", "History of myocardial infarction"),
)
_ENCOUNTER_CLASSES = (("AMB", "ambulatory"), ("EMER", "emergency"), ("IMP", "inpatient encounter"))


def format_instant(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


@dataclass
class StoredResource:
    """A resource plus what searches filter on, and its compact JSON (built once, on demand)."""

    type: str
    id: str
    patient_id: str
    last_updated: float
    resource: dict[str, Any]
    seq: int = 0
    _json: bytes | None = field(default=None, repr=False)

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = json.dumps(
                self.resource, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
        return self._json


@dataclass(frozen=True)
class DeletedResource:
    """A resource deleted during 2024, listed in bulk ``deleted`` files when ``_since`` is used."""

    type: str
    id: str
    patient_id: str
    deleted_at: float


_RESULT_CACHE_SIZE = 64


class FhirStore:
    """All resources of one sandbox, indexed by type, id, patient and ``lastUpdated``.

    The data never changes once generated, so search results are cached per query
    (``cached_results``): a client paging through a large result set costs the sandbox a page
    per request, and a search benchmark measures the client, not the sandbox's scans.
    """

    def __init__(self, patients: int, seed: int) -> None:
        self.patients = patients
        self.seed = seed
        self.by_type: dict[str, list[StoredResource]] = {t: [] for t in RESOURCE_TYPES}
        self.by_id: dict[tuple[str, str], StoredResource] = {}
        self.by_patient: dict[str, dict[str, list[StoredResource]]] = {}
        self.deleted: dict[str, list[DeletedResource]] = {t: [] for t in RESOURCE_TYPES}
        self.groups: dict[str, list[str]] = {}
        self._generate()
        # Per type: resources sorted by lastUpdated, and those instants (for bisect).
        self._by_updated: dict[str, list[StoredResource]] = {}
        self._updated_keys: dict[str, list[float]] = {}
        for kind, stored in self.by_type.items():
            ordered = sorted(stored, key=lambda r: (r.last_updated, r.seq))
            self._by_updated[kind] = ordered
            self._updated_keys[kind] = [r.last_updated for r in ordered]
        self._results: OrderedDict[tuple[object, ...], Sequence[StoredResource]] = OrderedDict()
        self._results_lock = threading.Lock()
        self.result_computations = 0  # tests: how often a query was evaluated

    # --- queries -------------------------------------------------------------------------

    def get(self, resource_type: str, resource_id: str) -> StoredResource | None:
        return self.by_id.get((resource_type, resource_id))

    def updated_between(
        self, resource_type: str, conditions: Iterable[DateCondition]
    ) -> list[StoredResource]:
        """Resources of a type whose ``lastUpdated`` may match one of ``conditions`` (ORed):
        the union of their ranges, found by binary search (``Search.matches`` still decides)."""
        ordered = self._by_updated.get(resource_type, [])
        keys = self._updated_keys.get(resource_type, [])
        spans = []
        for c in conditions:
            low, high = {
                "eq": (c.start, c.end),
                "ge": (c.start, None),
                "gt": (c.end, None),
                "le": (None, c.end),
                "lt": (None, c.start),
            }[c.prefix]
            first = 0 if low is None else bisect.bisect_left(keys, low)
            last = len(keys) if high is None else bisect.bisect_left(keys, high)
            spans.append((first, last))
        picked: list[StoredResource] = []
        end = 0
        for first, last in sorted(spans):
            first = max(first, end)
            if first < last:
                picked.extend(ordered[first:last])
                end = last
        return picked

    def cached_results(
        self, key: tuple[object, ...], compute: Callable[[], Sequence[StoredResource]]
    ) -> Sequence[StoredResource]:
        """Search results by query (see ``Search.result_key``), computed once (LRU)."""
        with self._results_lock:
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
                return found
        results = compute()  # outside the lock: two threads may both compute; same answer
        with self._results_lock:
            self.result_computations += 1
            self._results[key] = results
            while len(self._results) > _RESULT_CACHE_SIZE:
                self._results.popitem(last=False)
        return results

    def patient_ids(self) -> list[str]:
        return [r.id for r in self.by_type["Patient"]]

    def group_resource(self, group_id: str) -> dict[str, Any] | None:
        members = self.groups.get(group_id)
        if members is None:
            return None
        return {
            "resourceType": "Group",
            "id": group_id,
            "meta": {"lastUpdated": format_instant(YEAR_START)},
            "type": "person",
            "actual": True,
            "name": "All patients" if group_id == "all" else f"Sandbox cohort {group_id}",
            "quantity": len(members),
            "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in members],
        }

    # --- generation ----------------------------------------------------------------------

    def _generate(self) -> None:
        rng = random.Random(self.seed)
        width = max(4, len(str(self.patients)))
        span = YEAR_END - YEAR_START

        def stamp() -> float:
            return float(int(YEAR_START + rng.random() * span))

        for n in range(1, self.patients + 1):
            num = f"{n:0{width}d}"
            pid = f"pat-{num}"
            self._add(self._patient(rng, pid, n, stamp()), pid)
            for k in range(1, rng.randint(2, 5) + 1):
                self._add(self._observation(rng, f"obs-{num}-{k}", pid, stamp()), pid)
            for k in range(1, rng.randint(1, 2) + 1):
                self._add(self._condition(rng, f"cond-{num}-{k}", pid, stamp()), pid)
            for k in range(1, rng.randint(1, 3) + 1):
                self._add(self._encounter(rng, f"enc-{num}-{k}", pid, stamp()), pid)
            # Roughly one in four patients had an Observation deleted during the year.
            if rng.random() < 0.25:
                self.deleted["Observation"].append(
                    DeletedResource("Observation", f"obs-{num}-deleted", pid, stamp())
                )
        ids = self.patient_ids()
        self.groups = {
            "all": ids,
            "g1": ids[::2],
            "g2": ids[: min(3, len(ids))],
        }
        self.by_type["Group"] = []
        for seq, group_id in enumerate(self.groups):
            resource = self.group_resource(group_id)
            assert resource is not None
            stored = StoredResource("Group", group_id, "", YEAR_START, resource, seq)
            self.by_type["Group"].append(stored)
            self.by_id[("Group", group_id)] = stored

    def _add(self, resource: dict[str, Any], patient_id: str) -> None:
        kind = resource["resourceType"]
        stored = StoredResource(
            kind,
            resource["id"],
            patient_id,
            resource["meta"].pop("_epoch"),
            resource,
            len(self.by_type[kind]),
        )
        self.by_type[kind].append(stored)
        self.by_id[(stored.type, stored.id)] = stored
        bucket = self.by_patient.get(patient_id)
        if bucket is None:
            bucket = self.by_patient[patient_id] = {t: [] for t in RESOURCE_TYPES}
        bucket[stored.type].append(stored)

    @staticmethod
    def _meta(updated: float) -> dict[str, Any]:
        # _epoch is removed again by _add(); it saves parsing the string back.
        return {"versionId": "1", "lastUpdated": format_instant(updated), "_epoch": updated}

    def _patient(self, rng: random.Random, pid: str, n: int, updated: float) -> dict[str, Any]:
        birth = datetime.fromtimestamp(rng.uniform(-1_500_000_000, 1_100_000_000), tz=timezone.utc)
        return {
            "resourceType": "Patient",
            "id": pid,
            "meta": self._meta(updated),
            "identifier": [{"system": "urn:sandbox:mrn", "value": f"MRN{n:06d}"}],
            "active": True,
            "name": [
                {"use": "official", "family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}
            ],
            "gender": rng.choice(("female", "male", "other", "unknown")),
            "birthDate": birth.strftime("%Y-%m-%d"),
        }

    def _observation(
        self, rng: random.Random, oid: str, pid: str, updated: float
    ) -> dict[str, Any]:
        code, display, unit, low, high = rng.choice(_VITALS)
        return {
            "resourceType": "Observation",
            "id": oid,
            "meta": self._meta(updated),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                "text": display,
            },
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": format_instant(updated - rng.randint(0, 86_400)),
            "valueQuantity": {
                "value": round(rng.uniform(low, high), 1),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }

    def _condition(self, rng: random.Random, cid: str, pid: str, updated: float) -> dict[str, Any]:
        code, display = rng.choice(_CONDITIONS)
        return {
            "resourceType": "Condition",
            "id": cid,
            "meta": self._meta(updated),
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": rng.choice(("active", "resolved")),
                    }
                ]
            },
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}],
                "text": display,
            },
            "subject": {"reference": f"Patient/{pid}"},
            "recordedDate": format_instant(updated - rng.randint(0, 30 * 86_400)),
        }

    def _encounter(self, rng: random.Random, eid: str, pid: str, updated: float) -> dict[str, Any]:
        code, display = rng.choice(_ENCOUNTER_CLASSES)
        start = updated - rng.randint(3_600, 10 * 86_400)
        return {
            "resourceType": "Encounter",
            "id": eid,
            "meta": self._meta(updated),
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": code,
                "display": display,
            },
            "subject": {"reference": f"Patient/{pid}"},
            "period": {
                "start": format_instant(start),
                "end": format_instant(start + rng.randint(600, 3_600)),
            },
        }
