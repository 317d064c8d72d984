"""File downloads over HTTP against the sandbox: gzip, tokens and origins, redirects,
faults mid-file, throttling, verification, error and deleted files, hostile names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.job import BulkExportJob
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.errors import BulkExportError
from tests.support.bulkkit import BulkEnv, ndjson_lines, partials

pytest_plugins = ("tests.support.bulk_fixtures",)


def export(
    job: BulkExportJob, request: BulkExportRequest | None = None
) -> tuple[BulkManifest, list[Any]]:
    job.start(request or BulkExportRequest.create("system"), since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    return manifest, job.download(manifest)


def foreign_auth_headers(bulk_env: BulkEnv) -> list[str]:
    return list(bulk_env.sb.stats["foreign_origin"]["authorization_headers"])


@pytest.mark.parametrize("gzip", [True, False])
def test_files_land_complete_and_verified(bulk_env: BulkEnv, gzip: bool) -> None:
    bulk_env.sb.settings.update(bulk_gzip=gzip)
    job = bulk_env.job()
    manifest, results = export(job)
    out = bulk_env.tmp / "out"
    assert {r.name for r in results} == {
        "Patient.000.ndjson",
        "Observation.000.ndjson",
        "Condition.000.ndjson",
        "Encounter.000.ndjson",
    }
    for result, entry in zip(results, manifest.output, strict=True):
        lines = ndjson_lines(out / result.name)
        assert len(lines) == entry.count == result.count
        assert {line["resourceType"] for line in lines} == {entry.type}
        assert result.bytes == (out / result.name).stat().st_size
    assert json.loads((out / "manifest.json").read_text())["output"] == manifest.raw["output"]
    assert not partials(out)


def test_requires_access_token_false_sends_no_token(bulk_env: BulkEnv) -> None:
    # Files on another origin that the user even allowed: still no token, because the
    # manifest says none is needed.
    bulk_env.sb.settings.update(bulk_requires_access_token=False, bulk_file_origin="foreign")
    job = bulk_env.job(auth_extra={"allowed_hosts": bulk_env.sb.foreign_url})
    manifest, results = export(job)
    assert manifest.requires_access_token is False
    assert bulk_env.sb.stats["foreign_origin"]["file_downloads"] == len(results) == 4
    assert foreign_auth_headers(bulk_env) == []


def test_token_not_sent_to_a_foreign_origin(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_requires_access_token=True, bulk_file_origin="foreign")
    manifest, results = export(bulk_env.job())
    assert all(e.url.startswith(bulk_env.sb.foreign_url) for e in manifest.output)
    assert len(results) == 4
    assert foreign_auth_headers(bulk_env) == []


def test_token_not_forwarded_across_a_redirect(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_requires_access_token=True, bulk_file_origin="redirect")
    manifest, results = export(bulk_env.job())
    assert all(e.url.startswith(bulk_env.sb.fhir_base) for e in manifest.output)
    stats = bulk_env.sb.stats
    assert stats["responses_by_status"]["307"] == 4  # the main origin checked the token...
    assert stats["foreign_origin"]["file_downloads"] == 4  # ...and sent us elsewhere
    assert foreign_auth_headers(bulk_env) == []
    assert all(r.count > 0 for r in results)


def test_token_sent_to_an_origin_the_user_allowed(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_requires_access_token=True, bulk_file_origin="foreign")
    export(bulk_env.job(auth_extra={"allowed_hosts": bulk_env.sb.foreign_url}))
    headers = foreign_auth_headers(bulk_env)
    assert len(headers) == 4
    assert all(h.startswith("Bearer ") for h in headers)


def test_dropped_connection_mid_file_is_retried(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_gzip=False)
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=500, times=2)
    _, results = export(bulk_env.job(parallel=1))
    out = bulk_env.tmp / "out"
    for result in results:
        assert len(ndjson_lines(out / result.name)) == result.count
    assert bulk_env.sb.stats["file_downloads"] == 6
    assert not partials(out)


def test_gzip_stream_cut_mid_file_is_retried(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=300, times=1)
    _, results = export(bulk_env.job(parallel=1))
    assert sum(r.count for r in results) > 0
    assert bulk_env.sb.stats["file_downloads"] == 5


@pytest.mark.parametrize(
    "fault",
    [{"status": 500}, {"status": 503, "retry_after": 0.05}, {"drop": True}],
    ids=["500", "503", "dropped"],
)
def test_server_errors_on_files_are_retried(bulk_env: BulkEnv, fault: dict[str, Any]) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/files", times=3, **fault)
    _, results = export(bulk_env.job(attempts=4))
    assert len(results) == 4
    assert bulk_env.sb.stats["faults_applied"] == 3


def test_throttling_reduces_parallel_downloads(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=2)  # many small files
    bulk_env.sb.faults.add("/fhir/_bulk/files", status=429, retry_after=0.05, times=4)
    job = bulk_env.job(parallel=8, attempts=6)
    _, results = export(job)
    assert len(results) > 8
    assert job.downloader is not None
    assert job.downloader.limit.lowest < 8
    assert bulk_env.sb.stats["responses_by_status"]["429"] == 4


def test_token_expiring_mid_download_is_renewed(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/files", expire_tokens=True, times=1)
    _, results = export(bulk_env.job(parallel=1))
    assert len(results) == 4
    stats = bulk_env.sb.stats
    assert stats["unauthorized"] == 1
    assert stats["token_requests"] == 2


def test_a_short_file_fails_the_count_check(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/_bulk/files",
        status=200,
        body_kind="text",
        body='{"resourceType":"Patient"}\n',
        times=None,
    )
    job = bulk_env.job(attempts=2)
    with pytest.raises(BulkExportError, match=r"has 1 lines but the manifest's count is \d+"):
        export(job, BulkExportRequest.create("system", types="Patient"))
    out = bulk_env.tmp / "out"
    assert not (out / "Patient.000.ndjson").exists()
    assert not partials(out)


def test_a_missing_file_fails_without_retrying(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/_bulk/files", status=404, issue_code="not-found", body="file expired", times=None
    )
    with pytest.raises(BulkExportError, match="HTTP 404.*file expired"):
        export(bulk_env.job(attempts=5), BulkExportRequest.create("system", types="Patient"))
    assert bulk_env.sb.stats["faults_applied"] == 1


def test_many_files_per_type(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=3)
    manifest, results = export(bulk_env.job(), BulkExportRequest.create("system", types="Patient"))
    names = [r.name for r in results]
    assert names == [f"Patient.{i:03d}.ndjson" for i in range(len(manifest.output))]
    assert sum(r.count for r in results) == 20


@pytest.mark.parametrize("severity", ["warning", "error", "fatal"])
def test_error_files(bulk_env: BulkEnv, severity: str) -> None:
    bulk_env.sb.settings.update(bulk_error_file=severity)
    job = bulk_env.job()
    manifest, results = export(job)
    error_files = [r for r in results if r.kind == "error"]
    assert error_files and error_files[0].name.startswith("error/")
    if severity == "warning":
        summary = job.finish(manifest, results)
        assert summary["error"]["warnings"] > 0
        assert summary["error"]["errors"] == 0
    else:
        with pytest.raises(BulkExportError, match="severity fatal/error") as info:
            job.finish(manifest, results)
        assert "tolerate_errors" in str(info.value)
        summary = job.finish(manifest, results, tolerate_errors=True)
        assert summary["error"]["errors"] > 0


def test_deleted_files_with_since(bulk_env: BulkEnv) -> None:
    job = bulk_env.job()
    manifest, results = export(
        job, BulkExportRequest.create("system", since="2024-03-01T00:00:00Z")
    )
    deleted = [r for r in results if r.kind == "deleted"]
    assert deleted and deleted[0].name == "deleted/Bundle.000.ndjson"
    bundle = ndjson_lines(bulk_env.tmp / "out" / deleted[0].name)[0]
    assert bundle["resourceType"] == "Bundle"
    assert bundle["entry"][0]["request"]["method"] == "DELETE"
    summary = job.finish(manifest, results)
    assert summary["deleted"]["count"] == deleted[0].count > 0


def test_hostile_types_stay_inside_the_destination(bulk_env: BulkEnv, tmp_path: Path) -> None:
    job = bulk_env.job()
    manifest, _ = export(job, BulkExportRequest.create("system", types="Patient"))
    url = manifest.output[0].url
    evil = BulkManifest.from_json(
        {
            "transactionTime": "t",
            "requiresAccessToken": True,
            "output": [
                {"type": "../../escaped", "url": url},
                {"type": "/etc/passwd", "url": url},
                {"type": "..", "url": url},
            ],
        }
    )
    results = job.download(evil)
    out = tmp_path / "out"
    assert [r.name for r in results] == [
        "escaped.000.ndjson",
        "etc_passwd.000.ndjson",
        "Unknown.000.ndjson",
    ]
    for result in results:
        assert (out / result.name).resolve().parent == out.resolve()
    assert not (tmp_path / "escaped.000.ndjson").exists()


def test_backendauth_session_keeps_the_token_from_a_redirect_target_answering_401(
    bulk_env: BulkEnv,
) -> None:
    """Regression: ``BackendAuth``'s 401 hook travels with requests' redirect copies; it must
    not "renew" the token for another origin's 401."""
    bulk_env.sb.settings.update(bulk_file_origin="redirect")
    session = bulk_env.auth_client().new_session()
    manifest, _ = export(bulk_env.job())
    bulk_env.sb.faults.add("/storage", origin="foreign", status=401, times=1)
    response = session.get(manifest.output[0].url, timeout=10)
    assert response.status_code == 401
    assert foreign_auth_headers(bulk_env) == []


@pytest.mark.parametrize(
    ("gzip", "cut", "chunk"),
    [(False, 150_000, 65536), (True, 5_000, 4096)],
    ids=["identity", "gzip"],
)
def test_a_cut_download_resumes_with_a_range_request(
    bulk_env: BulkEnv, gzip: bool, cut: int, chunk: int
) -> None:
    """A connection dropped mid-file: the next attempt asks for the rest (``Range``, plain
    encoding, from the number of decoded bytes already written), not the whole file."""
    bulk_env.sb.settings.update(bulk_gzip=gzip, bulk_resource_padding_bytes=2000)
    job = bulk_env.job(parallel=1, chunk_size=chunk)
    job.start(BulkExportRequest.create("system", types="Observation"), since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    bulk_env.sb.reset_stats()
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=cut, times=1)
    (result,) = job.download(manifest)
    path = bulk_env.tmp / "out" / result.name
    lines = ndjson_lines(path)
    assert len(lines) == result.count == manifest.output[0].count
    assert len({line["id"] for line in lines}) == len(lines)
    stats = bulk_env.sb.stats
    assert stats["responses_by_status"].get("206") == 1  # the rest only, not all again
    if not gzip:
        assert stats["file_bytes_sent"] < 1.3 * path.stat().st_size
