"""Bulk Data $export over HTTP: lifecycle, parameters, switches and faults."""

from __future__ import annotations

import json
import os
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from backendauth_sandbox import Sandbox

KICKOFF_HEADERS = {"Accept": "application/fhir+json", "Prefer": "respond-async"}


@pytest.fixture
def token(sb: Sandbox) -> str:
    sb.settings.bulk_retry_after = 0.02
    return sb.issue_token("bulk-client", scope="system/*.rs")


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def kickoff(
    sb: Sandbox,
    token: str,
    path: str = "/$export",
    params: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    all_headers = {**KICKOFF_HEADERS, **auth(token), **(headers or {})}
    if parameters is not None:
        return requests.post(
            sb.fhir_base + path,
            headers={**all_headers, "Content-Type": "application/fhir+json"},
            data=json.dumps({"resourceType": "Parameters", "parameter": parameters}),
            timeout=10,
        )
    return requests.get(sb.fhir_base + path, params=params, headers=all_headers, timeout=10)


def wait(status_url: str, token: str, timeout: float = 10) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(status_url, headers=auth(token), timeout=10)
        if response.status_code != 202:
            return response
        time.sleep(min(float(response.headers["Retry-After"]), 0.05))
    raise AssertionError("export did not finish")


def export(sb: Sandbox, token: str, **kwargs: Any) -> dict[str, Any]:
    started = kickoff(sb, token, **kwargs)
    assert started.status_code == 202, started.text
    done = wait(started.headers["Content-Location"], token)
    assert done.status_code == 200, done.text
    manifest: dict[str, Any] = done.json()
    return manifest


def lines(url: str, token: str | None = None, **headers: str) -> list[dict[str, Any]]:
    response = requests.get(url, headers={**auth(token), **headers}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/fhir+ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


def totals(sb: Sandbox) -> dict[str, int]:
    return {t: len(v) for t, v in sb.store.by_type.items() if t != "Group"}


def test_full_lifecycle(sb: Sandbox, token: str) -> None:
    # Running for the first poll whatever the load (a 0.4 s job could finish before it).
    sb.settings.bulk_complete_after_polls = 2
    started = kickoff(sb, token)
    assert started.status_code == 202
    status_url = started.headers["Content-Location"]
    assert status_url.startswith(sb.fhir_base + "/_bulk/jobs/")
    sb.settings.bulk_retry_after = None  # the real header: whole seconds
    polled = requests.get(status_url, headers=auth(token), timeout=10)
    assert polled.status_code == 202
    assert polled.headers["Retry-After"] == "1"
    assert "%" in polled.headers["X-Progress"]
    sb.settings.bulk_retry_after = 0.02
    done = wait(status_url, token)
    manifest = done.json()
    assert done.headers["Content-Type"] == "application/json"
    assert "Expires" in done.headers
    assert manifest["request"] == sb.fhir_base + "/$export"
    assert manifest["requiresAccessToken"] is True
    assert manifest["transactionTime"].endswith("Z")
    assert manifest["error"] == []
    assert "deleted" not in manifest
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts == totals(sb)
    observations = next(o for o in manifest["output"] if o["type"] == "Observation")
    rows = lines(observations["url"], token)
    assert len(rows) == observations["count"]
    assert all(r["resourceType"] == "Observation" for r in rows)
    no_token = requests.get(observations["url"], timeout=10)
    assert no_token.status_code == 401
    assert requests.delete(status_url, headers=auth(token), timeout=10).status_code == 202
    assert requests.get(status_url, headers=auth(token), timeout=10).status_code == 404
    assert requests.get(observations["url"], headers=auth(token), timeout=10).status_code == 404
    stats = sb.stats
    assert stats["bulk_kickoffs"] == 1
    assert stats["bulk_cancels"] == 1
    assert stats["file_downloads"] == 1
    assert stats["bulk_status_polls"] >= 2


@pytest.mark.parametrize(
    ("params", "headers", "status", "needle"),
    [
        ({}, {"Prefer": ""}, 400, "respond-async"),
        ({}, {"Accept": "application/json"}, 400, "Accept"),
        ({"_outputFormat": "text/csv"}, {}, 400, "_outputFormat"),
        ({"_type": "Medication"}, {}, 400, "_type"),
        ({"_since": "last week"}, {}, 400, "_since"),
        ({"_typeFilter": "Observation?code=x"}, {}, 400, "_typeFilter"),
        ({"organizeOutputBy": "Encounter"}, {}, 400, "organizeOutputBy"),
        ({"patient": "Patient/pat-0001"}, {}, 400, "POST"),
    ],
)
def test_kickoff_validation(
    sb: Sandbox,
    token: str,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    needle: str,
) -> None:
    response = kickoff(sb, token, params=params, headers=headers)
    assert response.status_code == status, response.text
    assert needle in response.json()["issue"][0]["diagnostics"]


def test_kickoff_needs_token_and_known_group(sb: Sandbox, token: str) -> None:
    assert kickoff(sb, "", path="/$export").status_code == 401
    missing = kickoff(sb, token, path="/Group/nope/$export")
    assert missing.status_code == 404


def test_lenient_handling_ignores_unknown(sb: Sandbox, token: str) -> None:
    response = kickoff(
        sb,
        token,
        params={"organizeOutputBy": "Encounter", "_type": "Patient,Medication"},
        headers={"Prefer": "respond-async, handling=lenient"},
    )
    assert response.status_code == 202, response.text


def test_post_parameters_with_patient(sb: Sandbox, token: str) -> None:
    manifest = export(
        sb,
        token,
        path="/Patient/$export",
        parameters=[
            {"name": "patient", "valueReference": {"reference": "Patient/pat-0002"}},
            {"name": "patient", "valueReference": {"reference": "Patient/pat-0005"}},
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        ],
    )
    assert [o["type"] for o in manifest["output"]] == ["Patient", "Observation"]
    patients = lines(manifest["output"][0]["url"], token)
    assert {p["id"] for p in patients} == {"pat-0002", "pat-0005"}
    subjects = {o["subject"]["reference"] for o in lines(manifest["output"][1]["url"], token)}
    assert subjects == {"Patient/pat-0002", "Patient/pat-0005"}


def test_post_errors(sb: Sandbox, token: str) -> None:
    system = kickoff(
        sb, token, parameters=[{"name": "patient", "valueReference": {"reference": "Patient/x"}}]
    )
    assert system.status_code == 400
    unknown = kickoff(
        sb,
        token,
        path="/Patient/$export",
        parameters=[{"name": "patient", "valueReference": {"reference": "Patient/ghost"}}],
    )
    assert unknown.status_code == 400
    not_parameters = requests.post(
        sb.fhir_base + "/Patient/$export",
        headers={**KICKOFF_HEADERS, **auth(token), "Content-Type": "application/fhir+json"},
        data=json.dumps({"resourceType": "Patient"}),
        timeout=10,
    )
    assert not_parameters.status_code == 400


def test_group_export(sb: Sandbox, token: str) -> None:
    manifest = export(sb, token, path="/Group/g2/$export", params={"_type": "Patient,Condition"})
    patient_ids = {p["id"] for p in lines(manifest["output"][0]["url"], token)}
    assert patient_ids == {"pat-0001", "pat-0002", "pat-0003"}
    conditions = lines(manifest["output"][1]["url"], token)
    assert {c["subject"]["reference"].split("/")[1] for c in conditions} <= patient_ids


def test_since_until_typefilter_and_deleted(sb: Sandbox, token: str) -> None:
    manifest = export(
        sb,
        token,
        params={
            "_type": "Observation,Encounter",
            "_since": "2024-03-01T00:00:00Z",
            "_until": "2024-11-01T00:00:00Z",
            "_typeFilter": "Observation?_lastUpdated=ge2024-07-01",
        },
    )
    by_type = {o["type"]: lines(o["url"], token) for o in manifest["output"]}
    assert all(r["meta"]["lastUpdated"] >= "2024-07-01" for r in by_type["Observation"])
    assert all(
        "2024-03-01" < r["meta"]["lastUpdated"] <= "2024-11-01" for r in by_type["Encounter"]
    )
    assert "deleted" in manifest
    for entry in manifest["deleted"]:
        for bundle in lines(entry["url"], token):
            assert bundle["type"] == "transaction"
            assert bundle["entry"][0]["request"]["method"] == "DELETE"


def test_elements(sb: Sandbox, token: str) -> None:
    manifest = export(sb, token, params={"_type": "Observation", "_elements": "Observation.code"})
    row = lines(manifest["output"][0]["url"], token)[0]
    assert set(row) == {"resourceType", "id", "meta", "code"}
    assert row["meta"]["tag"][0]["code"] == "SUBSETTED"


def test_retry_after_http_date(sb: Sandbox, token: str) -> None:
    sb.settings.update(bulk_job_seconds=30, bulk_retry_after=None, bulk_retry_after_http_date=True)
    status_url = kickoff(sb, token).headers["Content-Location"]
    polled = requests.get(status_url, headers=auth(token), timeout=10)
    assert polled.status_code == 202
    when = parsedate_to_datetime(polled.headers["Retry-After"]).timestamp()
    assert 20 < when - time.time() <= 31
    requests.delete(status_url, headers=auth(token), timeout=10)


def test_no_access_token_required(sb: Sandbox, token: str) -> None:
    sb.settings.bulk_requires_access_token = False
    manifest = export(sb, token, params={"_type": "Patient"})
    assert manifest["requiresAccessToken"] is False
    assert len(lines(manifest["output"][0]["url"])) == 12
    assert len(lines(manifest["output"][0]["url"], token)) == 12


def test_gzip_switch(sb: Sandbox, token: str) -> None:
    manifest = export(sb, token, params={"_type": "Patient"})
    url = manifest["output"][0]["url"]
    zipped = requests.get(url, headers={**auth(token), "Accept-Encoding": "gzip"}, timeout=10)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(zipped.text.splitlines()) == 12
    plain = requests.get(url, headers={**auth(token), "Accept-Encoding": "identity"}, timeout=10)
    assert "Content-Encoding" not in plain.headers
    assert int(plain.headers["Content-Length"]) == len(plain.content)
    sb.settings.bulk_gzip = False
    off = requests.get(url, headers={**auth(token), "Accept-Encoding": "gzip"}, timeout=10)
    assert "Content-Encoding" not in off.headers
    assert off.content == plain.content


@pytest.mark.parametrize("severity", ["warning", "error", "fatal"])
def test_error_file(sb: Sandbox, token: str, severity: str) -> None:
    sb.settings.bulk_error_file = severity
    manifest = export(sb, token)
    assert [e["type"] for e in manifest["error"]] == ["OperationOutcome"]
    outcomes = lines(manifest["error"][0]["url"], token)
    assert outcomes and all(o["issue"][0]["severity"] == severity for o in outcomes)


def test_split_files(sb: Sandbox, token: str) -> None:
    sb.settings.bulk_lines_per_file = 5
    manifest = export(sb, token, params={"_type": "Observation"})
    files = manifest["output"]
    assert len(files) > 1
    assert all(f["count"] <= 5 for f in files)
    assert sum(f["count"] for f in files) == totals(sb)["Observation"]
    assert len({f["url"] for f in files}) == len(files)


def test_foreign_origin(sb: Sandbox, token: str) -> None:
    sb.settings.bulk_file_origin = "foreign"
    manifest = export(sb, token, params={"_type": "Patient"})
    url = manifest["output"][0]["url"]
    assert url.startswith(sb.foreign_url + "/storage/")
    assert len(lines(url)) == 12
    assert sb.stats["foreign_origin"]["authorization_headers"] == []
    # A leaking client is caught: the foreign origin records what it receives.
    lines(url, token)
    assert sb.stats["foreign_origin"]["authorization_headers"] == [f"Bearer {token}"]
    tampered = requests.get(url.replace("sig=", "sig=0"), timeout=10)
    assert tampered.status_code == 403


def test_redirect_to_foreign_origin(sb: Sandbox, token: str) -> None:
    sb.settings.bulk_file_origin = "redirect"
    manifest = export(sb, token, params={"_type": "Patient"})
    url = manifest["output"][0]["url"]
    assert url.startswith(sb.fhir_base + "/_bulk/files/")
    first = requests.get(url, headers=auth(token), allow_redirects=False, timeout=10)
    assert first.status_code == 307
    assert first.headers["Location"].startswith(sb.foreign_url + "/storage/")
    assert requests.get(url, timeout=10).status_code == 401
    # requests drops Authorization when the port changes: nothing leaks.
    assert len(lines(url, token)) == 12
    foreign = sb.stats["foreign_origin"]
    assert foreign["file_downloads"] == 1
    assert foreign["authorization_headers"] == []


def test_reject_concurrent_exports(sb: Sandbox, token: str) -> None:
    sb.settings.update(bulk_reject_concurrent=True, bulk_job_seconds=30)
    first = kickoff(sb, token)
    assert first.status_code == 202
    second = kickoff(sb, token)
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    other_client = kickoff(sb, sb.issue_token("someone-else"))
    assert other_client.status_code == 202
    requests.delete(first.headers["Content-Location"], headers=auth(token), timeout=10)
    assert kickoff(sb, token).status_code == 202
    assert sb.stats["bulk_rejected_concurrent"] == 1


def test_status_belongs_to_client(sb: Sandbox, token: str) -> None:
    status_url = kickoff(sb, token).headers["Content-Location"]
    other = requests.get(status_url, headers=auth(sb.issue_token("intruder")), timeout=10)
    assert other.status_code == 404


def test_scope_limits_export(sb: Sandbox) -> None:
    sb.settings.bulk_retry_after = 0.02
    token = sb.issue_token("narrow", scope="system/Patient.rs")
    assert kickoff(sb, token, params={"_type": "Observation"}).status_code == 403
    manifest = export(sb, token)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]


def test_padding_for_benchmarks(sb: Sandbox, token: str) -> None:
    sb.settings.bulk_resource_padding_bytes = 2000
    manifest = export(sb, token, params={"_type": "Patient"})
    response = requests.get(
        manifest["output"][0]["url"],
        headers={**auth(token), "Accept-Encoding": "identity"},
        timeout=10,
    )
    rows = response.text.splitlines()
    assert all(len(r) > 2000 for r in rows)
    assert json.loads(rows[0])["text"]["status"] == "generated"


def test_faults_during_export(sb: Sandbox, token: str) -> None:
    manifest = export(sb, token, params={"_type": "Observation"})
    url = manifest["output"][0]["url"]
    sb.faults.add("/fhir/_bulk/files", drop_after_bytes=100)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, headers={**auth(token), "Accept-Encoding": "identity"}, timeout=10)
    sb.faults.add("/fhir/_bulk/files", drop_after_bytes=100)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, headers={**auth(token), "Accept-Encoding": "gzip"}, timeout=10)
    sb.faults.add("/fhir/_bulk/files", status=503, retry_after=1)
    assert requests.get(url, headers=auth(token), timeout=10).status_code == 503
    sb.faults.add("/fhir/_bulk/files", drop=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, headers=auth(token), timeout=10)
    sb.faults.add("/fhir/_bulk/files", expire_tokens=True)
    assert requests.get(url, headers=auth(token), timeout=10).status_code == 401


def test_transient_and_fatal_poll_errors(sb: Sandbox, token: str) -> None:
    status_url = kickoff(sb, token).headers["Content-Location"]
    sb.faults.add("/fhir/_bulk/jobs", status=500, issue_code="transient")
    sb.faults.add("/fhir/_bulk/jobs", status=500, issue_code="processing", severity="fatal")
    sb.faults.add("/fhir/_bulk/jobs", status=429, retry_after=1)
    transient = requests.get(status_url, headers=auth(token), timeout=10)
    assert transient.status_code == 500
    assert transient.json()["issue"][0]["code"] == "transient"
    fatal = requests.get(status_url, headers=auth(token), timeout=10)
    assert fatal.json()["issue"][0]["severity"] == "fatal"
    assert requests.get(status_url, headers=auth(token), timeout=10).status_code == 429
    assert wait(status_url, token).status_code == 200


def test_foreign_origin_faults(sb: Sandbox, token: str) -> None:
    sb.settings.bulk_file_origin = "foreign"
    manifest = export(sb, token, params={"_type": "Patient"})
    sb.faults.add("/storage", origin="foreign", status=500)
    assert requests.get(manifest["output"][0]["url"], timeout=10).status_code == 500
    assert len(lines(manifest["output"][0]["url"])) == 12


def test_stop_removes_files(token: str, sb: Sandbox) -> None:
    export(sb, token, params={"_type": "Patient"})
    root = sb.bulk._root
    assert root is not None and os.path.isdir(root)
    sb.stop()
    assert not os.path.exists(root)


def test_range_requests_resume_a_cut_download(sb: Sandbox, token: str) -> None:
    manifest = export(sb, token, params={"_type": "Observation"})
    url = manifest["output"][0]["url"]
    identity = {**auth(token), "Accept-Encoding": "identity"}
    full = requests.get(url, headers=identity, timeout=10)
    assert full.headers["Accept-Ranges"] == "bytes"
    sb.faults.add("/fhir/_bulk/files", drop_after_bytes=300)
    received = b""
    with (
        requests.get(url, headers=identity, stream=True, timeout=10) as cut,
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        for chunk in cut.iter_content(64):
            received += chunk
    assert 0 < len(received) <= 300
    rest = requests.get(url, headers={**identity, "Range": f"bytes={len(received)}-"}, timeout=10)
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == (
        f"bytes {len(received)}-{len(full.content) - 1}/{len(full.content)}"
    )
    assert received + rest.content == full.content
    middle = requests.get(url, headers={**identity, "Range": "bytes=10-19"}, timeout=10)
    assert middle.content == full.content[10:20]
    beyond = requests.get(url, headers={**identity, "Range": "bytes=99999999-"}, timeout=10)
    assert beyond.status_code == 416


def test_partial_manifests_are_paged_only_when_asked(sb: Sandbox, token: str) -> None:
    sb.settings.update(bulk_manifest_page_size=2, bulk_lines_per_file=5, bulk_error_counts=True)
    sb.settings.bulk_error_file = "warning"
    whole = wait(kickoff(sb, token).headers["Content-Location"], token).json()
    assert "link" not in whole  # no opt-in: one manifest
    status_url = kickoff(sb, token, params={"allowPartialManifests": "true"}).headers[
        "Content-Location"
    ]
    page = wait(status_url, token).json()
    first_errors = page["error"]
    urls: list[str] = []
    pages = 0
    while True:
        pages += 1
        assert len(page["output"]) <= 2
        assert page["error"] == first_errors  # repeated on every page, as the IG says
        assert page["error"][0]["count"] == whole["output"][0]["count"]  # the copied count
        urls += [o["url"] for o in page["output"]]
        links = page.get("link") or []
        if not links:
            break
        assert links[0]["relation"] == "next" and "?page=" in links[0]["url"]
        page = requests.get(links[0]["url"], headers=auth(token), timeout=10).json()
    assert pages > 2
    assert len(urls) == len(set(urls)) == len(whole["output"])
    bad = requests.get(status_url + "?page=99", headers=auth(token), timeout=10)
    assert bad.status_code == 404


def test_organize_output_by_patient(sb: Sandbox, token: str) -> None:
    status_url = kickoff(sb, token, params={"organizeOutputBy": "Patient"}).headers[
        "Content-Location"
    ]
    manifest = wait(status_url, token).json()
    assert manifest["outputOrganizedBy"] == "Patient"
    (entry,) = manifest["output"]
    assert "type" not in entry
    rows = lines(entry["url"], token)
    headers = [r for r in rows if r["resourceType"] == "Parameters"]
    assert len(headers) == 12  # one block per patient
    assert entry["count"] == len(rows) - len(headers) == sum(totals(sb).values())
    assert rows[0]["parameter"][0]["valueReference"]["reference"] == f"Patient/{rows[1]['id']}"


def test_unix_time_retry_after(sb: Sandbox, token: str) -> None:
    sb.settings.update(bulk_retry_after=30, bulk_retry_after_epoch=True)
    sb.settings.bulk_complete_after_polls = 5
    polled = requests.get(
        kickoff(sb, token).headers["Content-Location"], headers=auth(token), timeout=10
    )
    assert polled.status_code == 202
    assert abs(int(polled.headers["Retry-After"]) - (time.time() + 30)) < 5
