"""Leftover multipart uploads on a real S3 endpoint (moto server): a bulk download run lists
them once for its destination, not once per file (thousands of files made that quadratic),
and aborts only its own files' uploads."""

from __future__ import annotations

from tests.s3.conftest import Bucket
from tests.support.bulkkit import CONN_ID, FAST_POLL, BulkEnv, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)


def export_patients(bucket: Bucket, folder: str) -> int:
    """Export the sandbox's Patients to ``folder`` on S3; returns how many files."""
    from airflow_provider_backendauth.operators.bulk import FhirBulkExportOperator

    summary = FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=CONN_ID,
        types="Patient",
        destination=bucket.url(folder),
        state_dir=bucket.url(f"{folder}-state"),
        deferrable=False,
        **FAST_POLL,
    ).execute(task_context())
    return int(summary["files"])


def test_one_listing_per_run_whatever_the_number_of_files(
    bulk_env: BulkEnv, bucket: Bucket
) -> None:
    listings = {}
    for lines_per_file in (10, 1):  # 2 files, then 20
        bulk_env.sb.settings.update(bulk_lines_per_file=lines_per_file)
        bucket.server.reset()
        assert export_patients(bucket, f"bulk-{lines_per_file}") == 20 // lines_per_file
        listings[lines_per_file] = bucket.server.operations(bucket.name)["ListMultipartUploads"]
    assert listings == {10: 1, 1: 1}  # it was one per file: 2 and 20


def test_only_the_runs_own_uploads_are_aborted(bulk_env: BulkEnv, bucket: Bucket) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=5)
    s3 = bucket.server.client()
    killed = ["out/Patient.001.ndjson", "out/Patient.001.ndjson", "out/Patient.003.ndjson"]
    # Another writer's uploads: another key in the folder, one that only starts alike, and
    # the same name one folder deeper.
    others = ["out/Other.ndjson", "out/Patient.001.ndjson.bak", "out/sub/Patient.001.ndjson"]
    for key in killed + others:
        s3.create_multipart_upload(Bucket=bucket.name, Key=key)
    bucket.server.reset()
    assert export_patients(bucket, "out") == 4
    assert sorted(bucket.server.incomplete_uploads(bucket.name)) == sorted(others)
    assert bucket.server.operations(bucket.name)["ListMultipartUploads"] == 1
    aborted = [r.key for r in bucket.server.requests if r.operation == "AbortMultipartUpload"]
    assert sorted(aborted) == sorted(killed)


def test_a_server_that_cannot_list_uploads_still_gets_the_export(
    bulk_env: BulkEnv, bucket: Bucket, caplog
) -> None:
    """Some S3-compatible servers (s3rver, for one) answer ListMultipartUploads with 501
    NotImplemented: nothing can be listed, so nothing is aborted, and the export goes on."""
    bulk_env.sb.settings.update(bulk_lines_per_file=5)
    bucket.server.fail("ListMultipartUploads", status=501, code="NotImplemented")
    assert export_patients(bucket, "out") == 4
    stored = bucket.server.objects(bucket.name, "out/")
    patients = sorted(k for k in stored if k.startswith("out/Patient."))
    assert patients == [f"out/Patient.00{n}.ndjson" for n in range(4)]
    assert sum(stored[k].count(b"\n") for k in patients) == 20  # every Patient, whole
    assert "out/manifest.json" in stored
    assert "cannot list incomplete multipart uploads" in caplog.text
