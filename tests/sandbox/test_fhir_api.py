"""FHIR search/read/metadata and the REST participants endpoint, over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import (
    ClientKey,
    assertion_claims,
    sign_assertion,
    token_request_form,
)


@pytest.fixture
def session(sb: Sandbox, rsa_key: ClientKey) -> requests.Session:
    """A session holding a token obtained from the sandbox's own token endpoint."""
    sb.register_client("fhir-client", rsa_key.public_jwks, vendor="smart")
    assertion = sign_assertion(rsa_key, assertion_claims("fhir-client", sb.token_url), "RS384")
    token = requests.post(
        sb.token_url, data=token_request_form(assertion, "system/*.rs"), timeout=10
    ).json()["access_token"]
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def search_all(session: requests.Session, url: str, **params: Any) -> list[dict[str, Any]]:
    bundles = []
    response = session.get(url, params=params, timeout=10)
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        bundles.append(bundle)
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return bundles
        response = session.get(urljoin(response.url, nxt[0]), timeout=10)


def ids(bundles: list[dict[str, Any]], mode: str = "match") -> list[str]:
    return [
        e["resource"]["id"]
        for b in bundles
        for e in b.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def stamp(resource: dict[str, Any]) -> datetime:
    return datetime.strptime(resource["meta"]["lastUpdated"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc
    )


def test_metadata_is_open_and_lists_exports(sb: Sandbox) -> None:
    cs = requests.get(sb.fhir_base + "/metadata", timeout=10).json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert {"Patient", "Observation", "Condition", "Encounter", "Group"} <= set(types)
    assert {p["name"] for p in types["Observation"]["searchParam"]} >= {
        "_id",
        "_lastUpdated",
        "patient",
        "subject",
    }
    assert types["Group"]["operation"][0]["name"] == "export"
    assert rest["operation"][0]["definition"].endswith("/export")


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_401_without_valid_token(sb: Sandbox, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = requests.get(sb.fhir_base + "/Patient", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["resourceType"] == "OperationOutcome"
    assert sb.stats["unauthorized"] == 1


def test_expired_token(sb: Sandbox, session: requests.Session) -> None:
    assert session.get(sb.fhir_base + "/Patient", timeout=10).status_code == 200
    sb.expire_tokens()
    response = session.get(sb.fhir_base + "/Patient", timeout=10)
    assert response.status_code == 401
    assert "expired" in response.json()["issue"][0]["diagnostics"]


def test_expire_tokens_fault(sb: Sandbox, session: requests.Session) -> None:
    sb.faults.add("/fhir/Patient", expire_tokens=True)
    assert session.get(sb.fhir_base + "/Patient", timeout=10).status_code == 401


def test_search_all_patients_and_read(sb: Sandbox, session: requests.Session) -> None:
    bundle = session.get(sb.fhir_base + "/Patient", timeout=10).json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 12
    assert len(bundle["entry"]) == 12
    first = bundle["entry"][0]
    assert first["fullUrl"] == f"{sb.fhir_base}/Patient/{first['resource']['id']}"
    assert [link["relation"] for link in bundle["link"]] == ["self"]
    read = session.get(first["fullUrl"], timeout=10)
    assert read.status_code == 200
    assert read.json() == first["resource"]
    assert read.headers["Content-Type"] == "application/fhir+json"
    missing = session.get(sb.fhir_base + "/Patient/nope", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    group = session.get(sb.fhir_base + "/Group/g2", timeout=10).json()
    assert group["quantity"] == 3
    assert sb.stats["fhir_searches"] == 1
    assert sb.stats["fhir_reads"] == 3


def test_data_is_deterministic() -> None:
    with Sandbox(patients=5, seed=1) as a, Sandbox(patients=5, seed=1) as b:
        token_a, token_b = a.issue_token(), b.issue_token()
        bodies = [
            requests.get(
                s.fhir_base + "/Observation/obs-0003-1",
                headers={"Authorization": f"Bearer {t}"},
                timeout=10,
            ).json()
            for s, t in ((a, token_a), (b, token_b))
        ]
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("style", ["absolute", "relative", "path"])
def test_paging_follows_next_links(sb: Sandbox, session: requests.Session, style: str) -> None:
    sb.settings.search_next_link = style
    total = session.get(sb.fhir_base + "/Observation", params={"_count": 0}, timeout=10).json()
    bundles = search_all(session, sb.fhir_base + "/Observation", _count=5)
    found = ids(bundles)
    assert len(found) == len(set(found)) == total["total"] == bundles[0]["total"]
    assert all(len(b.get("entry", [])) <= 5 for b in bundles)
    next_url = next(link["url"] for link in bundles[0]["link"] if link["relation"] == "next")
    if style == "absolute":
        assert next_url.startswith(sb.fhir_base + "/Observation?")
    elif style == "relative":
        assert next_url.startswith("Observation?")
    else:
        assert next_url.startswith("/fhir/Observation?")


def test_count_is_capped(sb: Sandbox, session: requests.Session) -> None:
    sb.settings.search_max_count = 7
    bundle = session.get(sb.fhir_base + "/Observation", params={"_count": 500}, timeout=10).json()
    assert len(bundle["entry"]) == 7


def test_id_and_patient_filters(sb: Sandbox, session: requests.Session) -> None:
    bundle = session.get(
        sb.fhir_base + "/Patient", params={"_id": "pat-0002,pat-0005,nope"}, timeout=10
    ).json()
    assert ids([bundle]) == ["pat-0002", "pat-0005"]
    by_patient = search_all(session, sb.fhir_base + "/Observation", patient="Patient/pat-0003")
    by_subject = search_all(session, sb.fhir_base + "/Observation", subject="pat-0003")
    assert ids(by_patient) == ids(by_subject)
    assert ids(by_patient) and all(i.startswith("obs-0003-") for i in ids(by_patient))
    both = search_all(session, sb.fhir_base + "/Condition", patient="pat-0001,pat-0002")
    assert {i.split("-")[1] for i in ids(both)} == {"0001", "0002"}


def test_last_updated_filters(sb: Sandbox, session: requests.Session) -> None:
    everything = search_all(session, sb.fhir_base + "/Observation", _count=1000)
    resources = [e["resource"] for e in everything[0]["entry"]]
    lo = datetime(2024, 4, 1, tzinfo=timezone.utc)
    hi = datetime(2024, 9, 1, tzinfo=timezone.utc)
    expected = {r["id"] for r in resources if lo <= stamp(r) < hi}
    assert 0 < len(expected) < len(resources)
    got = search_all(
        session,
        sb.fhir_base + "/Observation",
        _lastUpdated=["ge2024-04-01", "lt2024-09-01T00:00:00Z"],
        _count=1000,
    )
    assert set(ids(got)) == expected
    # Month precision: eq2024-04 is the whole of April.
    april = {r["id"] for r in resources if stamp(r).month == 4}
    got = search_all(session, sb.fhir_base + "/Observation", _lastUpdated="2024-04")
    assert set(ids(got)) == april
    # Time zone offsets shift the instant.
    one = resources[0]
    local = stamp(one).astimezone(timezone(timedelta(hours=2))).strftime("%Y-%m-%dT%H:%M:%S%z")
    local = local[:-2] + ":" + local[-2:]
    assert local.endswith("+02:00")
    got = search_all(session, sb.fhir_base + "/Observation", _lastUpdated=f"eq{local}")
    assert one["id"] in ids(got)
    got = search_all(session, sb.fhir_base + "/Observation", _lastUpdated=f"gt{local}")
    assert one["id"] not in ids(got)


def test_include_patient(sb: Sandbox, session: requests.Session) -> None:
    bundle = session.get(
        sb.fhir_base + "/Observation",
        params={"_include": "Observation:patient", "_count": "6"},
        timeout=10,
    ).json()
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert len(matches) == 6
    assert included == {m["subject"]["reference"].split("/")[1] for m in matches}


def test_post_search_equals_get(sb: Sandbox, session: requests.Session) -> None:
    params = {"patient": "pat-0004", "_lastUpdated": "ge2024-01-01"}
    got = session.get(sb.fhir_base + "/Encounter", params=params, timeout=10).json()
    posted = session.post(sb.fhir_base + "/Encounter/_search", data=params, timeout=10).json()
    assert ids([got]) == ids([posted])
    assert posted["total"] == got["total"]
    as_json = session.post(sb.fhir_base + "/Encounter/_search", json=params, timeout=10)
    assert as_json.status_code == 400


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/Patient", {"name": "x"}, 400, "name"),
        ("/Patient", {"patient": "pat-0001"}, 400, "patient"),
        ("/Observation", {"_count": "many"}, 400, "_count"),
        ("/Observation", {"_count": "-1"}, 400, "_count"),
        ("/Observation", {"_lastUpdated": "yesterday"}, 400, "_lastUpdated"),
        ("/Observation", {"_lastUpdated": "ne2024-01-01"}, 400, "_lastUpdated"),
        ("/Observation", {"_lastUpdated": "2024-13-01"}, 400, "_lastUpdated"),
        ("/Observation", {"_include": "Patient:organization"}, 400, "_include"),
        ("/Observation", {"patient:missing": "true"}, 400, "patient:missing"),
        ("/Observation", {"_sort": "code"}, 400, "_sort"),
        ("/Observation", {"_cursor": "garbage"}, 400, "_cursor"),
        ("/Medication", {}, 404, "Medication"),
    ],
)
def test_bad_search_parameters(
    sb: Sandbox,
    session: requests.Session,
    path: str,
    params: dict[str, str],
    status: int,
    needle: str,
) -> None:
    response = session.get(sb.fhir_base + path, params=params, timeout=10)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert needle in outcome["issue"][0]["diagnostics"]


def test_total_sort_and_summary(sb: Sandbox, session: requests.Session) -> None:
    sorted_bundle = session.get(
        sb.fhir_base + "/Patient",
        params={"_sort": "-_lastUpdated", "_total": "accurate"},
        timeout=10,
    ).json()
    stamps = [stamp(e["resource"]) for e in sorted_bundle["entry"]]
    assert stamps == sorted(stamps, reverse=True)
    count_only = session.get(
        sb.fhir_base + "/Patient", params={"_summary": "count"}, timeout=10
    ).json()
    assert count_only["total"] == 12
    assert "entry" not in count_only


def test_scope_limits_resource_types(sb: Sandbox) -> None:
    token = sb.issue_token(scope="system/Patient.rs")
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(sb.fhir_base + "/Patient", headers=headers, timeout=10).ok
    denied = requests.get(sb.fhir_base + "/Observation", headers=headers, timeout=10)
    assert denied.status_code == 403
    assert denied.json()["issue"][0]["code"] == "forbidden"


def test_rest_participants(sb: Sandbox, session: requests.Session) -> None:
    url = sb.url + "/api/v1/administration/participants"
    assert requests.get(url, timeout=10).status_code == 401
    seen: list[dict[str, Any]] = []
    page_id = None
    while True:
        params: dict[str, Any] = {"pageSize": 5}
        if page_id:
            params["pageID"] = page_id
        body = session.get(url, params=params, timeout=10).json()
        assert body["totalParticipants"] == 12
        seen.extend(body["participants"])
        page_id = body["nextPageID"]
        if page_id is None:
            break
    assert len(seen) == 12 == len({p["id"] for p in seen})
    assert seen[0]["demographics"]["firstName"]
    assert session.get(url, params={"pageSize": 0}, timeout=10).status_code == 400
    assert session.get(url, params={"pageID": "%%%"}, timeout=10).status_code == 400
