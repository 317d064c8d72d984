"""Gzip at rest: an export asked to store ``.ndjson.gz`` writes every file through the fastest
installed deflater, with the counts and completeness checks of the decoded NDJSON, resumes a
cut file into the same gzip stream, and keeps its choice across retries and mapped tasks.
Against the sandbox, files on disk read back with the standard library's ``gzip``."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.compress import (
    DEFLATERS,
    check_compression,
    stored_name,
)
from airflow_provider_backendauth.core.bulk.job import BulkExportJob
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.errors import ConfigurationError
from tests.support.bulkkit import BulkEnv, partials

pytest_plugins = ("tests.support.bulk_fixtures",)


def gz_lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def export(job: BulkExportJob, **request: Any) -> tuple[Any, list[Any]]:
    job.start(BulkExportRequest.create("system", **request), since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    return manifest, job.download(manifest)


@pytest.mark.parametrize("name", DEFLATERS.names())
def test_every_installed_deflater_writes_standard_gzip(name: str) -> None:
    data = b"".join(b'{"resourceType":"Observation","id":"%d"}\n' % i for i in range(20_000))
    deflater = DEFLATERS.choose(name)[1]()
    stored = b"".join(deflater.compress(data[i : i + 4096]) for i in range(0, len(data), 4096))
    stored += deflater.flush()
    assert gzip.decompress(stored) == data
    assert len(stored) < len(data) / 5


def test_compression_is_none_or_gzip() -> None:
    assert check_compression(None) is None and check_compression("gzip") == "gzip"
    assert stored_name("error/OperationOutcome.000.ndjson", "gzip").endswith(".ndjson.gz")
    with pytest.raises(ConfigurationError, match="compression must be None or one of"):
        check_compression("zstd")


def test_files_are_stored_gzipped_with_the_decoded_checks(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_error_file="warning", bulk_resource_padding_bytes=500)
    job = bulk_env.job(compression="gzip")
    manifest, results = export(job)
    out = bulk_env.tmp / "out"
    outputs = [r for r in results if r.kind == "output"]
    assert {r.name for r in outputs} == {
        f"{t}.000.ndjson.gz" for t in ("Patient", "Observation", "Condition", "Encounter")
    }
    for result, entry in zip(outputs, manifest.output, strict=True):
        path = out / result.name
        lines = gz_lines(path)
        assert len(lines) == entry.count == result.count  # counted as NDJSON
        assert {line["resourceType"] for line in lines} == {entry.type}
        decoded = len(gzip.decompress(path.read_bytes()))
        assert result.bytes == decoded > 3 * path.stat().st_size  # bytes: decoded NDJSON
    (error,) = [r for r in results if r.kind == "error"]
    assert error.name.startswith("error/") and error.name.endswith(".ndjson.gz")
    summary = job.finish(manifest, results)  # reads the gzipped error file
    assert summary["error"]["warnings"] > 0
    assert not partials(out)


def test_a_cut_file_resumes_into_the_same_gzip_stream(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_gzip=False, bulk_resource_padding_bytes=2000)
    job = bulk_env.job(parallel=1, chunk_size=8 * 1024, compression="gzip")
    job.start(BulkExportRequest.create("system", types="Observation"), since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    bulk_env.sb.reset_stats()
    bulk_env.sb.faults.add("/fhir/_bulk/files", drop_after_bytes=50_000, times=1)
    (result,) = job.download(manifest)
    assert bulk_env.sb.stats["responses_by_status"].get("206") == 1  # the rest only
    path = bulk_env.tmp / "out" / result.name
    zlib.decompress(path.read_bytes(), 31)  # one complete member, nothing after it
    lines = gz_lines(path)
    assert len(lines) == result.count == manifest.output[0].count
    assert len({line["id"] for line in lines}) == len(lines)


def test_a_retry_or_mapped_task_keeps_the_kick_offs_choice(bulk_env: BulkEnv) -> None:
    first = bulk_env.job(compression="gzip")
    export(first, types="Patient")
    # A later try, or a mapped download/finalize task, built without the parameter: the
    # job record decides how the files are named.
    later = bulk_env.job()
    assert later.stored_compression == "gzip"
    assert [f.name for f in later.planned_files()] == ["Patient.000.ndjson.gz"]
