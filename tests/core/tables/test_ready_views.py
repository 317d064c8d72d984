"""The ready views shipped with the package: each compiles, runs over sandbox data (Patient,
Observation, Condition, Encounter) and US Core-shaped examples (components, race/ethnicity
extensions, MedicationRequest, Procedure), and writes its typed table."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.tables.flatten import flatten
from airflow_provider_backendauth.core.views import compile_view
from airflow_provider_backendauth.view_definitions import load, names
from backendauth_sandbox.fhir_store import FhirStore

US = "http://hl7.org/fhir/us/core/StructureDefinition/"

BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "id": "bp-1",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}
        ]
    },
    "subject": {"reference": "Patient/p-1"},
    "encounter": {"reference": "Encounter/e-1"},
    "effectivePeriod": {"start": "2024-03-01T10:00:00Z"},
    "issued": "2024-03-01T10:05:00.250+01:00",
    "component": [
        {
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"}]
            },
            "valueQuantity": {"value": 120.0, "unit": "mm[Hg]", "code": "mm[Hg]"},
        },
        {
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic"}]
            },
            "valueQuantity": {"value": 80, "unit": "mm[Hg]"},
        },
    ],
}
PATIENT = {
    "resourceType": "Patient",
    "id": "p-1",
    "extension": [
        {
            "url": US + "us-core-race",
            "extension": [
                {"url": "ombCategory", "valueCoding": {"code": "2106-3"}},
                {"url": "ombCategory", "valueCoding": {"code": "2028-9"}},
                {"url": "text", "valueString": "Mixed"},
            ],
        },
        {
            "url": US + "us-core-ethnicity",
            "extension": [{"url": "ombCategory", "valueCoding": {"code": "2186-5"}}],
        },
        {"url": US + "us-core-birthsex", "valueCode": "F"},
    ],
    "identifier": [{"system": "urn:mrn", "value": "M1"}],
    "name": [
        {"use": "maiden", "family": "Old", "given": ["A"]},
        {"use": "official", "family": "Smith", "given": ["Ann", "B"]},
    ],
    "telecom": [{"system": "email", "value": "a@example.org"}, {"system": "phone", "value": "555"}],
    "gender": "female",
    "birthDate": "1970-05",
    "deceasedDateTime": "2020-01-01",
    "address": [{"city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US"}],
    "communication": [{"language": {"coding": [{"code": "en"}]}}],
}
MEDICATION_REQUEST = {
    "resourceType": "MedicationRequest",
    "id": "mr-1",
    "status": "active",
    "intent": "order",
    "reportedBoolean": False,
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1049221",
                "display": "Acetaminophen 325 MG",
            }
        ]
    },
    "subject": {"reference": "Patient/p-1"},
    "encounter": {"reference": "Encounter/e-1"},
    "authoredOn": "2024-03-01",
    "requester": {"reference": "Practitioner/dr-1"},
    "dosageInstruction": [{"text": "1 tablet every 6 hours"}],
}
MEDICATION_BY_REFERENCE = {
    "resourceType": "MedicationRequest",
    "id": "mr-2",
    "status": "completed",
    "intent": "plan",
    "medicationReference": {"reference": "Medication/med-9"},
    "subject": {"reference": "Patient/p-1"},
}
PROCEDURE = {
    "resourceType": "Procedure",
    "id": "pr-1",
    "status": "completed",
    "code": {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "80146002", "display": "Appendectomy"}
        ]
    },
    "subject": {"reference": "Patient/p-1"},
    "performedPeriod": {"start": "2024-02-01T08:00:00Z", "end": "2024-02-01T09:30:00Z"},
}


def _run(name: str, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(compile_view(load(name)).run(resources))


@pytest.fixture(scope="module")
def store() -> FhirStore:
    return FhirStore(patients=25, seed=11)


def test_the_six_ready_views_are_shipped() -> None:
    assert names() == [
        "condition",
        "encounter",
        "medication_request",
        "observation",
        "patient_demographics",
        "procedure",
    ]
    for name in names():
        view = load(name)
        assert view["name"] == name
        assert all("type" in c for s in view["select"] for c in s["column"]), name
        compile_view(view)
    with pytest.raises(KeyError, match="no ready view 'allergy'"):
        load("allergy")


def test_patient_demographics(store: FhirStore) -> None:
    sandbox = [r.resource for r in store.by_type["Patient"]]
    rows = _run("patient_demographics", sandbox)
    assert [r["id"] for r in rows] == [p["id"] for p in sandbox]
    assert rows[0]["family"] == sandbox[0]["name"][0]["family"]
    assert rows[0]["mrn"] == sandbox[0]["identifier"][0]["value"]
    (row,) = _run("patient_demographics", [PATIENT])
    assert row == {
        "id": "p-1",
        "active": None,
        "mrn_system": "urn:mrn",
        "mrn": "M1",
        "family": "Smith",
        "given": "Ann B",
        "gender": "female",
        "birth_date": "1970-05",
        "deceased": True,
        "deceased_date": "2020-01-01",
        "city": "Springfield",
        "state": "IL",
        "postal_code": "62701",
        "country": "US",
        "phone": "555",
        "email": "a@example.org",
        "language": "en",
        "race": ["2106-3", "2028-9"],
        "ethnicity": "2186-5",
        "birth_sex": "F",
    }


def test_observation_quantities_and_components(store: FhirStore) -> None:
    sandbox = [r.resource for r in store.by_type["Observation"]]
    rows = _run("observation", sandbox)
    assert len(rows) == len(sandbox)  # no components: one row each, component columns null
    first = sandbox[0]
    assert rows[0]["value"] == first["valueQuantity"]["value"]
    assert rows[0]["patient"] == first["subject"]["reference"].split("/")[1]
    assert rows[0]["component_code"] is None
    bp = _run("observation", [BLOOD_PRESSURE])
    assert [(r["component_code"], r["component_value"], r["component_unit"]) for r in bp] == [
        ("8480-6", 120.0, "mm[Hg]"),
        ("8462-4", 80, "mm[Hg]"),
    ]
    assert {r["effective"] for r in bp} == {"2024-03-01T10:00:00Z"}
    assert {r["code"] for r in bp} == {"85354-9"}


def test_condition_and_encounter(store: FhirStore) -> None:
    conditions = [r.resource for r in store.by_type["Condition"]]
    rows = _run("condition", conditions)
    assert len(rows) == len(conditions)
    assert rows[0]["code"] == conditions[0]["code"]["coding"][0]["code"]
    assert rows[0]["clinical_status"] in ("active", "resolved")
    assert rows[0]["recorded_date"] == conditions[0]["recordedDate"]
    encounters = [r.resource for r in store.by_type["Encounter"]]
    rows = _run("encounter", encounters)
    assert len(rows) == len(encounters)
    assert rows[0]["class"] == encounters[0]["class"]["code"]
    assert rows[0]["period_start"] == encounters[0]["period"]["start"]


def test_medication_request_and_procedure() -> None:
    coded, referenced = _run("medication_request", [MEDICATION_REQUEST, MEDICATION_BY_REFERENCE])
    assert (coded["medication_code"], coded["medication_display"], coded["medication"]) == (
        "1049221",
        "Acetaminophen 325 MG",
        None,
    )
    assert (coded["reported"], coded["dosage"], coded["requester"]) == (
        False,
        "1 tablet every 6 hours",
        "Practitioner/dr-1",
    )
    assert (referenced["medication"], referenced["medication_code"]) == ("med-9", None)
    (procedure,) = _run("procedure", [PROCEDURE])
    assert (procedure["code"], procedure["performed"], procedure["performed_end"]) == (
        "80146002",
        "2024-02-01T08:00:00Z",
        "2024-02-01T09:30:00Z",
    )


def test_every_ready_view_writes_its_typed_table(tmp_path: Path, store: FhirStore) -> None:
    import deltalake

    resources = [
        r.resource
        for kind in ("Patient", "Observation", "Condition", "Encounter")
        for r in store.by_type[kind]
    ]
    resources += [PATIENT, BLOOD_PRESSURE, MEDICATION_REQUEST, MEDICATION_BY_REFERENCE, PROCEDURE]
    source = tmp_path / "all.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in resources))
    for name in names():
        result = flatten(load(name), [source], tmp_path / name)
        assert result.rows > 0, name
    observations = deltalake.DeltaTable(str(tmp_path / "observation")).to_pyarrow_table()
    assert str(observations.schema.field("issued").type) == "timestamp[us, tz=UTC]"
    bp = [r for r in observations.to_pylist() if r["id"] == "bp-1"]
    assert [r["component_value"] for r in bp] == ["120.0", "80"]  # exact text
    assert bp[0]["issued"] == datetime.datetime(
        2024, 3, 1, 9, 5, 0, 250000, tzinfo=datetime.timezone.utc
    )
    patients = deltalake.DeltaTable(str(tmp_path / "patient_demographics")).to_pyarrow_table()
    assert str(patients.schema.field("race").type) == "list<element: string>"
