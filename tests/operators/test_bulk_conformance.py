"""Bulk Data conformance through the operators (issue 10): paged manifests landed exactly once,
deferrable or not and across a crash, error files whose counts are informative, partial files
swept on resume, no cancel message for a kick-off that failed, the v2/v3 kick-off parameters.
Each numbered failure of the issue is a test here that failed before its fix."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from airflow_provider_backendauth._compat import TaskDeferred
from airflow_provider_backendauth.core.bulk.state import DONE
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.storage.paths import partial_name
from tests.operators.test_bulk import download_op, drive, export_op, finalize_op, job_state
from tests.support.bulkkit import BulkEnv, partials, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)

PAGED = {"bulk_manifest_page_size": 3, "bulk_lines_per_file": 4}


def landed(out: Path) -> Counter[tuple[str, str]]:
    """(type, id) of every resource in the destination's output files, with multiplicity."""
    seen: Counter[tuple[str, str]] = Counter()
    for path in out.glob("*.*.ndjson"):  # Type.000.ndjson: not log.ndjson
        for line in path.read_text().splitlines():
            if line.strip():
                resource = json.loads(line)
                if resource["resourceType"] != "Parameters":  # organizeOutputBy headers
                    seen[(resource["resourceType"], resource["id"])] += 1
    return seen


@pytest.fixture
def whole(bulk_env: BulkEnv) -> Counter[tuple[str, str]]:
    """What one unpaged system export lands: the reference to compare paged runs with."""
    out = bulk_env.tmp / "whole"
    export_op(out).execute(task_context("whole"))
    reference = landed(out)
    assert reference and max(reference.values()) == 1
    bulk_env.sb.reset_stats()
    return reference


def test_a_paged_manifest_is_followed_to_its_last_page(
    bulk_env: BulkEnv, whole: Counter[tuple[str, str]]
) -> None:
    # Issue 10 #1: page 1 was taken for the whole export (10 of 20 files), reported as
    # success, and the job deleted: page 2 was lost with a green task.
    bulk_env.sb.settings.update(**PAGED)
    out = bulk_env.tmp / "out"
    summary = export_op(out, extra_params={"allowPartialManifests": "true"}).execute(task_context())
    assert landed(out) == whole  # every resource, exactly once
    stats = bulk_env.sb.stats
    assert stats["bulk_manifest_pages"] >= 3
    record = job_state(out)
    assert (
        record.state == DONE and record.pages == record.pages_done == stats["bulk_manifest_pages"]
    )
    assert (out / "manifest.002.json").exists()
    assert sum(t["count"] for t in summary["output"].values()) == sum(whole.values())
    assert stats["bulk_cancels"] == 1  # the job is deleted once, after the last page
    names = sorted(p.name for p in out.glob("Observation.*.ndjson"))
    assert names[:2] == ["Observation.000.ndjson", "Observation.001.ndjson"]  # one numbering


def test_allow_partial_manifests_is_requested_and_a_server_ignoring_it_still_works(
    bulk_env: BulkEnv, whole: Counter[tuple[str, str]]
) -> None:
    out = bulk_env.tmp / "ignored"  # page size unset: the server ignores the parameter
    export_op(out, allow_partial_manifests=True).execute(task_context("ignored"))
    assert landed(out) == whole
    manifest = json.loads((out / "manifest.json").read_text())
    assert ("allowPartialManifests", "true") in parse_qsl(urlsplit(manifest["request"]).query)
    assert job_state(out, "ignored").pages == 1

    bulk_env.sb.settings.update(**PAGED)
    out = bulk_env.tmp / "paged-post"
    export_op(out, allow_partial_manifests=True, method="POST").execute(task_context("post"))
    assert landed(out) == whole
    assert job_state(out, "post").pages > 1


def test_a_paged_deferrable_export_survives_a_crash_between_pages(
    bulk_env: BulkEnv, whole: Counter[tuple[str, str]]
) -> None:
    bulk_env.sb.settings.update(**PAGED)
    out = bulk_env.tmp / "out"
    options: dict[str, Any] = {"deferrable": True, "allow_partial_manifests": True}
    first_try = task_context(try_number=1, max_tries=2)
    with pytest.raises(TaskDeferred) as deferred:
        export_op(out, **options).execute(first_try)
    event = drive(deferred.value)
    # The worker gets page 1 in the event; fetching page 2 fails for good (this try dies).
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs",
        method="GET",
        status=500,
        issue_code="exception",
        severity="fatal",
        body="manifest store down",
        times=1,
    )
    with pytest.raises(BulkExportError, match="manifest store down"):
        export_op(out, **options).execute_complete(first_try, event)
    after_first = bulk_env.sb.stats["file_downloads"]
    record = job_state(out)
    assert record.active and record.pages == 1 and record.pages_done == 1
    assert bulk_env.sb.stats["bulk_cancels"] == 0  # a retry follows

    # The retry resumes: no kick-off, no wait, page 1's files not fetched again.
    summary = export_op(out, **options).execute(task_context(try_number=2, max_tries=2))
    stats = bulk_env.sb.stats
    assert stats["bulk_kickoffs"] == 1
    assert landed(out) == whole
    assert summary["resumed_files"] == after_first
    assert stats["file_downloads"] == summary["files"]  # each file fetched once overall
    assert job_state(out).state == DONE


def test_mapped_downloads_of_a_paged_manifest(
    bulk_env: BulkEnv, whole: Counter[tuple[str, str]]
) -> None:
    bulk_env.sb.settings.update(**PAGED)
    out = bulk_env.tmp / "out"
    files = export_op(out, download=False, allow_partial_manifests=True).execute(task_context())
    assert isinstance(files, list)
    assert len({f["name"] for f in files}) == len(files)  # one numbering across pages
    assert job_state(out).pages > 1
    for i, spec in enumerate(files):
        download_op(out, file=spec).execute(task_context(task_id="download", map_index=i))
    summary = finalize_op(out).execute(task_context(task_id="finalize"))
    assert landed(out) == whole
    assert summary["files"] == len(files)
    assert bulk_env.sb.stats["bulk_cancels"] == 1


def test_next_links_are_followed_to_allowed_origins_only(bulk_env: BulkEnv) -> None:
    job = bulk_env.job()
    from airflow_provider_backendauth.core.bulk.request import BulkExportRequest

    job.start(BulkExportRequest.create("system", types="Patient"), since_key="k")
    job.accept_manifest(job.wait())
    with pytest.raises(BulkExportError, match="allowed_hosts"):
        job._fetch_page(2, f"{bulk_env.sb.foreign_url}/manifest?page=2", None)
    job.abandon()


def test_error_counts_are_informative(bulk_env: BulkEnv) -> None:
    # Issue 10 #2: the server copies the output's count into its error entries; the complete
    # error file was retried 6 times (~25 s), then the task failed on "1 lines but the
    # manifest's count is 10000".
    bulk_env.sb.settings.update(bulk_error_file="warning", bulk_error_counts=True)
    out = bulk_env.tmp / "out"
    summary = export_op(out, download_retries=2).execute(task_context())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["error"][0]["count"] != summary["error"]["count"]  # the server's count lies
    assert summary["error"] == {"files": 1, "count": 2, "errors": 0, "warnings": 2}
    assert bulk_env.sb.stats["file_downloads"] == summary["files"]  # nothing was retried


def test_error_counts_do_not_bypass_tolerate_errors(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_error_file="fatal", bulk_error_counts=True)
    with pytest.raises(BulkExportError, match="tolerate_errors"):
        export_op(bulk_env.tmp / "strict").execute(task_context("strict"))
    summary = export_op(bulk_env.tmp / "lenient", tolerate_errors=True).execute(
        task_context("lenient")
    )
    assert summary["error"]["errors"] == 2


def test_output_counts_stay_strict(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "out"
    # Every file body is cut short; the output's count must catch it.
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=10, times=None)
    with pytest.raises(BulkExportError, match="failed after"):
        export_op(out, download_retries=1).execute(task_context())


def test_partial_files_are_swept_on_resume(bulk_env: BulkEnv) -> None:
    # Issue 10 #5: a killed try's temporary files stayed beside the data after the retry.
    out = bulk_env.tmp / "out"
    with pytest.raises(TaskDeferred):
        export_op(out, deferrable=True).execute(task_context(try_number=1, max_tries=2))
    out.mkdir(parents=True, exist_ok=True)
    (out / "error").mkdir(exist_ok=True)
    for leftover in (out / partial_name("Patient.000.ndjson"), out / "error" / partial_name("x")):
        leftover.write_bytes(b'{"resourceType":"Pat')  # what a SIGKILL leaves
    assert len(partials(out)) == 2
    export_op(out).execute(task_context(try_number=2, max_tries=2))
    assert partials(out) == []


def test_no_cancel_message_when_the_kickoff_failed(
    bulk_env: BulkEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 10 #6: "cancelling the export on the server" was logged with nothing to cancel.
    bulk_env.sb.faults.add("/fhir/$export", status=400, issue_code="invalid", body="bad _type")
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(BulkExportError, match="bad _type"),
    ):
        export_op(bulk_env.tmp / "out").execute(task_context())
    assert not any("cancelling the export" in r.getMessage() for r in caplog.records)
    assert bulk_env.sb.stats["bulk_cancels"] == 0


def test_manifest_expires_and_extensions_pass_through(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "out"
    export_op(out, types="Patient").execute(task_context())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["requiresAccessToken"] is True
    # STU3-era servers: no requiresAccessToken (the token still goes to allowed origins only).
    from airflow_provider_backendauth.core.bulk.manifest import BulkManifest

    old = BulkManifest.from_json({"transactionTime": "t", "output": [], "extension": {"x": 1}})
    assert old.requires_access_token is True and old.raw["extension"] == {"x": 1}
    assert old.next_url is None and old.expires is None


@pytest.mark.parametrize("how", ["parameter", "extra_params"])
def test_organize_output_by_patient_counts_resources_not_headers(
    bulk_env: BulkEnv, whole: Counter[tuple[str, str]], how: str
) -> None:
    # Header lines lead each patient's block; they are not resources, and the manifest's
    # count leaves them out. Counting them failed every file (and retried it).
    out = bulk_env.tmp / "out"
    option: dict[str, Any] = (
        {"organize_output_by": "Patient"}
        if how == "parameter"
        else {"extra_params": {"organizeOutputBy": "Patient"}}
    )
    summary = export_op(out, download_retries=1, **option).execute(task_context())
    assert landed(out) == whole  # headers aside, the same data
    files = list(out.glob("output.*.ndjson"))
    assert files
    lines = files[0].read_text().splitlines()
    headers = [json.loads(line) for line in lines if '"Parameters"' in line[:40]]
    assert headers and headers[0]["parameter"][0]["name"] == "header"
    assert summary["output"]["Unknown"]["count"] == sum(whole.values())
    assert bulk_env.sb.stats["file_downloads"] == summary["files"]
