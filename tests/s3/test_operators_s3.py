"""The operators writing to a real S3 endpoint (moto server) through the Amazon provider's
``ObjectStoragePath("s3://conn@bucket/...")``: every file uploaded once, in place, no
server-side copy, nothing left by a failed run, resume keeping the parts already uploaded.

These are the README's object-storage examples, run as written (only the bucket differs).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.state import BulkStateStore
from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.operators.bulk import (
    FhirBulkDownloadOperator,
    FhirBulkExportOperator,
    FhirBulkFinalizeOperator,
)
from airflow_provider_backendauth.operators.fhir import FhirSearchOperator
from tests.s3.conftest import Bucket
from tests.support.bulkkit import CONN_ID, FAST_POLL, BulkEnv, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)

UPLOADS = {"PutObject", "CompleteMultipartUpload"}  # what makes an object appear
MIB = 2**20


def uploads_per_key(bucket: Bucket) -> dict[str, int]:
    return {
        key: sum(n for op, n in ops.items() if op in UPLOADS)
        for key, ops in bucket.server.by_key(bucket.name).items()
    }


def assert_no_copy_and_nothing_pending(bucket: Bucket) -> None:
    ops = bucket.server.operations(bucket.name)
    assert ops["CopyObject"] == 0 and ops["UploadPartCopy"] == 0, ops
    assert bucket.server.incomplete_uploads(bucket.name) == []


def ndjson(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_fhir_search_to_s3(bulk_env: BulkEnv, bucket: Bucket) -> None:
    # As in the README, destination templated per day.
    FhirSearchOperator(
        task_id="observations",
        backendauth_conn_id=CONN_ID,
        resource_type="Observation",
        search_params={"_include": "Observation:patient"},
        count=20,
        destination=bucket.url("fhir/2024-06-01"),
    ).execute({})
    objects = bucket.server.objects(bucket.name)
    prefix = "fhir/2024-06-01/"
    assert sorted(objects) == [
        f"{prefix}Observation.included.ndjson",
        f"{prefix}Observation.ndjson",
    ]
    observations = ndjson(objects[f"{prefix}Observation.ndjson"])
    assert len(observations) == len(bulk_env.sb.store.by_type["Observation"])
    included = ndjson(objects[f"{prefix}Observation.included.ndjson"])
    assert included and {r["resourceType"] for r in included} == {"Patient"}
    assert {k: dict(v) for k, v in bucket.server.by_key(bucket.name).items()} == {
        key: {"PutObject": 1} for key in objects
    }
    assert_no_copy_and_nothing_pending(bucket)


def export_op(bucket: Bucket, **kwargs: Any) -> FhirBulkExportOperator:
    options: dict[str, Any] = {
        "task_id": "export",
        "backendauth_conn_id": CONN_ID,
        "level": "group",
        "group_id": "all",
        "since": "auto",
        "destination": bucket.url("bulk/2024-06-01"),
        "state_dir": bucket.url("bulk"),
        "deferrable": False,
        **FAST_POLL,
    }
    options.update(kwargs)
    return FhirBulkExportOperator(**options)


def exported(bucket: Bucket) -> dict[str, bytes]:
    return {
        k: v
        for k, v in bucket.server.objects(bucket.name, "bulk/2024-06-01/").items()
        if k.endswith(".ndjson") and not k.endswith("/log.ndjson")  # the export log
    }


def test_bulk_export_to_s3_one_upload_per_file(bulk_env: BulkEnv, bucket: Bucket) -> None:
    summary = export_op(bucket).execute(task_context())
    files = exported(bucket)
    assert summary["files"] == len(files) == 4
    store = bulk_env.sb.store
    for name, data in files.items():
        kind = name.rsplit("/", 1)[1].split(".")[0]
        assert sorted(r["id"] for r in ndjson(data)) == sorted(r.id for r in store.by_type[kind])
    per_key = bucket.server.by_key(bucket.name)
    for name in files:
        # One upload, and at most a listing of leftover uploads and an existence check.
        ops = per_key[name]
        assert sum(ops[o] for o in UPLOADS) == 1, (name, ops)
        assert ops["CopyObject"] == 0
        assert sum(ops.values()) <= 3, (name, ops)
    uploads = uploads_per_key(bucket)
    assert uploads["bulk/2024-06-01/manifest.json"] == 1
    state_keys = [k for k in uploads if "/_bulk_state/" in k]
    assert any("/since/" in k for k in state_keys)  # the watermark, on S3
    assert_no_copy_and_nothing_pending(bucket)
    # The watermark is on S3, where the next run (on any worker) reads it back.
    (since,) = [k for k in state_keys if "/since/" in k]
    record = json.loads(bucket.server.objects(bucket.name, since)[since])
    assert record["transactionTime"] == summary["transactionTime"]
    store = BulkStateStore(bucket.path("bulk"))
    assert store.load_since(since.rsplit("/", 1)[1][: -len(".json")]) == summary["transactionTime"]


def test_mapped_downloads_to_s3(bulk_env: BulkEnv, bucket: Bucket) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=25)
    dest, state = bucket.url("bulk/2024-06-01"), bucket.url("bulk")
    files = export_op(bucket, download=False).execute(task_context())
    assert isinstance(files, list) and len(files) > 4
    for i, f in enumerate(files):
        FhirBulkDownloadOperator(
            task_id="download",
            backendauth_conn_id=CONN_ID,
            destination=dest,
            state_dir=state,
            file=f,
        ).execute(task_context(task_id="download", map_index=i))
    summary = FhirBulkFinalizeOperator(
        task_id="finalize",
        export_task_id="export",
        backendauth_conn_id=CONN_ID,
        destination=dest,
        state_dir=state,
    ).execute(task_context(task_id="finalize"))
    assert len(exported(bucket)) == len(files)
    assert sum(v["count"] for v in summary["output"].values()) == sum(f["count"] for f in files)
    uploads = uploads_per_key(bucket)
    assert all(uploads[f"bulk/2024-06-01/{f['name']}"] == 1 for f in files)
    assert_no_copy_and_nothing_pending(bucket)


def test_failed_download_leaves_no_object(bulk_env: BulkEnv, bucket: Bucket) -> None:
    # Observation's file is cut repeatedly after 3 MiB: every attempt fails, the task fails.
    bulk_env.sb.settings.update(bulk_resource_padding_bytes=100_000, bulk_gzip=False)
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=3 * MIB, times=None, method="GET")
    with pytest.raises(BulkExportError):
        export_op(bucket, types="Observation", download_retries=1).execute(task_context())
    assert exported(bucket) == {}
    assert_no_copy_and_nothing_pending(bucket)


def test_cut_download_resumes_keeping_uploaded_parts(bulk_env: BulkEnv, bucket: Bucket) -> None:
    # A ~24 MiB file cut once after 20 MiB: the parts already uploaded stay, the rest is
    # fetched with Range and appended; every byte is uploaded exactly once.
    bulk_env.sb.settings.update(bulk_resource_padding_bytes=300_000, bulk_gzip=False)
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=20 * MIB, times=1)
    export_op(bucket, types="Observation").execute(task_context())
    ((name, data),) = exported(bucket).items()
    assert len(ndjson(data)) == len(bulk_env.sb.store.by_type["Observation"])
    ops = bucket.server.by_key(bucket.name)[name]
    assert ops["CreateMultipartUpload"] == 1 and ops["CompleteMultipartUpload"] == 1
    assert ops["AbortMultipartUpload"] == 0
    sent = sum(
        r.bytes for r in bucket.server.requests if r.key == name and r.operation == "UploadPart"
    )
    assert sent == len(data)
    assert bulk_env.sb.stats["file_downloads"] >= 2  # the cut one and the Range request
    assert_no_copy_and_nothing_pending(bucket)
