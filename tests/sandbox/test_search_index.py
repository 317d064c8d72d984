"""The sandbox's search indexes give the same answers as a scan, and paging evaluates a
query once (so a client benchmark measures the client, not the sandbox)."""

from __future__ import annotations

import pytest
import requests

from backendauth_sandbox import Sandbox
from backendauth_sandbox.fhir_search import parse_search
from backendauth_sandbox.fhir_store import FhirStore


@pytest.fixture(scope="module")
def store() -> FhirStore:
    return FhirStore(patients=60, seed=3)


QUERIES = [
    [],
    [("_lastUpdated", "ge2024-06-01")],
    [("_lastUpdated", "gt2024-06-01"), ("_lastUpdated", "lt2024-09-15T12:30:00Z")],
    [("_lastUpdated", "le2024-03"), ("_sort", "-_lastUpdated")],
    [("_lastUpdated", "eq2024-05-02,eq2024-07,ge2024-12-30")],
    [("_lastUpdated", "eq2024-05,ge2024-05-10")],  # overlapping ORed ranges
    [("_lastUpdated", "lt2023-01-01")],  # nothing
    [("patient", "pat-0003,pat-0007"), ("_lastUpdated", "ge2024-04-01")],
    [("_id", "obs-0001-1,obs-0002-1,nope"), ("_sort", "_id")],
]


@pytest.mark.parametrize("params", QUERIES, ids=[repr(q) for q in QUERIES])
@pytest.mark.parametrize("resource_type", ["Observation", "Patient"])
def test_indexed_results_equal_a_scan(store, resource_type, params):
    if resource_type == "Patient":
        params = [(k, v) for k, v in params if k != "patient"]
    search = parse_search(resource_type, params)
    expected = [r for r in store.by_type[resource_type] if search.matches(r)]
    if search.sort:
        key = search.sort.lstrip("-")
        expected.sort(
            key=(lambda r: r.id) if key == "_id" else (lambda r: (r.last_updated, r.id)),
            reverse=search.sort.startswith("-"),
        )
    assert [r.id for r in search.run(store)] == [r.id for r in expected]


def test_paging_evaluates_the_query_once() -> None:
    with Sandbox(patients=40, seed=5) as sb:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {sb.issue_token()}"
        before = sb.store.result_computations
        url: str | None = f"{sb.fhir_base}/Observation?_count=10&_lastUpdated=ge2024-02-01"
        pages = 0
        while url:
            bundle = session.get(url, timeout=30).json()
            assert bundle["resourceType"] == "Bundle", bundle
            pages += 1
            url = next((k["url"] for k in bundle["link"] if k["relation"] == "next"), None)
        assert pages > 3
        assert sb.store.result_computations - before == 1
