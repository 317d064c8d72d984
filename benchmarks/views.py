"""The ViewDefinition runner's speed (``core.views``) on generated FHIR data: ``make bench``.

    .venv/bin/python benchmarks/views.py                  # 20k Observations, 5k Patients, 5 rounds
    .venv/bin/python benchmarks/views.py --quick          # a smoke run (small, 2 rounds)
    .venv/bin/python benchmarks/views.py --resources 50000 --repeat 7

Four realistic views run over Synthea-shaped NDJSON generated here (seeded, so every run
reads the same bytes): ``OBSERVATION_VIEW`` (one row per ``code.coding`` with the subject's
key, the value as a Quantity or a code, the category), ``PATIENT_VIEW`` (US Core
demographics with the race and birth-sex extensions, official name, address, deceased),
and the provider's ready ``observation`` and ``patient_demographics`` views.
Contenders, each timed per round in a rotating order:

- ``core.views, run``: ``compile_view(view).run(parsed resources)`` (the FHIRPath closures
  and the row assembly alone);
- ``core.views, parse (P) + run``: the same from NDJSON bytes, each line parsed by
  ``read_resources(lines, parser=P)`` for every installed parser P (msgspec, json), Decimal
  for decimals (what a table writer pays per resource);
- ``fhirpathpy, run`` (when installed): the same views' paths compiled once each with
  ``fhirpathpy.compile`` (FHIR R4 model, for choice types) and evaluated per resource / per
  ``forEach`` item by the same row loop. fhirpathpy has no ``getResourceKey()`` /
  ``getReferenceKey()``, so its variant reads ``id`` and ``subject.reference`` instead
  (cheaper paths: the comparison favours it).

Figures are resources/s (median and best of ``--repeat`` rounds of wall time, and the median
per second of this process's CPU time, which other work on the machine disturbs less),
printed with the 1/5/15 minute load average at the start and end: on a busy machine the wall
figures are lower bounds.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from load import Load, add_arguments, check

from airflow_provider_backendauth import view_definitions
from airflow_provider_backendauth.core.views import compile_view, read_resources
from airflow_provider_backendauth.core.views.reader import PARSERS

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"

OBSERVATION_VIEW: dict[str, Any] = {
    "resourceType": "ViewDefinition",
    "name": "observation_codes",
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "id"},
                {"name": "patient_id", "path": "subject.getReferenceKey(Patient)", "type": "id"},
                {"name": "status", "path": "status", "type": "code"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).code", "type": "code"},
                {
                    "name": "value_code",
                    "path": "value.ofType(CodeableConcept).coding.first().code",
                    "type": "code",
                },
                {
                    "name": "category",
                    "path": f"category.coding.where(system = '{CATEGORY}').code.first()",
                    "type": "code",
                },
            ]
        },
        {
            "forEach": "code.coding",
            "column": [
                {"name": "code_system", "path": "system", "type": "uri"},
                {"name": "code", "path": "code", "type": "code"},
                {"name": "display", "path": "display", "type": "string"},
            ],
        },
    ],
}

PATIENT_VIEW: dict[str, Any] = {
    "resourceType": "ViewDefinition",
    "name": "patient_demographics",
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "id"},
                {"name": "gender", "path": "gender", "type": "code"},
                {"name": "birth_date", "path": "birthDate", "type": "date"},
                {
                    "name": "family",
                    "path": "name.where(use = 'official').family.first()",
                    "type": "string",
                },
                {
                    "name": "given",
                    "path": "name.where(use = 'official').given.join(' ')",
                    "type": "string",
                },
                {
                    "name": "race",
                    "path": f"extension('{US_CORE}us-core-race').extension('ombCategory')"
                    ".value.ofType(Coding).code.first()",
                    "type": "code",
                },
                {
                    "name": "birth_sex",
                    "path": f"extension('{US_CORE}us-core-birthsex').value.ofType(code).first()",
                    "type": "code",
                },
                {"name": "city", "path": "address.first().city", "type": "string"},
                {"name": "postal_code", "path": "address.first().postalCode", "type": "string"},
                {"name": "deceased", "path": "deceased.ofType(dateTime)", "type": "dateTime"},
                {
                    "name": "marital_status",
                    "path": "maritalStatus.coding.first().code",
                    "type": "code",
                },
            ]
        }
    ],
}

_LOINC = [
    ("8302-2", "Body Height", "cm", 150.0, 200.0),
    ("29463-7", "Body Weight", "kg", 40.0, 120.0),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 16.0, 40.0),
    ("8867-4", "Heart rate", "/min", 50.0, 110.0),
    ("2339-0", "Glucose", "mg/dL", 60.0, 200.0),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating", "{score}", 0.0, 10.0),
]


def _uuid(rng: random.Random) -> str:
    a, b, c, d, e = (rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48))
    return f"{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}"


def _observation(rng: random.Random, patient: str) -> dict[str, Any]:
    code, display, unit, low, high = rng.choice(_LOINC)
    codings = [{"system": "http://loinc.org", "code": code, "display": display}]
    if rng.random() < 0.3:  # a second coding, as translated codes appear in real exports
        codings.append({"system": "http://snomed.info/sct", "code": str(rng.randint(10**8, 10**9))})
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _uuid(rng),
        "meta": {"profile": [f"{US_CORE}us-core-observation-lab"]},
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": codings, "text": display},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{_uuid(rng)}"},
        "effectiveDateTime": f"20{rng.randint(10, 25)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        f"T0{rng.randint(0, 9)}:1{rng.randint(0, 9)}:00+00:00",
        "issued": "2024-03-01T10:00:00.000+00:00",
    }
    if rng.random() < 0.9:
        obs["valueQuantity"] = {
            "value": round(rng.uniform(low, high), 2),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
    else:
        obs["valueCodeableConcept"] = {
            "coding": [{"system": "http://snomed.info/sct", "code": "1"}]
        }
    return obs


def _patient(rng: random.Random, pid: str) -> dict[str, Any]:
    family, given = rng.choice(["Smith", "Jones", "Garcia", "Lee"]), rng.choice(["Ann", "Bo"])
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "extension": [
            {
                "url": f"{US_CORE}us-core-race",
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                        },
                    },
                    {"url": "text", "valueString": "White"},
                ],
            },
            {"url": f"{US_CORE}us-core-birthsex", "valueCode": rng.choice("MF")},
        ],
        "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": pid}],
        "name": [
            {"use": "official", "family": family, "given": [given, "Q"], "prefix": ["Ms."]},
            {"use": "maiden", "family": "Old" + family, "given": [given]},
        ],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
        "gender": rng.choice(["male", "female"]),
        "birthDate": f"19{rng.randint(20, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "address": [
            {"line": ["1 Main St"], "city": "Boston", "state": "MA", "postalCode": "02110"}
        ],
        "maritalStatus": {
            "coding": [{"system": "http://hl7.org/fhir/v3/MaritalStatus", "code": "M"}]
        },
        "multipleBirthBoolean": False,
    }
    if rng.random() < 0.1:
        patient["deceasedDateTime"] = "2020-01-01T00:00:00+00:00"
    return patient


def generate(observations: int, seed: int = 19) -> tuple[list[bytes], list[bytes]]:
    """(Observation NDJSON lines, Patient NDJSON lines): one Patient per 4 Observations."""
    rng = random.Random(seed)
    patients = [_uuid(rng) for _ in range(max(1, observations // 4))]
    obs = [
        json.dumps(_observation(rng, rng.choice(patients))).encode() for _ in range(observations)
    ]
    pts = [json.dumps(_patient(rng, pid)).encode() for pid in patients]
    return obs, pts


def _fhirpathpy_runner(view: dict[str, Any]) -> Callable[[Iterable[dict[str, Any]]], Iterator[Any]]:
    """The same view evaluated by fhirpathpy (top-level columns and one forEach level)."""
    import fhirpathpy
    from fhirpathpy.models import models

    def portable(path: str) -> str:
        return {
            "getResourceKey()": "id",
            "subject.getReferenceKey(Patient)": "subject.reference",
        }.get(path, path)

    def compiled(select: dict[str, Any]) -> list[tuple[str, Any]]:
        return [
            (c["name"], fhirpathpy.compile(portable(c["path"]), models["r4"]))
            for c in select.get("column", [])
        ]

    top = [compiled(s) for s in view["select"] if "forEach" not in s]
    each = [
        (fhirpathpy.compile(s["forEach"], models["r4"]), compiled(s))
        for s in view["select"]
        if "forEach" in s
    ]

    def one(values: list[Any]) -> Any:
        return values[0] if values else None

    def run(resources: Iterable[dict[str, Any]]) -> Iterator[Any]:
        for resource in resources:
            row = {name: one(fn(resource)) for cols in top for name, fn in cols}
            if not each:
                yield row
                continue
            path, cols = each[0]
            for item in path(resource):
                yield {**row, **{name: one(fn(item)) for name, fn in cols}}

    return run


def _timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds, rows) of one run."""
    start, cpu = time.perf_counter(), time.process_time()
    rows = fn()
    return time.perf_counter() - start, time.process_time() - cpu, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--resources", type=int, default=20_000, help="Observations (Patients: 1/4)"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-fhirpathpy", action="store_true")
    add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.resources = min(args.resources, 2_000)
        args.repeat = 2
    start_load = check(args.require_idle, "the views benchmark")
    obs_lines, pt_lines = generate(args.resources)
    cases: list[tuple[str, dict[str, Any], list[bytes], bool]] = [
        ("Observation, forEach code.coding", OBSERVATION_VIEW, obs_lines, True),
        ("Patient demographics", PATIENT_VIEW, pt_lines, True),
    ]
    # The provider's ready views (what the table operator runs by default); fhirpathpy has
    # no getReferenceKey(), so they are measured for core.views only.
    for ready, lines in (("observation", obs_lines), ("patient_demographics", pt_lines)):
        cases.append((f"ready view {ready}", view_definitions.load(ready), lines, False))
    try:
        import fhirpathpy  # noqa: F401

        with_fhirpathpy = not args.no_fhirpathpy
    except ImportError:
        with_fhirpathpy = False
    print(f"load average at start: {start_load} on {start_load.cores} cores")
    print(
        f"{'view':34} {'contender':34} {'resources':>9} {'rows':>7} {'median/s':>10} "
        f"{'best/s':>10} {'per CPU s':>10}"
    )
    for title, view, lines, comparable in cases:
        parsed = [json.loads(line, parse_float=Decimal) for line in lines]
        compiled = compile_view(view)
        contenders: dict[str, Callable[[], int]] = {
            "core.views, run": lambda c=compiled, p=parsed: sum(1 for _ in c.run(p)),
        }
        for parser in PARSERS.names():
            contenders[f"core.views, parse ({parser}) + run"] = (
                lambda c=compiled, ls=lines, p=parser: sum(1 for _ in c.run(read_resources(ls, p)))
            )
        if with_fhirpathpy and comparable:
            other = _fhirpathpy_runner(view)
            # fhirpathpy annotates the resources it reads: give it its own copy.
            mine = copy.deepcopy(parsed)
            contenders["fhirpathpy, run"] = lambda r=other, p=mine: sum(1 for _ in r(p))
        times: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        rows: dict[str, int] = {}
        names = list(contenders)
        for round_ in range(args.repeat):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                seconds, cpu_seconds, rows[name] = _timed(contenders[name])
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
        for name in names:
            median = len(lines) / statistics.median(times[name])
            best = len(lines) / min(times[name])
            per_cpu = len(lines) / statistics.median(cpu[name])
            print(
                f"{title:34} {name:34} {len(lines):>9} {rows[name]:>7} "
                f"{median:>10,.0f} {best:>10,.0f} {per_cpu:>10,.0f}"
            )
    print(f"load average at end: {Load.now()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
