"""``BulkExportJob``: the durable lifecycle against the sandbox: resume after a crash without
a second kick-off, no re-download of complete files, the since watermark, cancellation."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.bulk.state import (
    CANCELLED,
    COMPLETE,
    DONE,
    KICKED_OFF,
    BulkStateStore,
)
from airflow_provider_backendauth.core.errors import BulkExportError
from tests.support.bulkkit import BulkEnv, partials

pytest_plugins = ("tests.support.bulk_fixtures",)

REQUEST = BulkExportRequest.create("group", group_id="g1")


def test_full_lifecycle_and_state(bulk_env: BulkEnv) -> None:
    job = bulk_env.job()
    record = job.start(REQUEST, since_key="since-1", description={"level": "group"})
    assert record.state == KICKED_OFF
    saved = json.loads((bulk_env.tmp / "out/_bulk_state/jobs/job-1.json").read_text())
    assert saved["status_url"] == record.status_url  # durable right after the kick-off
    manifest = job.wait()
    job.accept_manifest(manifest)
    assert job.store.load_job("job-1").state == COMPLETE  # type: ignore[union-attr]
    results = job.download(manifest)
    summary = job.finish(manifest, results)
    assert summary["transactionTime"] == manifest.transaction_time
    assert summary["output"]["Patient"]["count"] == 10
    assert job.store.load_job("job-1").state == DONE  # type: ignore[union-attr]
    assert job.store.load_since("since-1") == manifest.transaction_time
    stats = bulk_env.sb.stats
    assert stats["bulk_cancels"] == 1  # cleanup DELETE after the download
    assert stats["bulk_kickoffs"] == 1


def test_resume_after_a_crash_does_not_kick_off_again(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=0.8)
    first = bulk_env.job()
    status_url = first.start(REQUEST, since_key="s").status_url
    del first  # the worker dies while the export runs

    second = bulk_env.job()
    record = second.start(REQUEST, since_key="s")
    assert second.resumed
    assert record.status_url == status_url
    manifest = second.wait()
    second.accept_manifest(manifest)
    second.finish(manifest, second.download(manifest))
    assert bulk_env.sb.stats["bulk_kickoffs"] == 1


def test_resume_skips_files_already_complete(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=4, bulk_gzip=False)
    first = bulk_env.job(parallel=1, attempts=1)
    first.start(REQUEST, since_key="s")
    manifest = first.wait()
    files = first.accept_manifest(manifest)
    victim = files[3]
    # That one file keeps failing: the try fails after the others are complete.
    bulk_env.sb.faults.add(urlsplit(victim.url).path, status=500, times=None)
    with pytest.raises(BulkExportError, match=victim.name.replace(".", r"\.")):
        first.download(manifest)
    done_before = bulk_env.sb.stats["file_downloads"]
    bulk_env.sb.faults.clear()

    second = bulk_env.job(parallel=2)
    second.start(REQUEST, since_key="s")
    assert second.resumed and not second.needs_wait
    results = second.download(second.local_manifest())
    skipped = [r for r in results if r.skipped]
    fetched = [r for r in results if not r.skipped]
    assert victim.name in {r.name for r in fetched}
    assert len(skipped) >= 1
    # Only the files not yet complete were downloaded again.
    assert bulk_env.sb.stats["file_downloads"] - done_before == len(fetched)
    summary = second.finish(second.local_manifest(), results)
    assert summary["resumed_files"] == len(skipped)
    assert sum(v["count"] for v in summary["output"].values()) == sum(
        e.count or 0 for e in manifest.output
    )
    assert bulk_env.sb.stats["bulk_kickoffs"] == 1
    assert not partials(bulk_env.tmp / "out")


def test_a_finished_job_is_not_resumed(bulk_env: BulkEnv) -> None:
    job = bulk_env.job()
    job.start(REQUEST, since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    job.finish(manifest, job.download(manifest))
    again = bulk_env.job()
    again.start(REQUEST, since_key="s")
    assert not again.resumed
    assert bulk_env.sb.stats["bulk_kickoffs"] == 2


def test_abandon_cancels_on_the_server(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    job = bulk_env.job()
    job.start(REQUEST, since_key="s")
    job.abandon()
    assert bulk_env.sb.stats["bulk_cancels"] == 1
    assert job.store.load_job("job-1").state == CANCELLED  # type: ignore[union-attr]
    fresh = bulk_env.job()
    fresh.start(REQUEST, since_key="s")
    assert not fresh.resumed  # a cancelled export is never continued
    fresh.abandon()


def test_unsaveable_state_cancels_the_new_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    job = bulk_env.job()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("read-only bucket")

    job.store.save_job = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="read-only bucket"):
        job.start(REQUEST, since_key="s")
    assert bulk_env.sb.stats["bulk_cancels"] == 1


def test_state_can_live_apart_from_the_data(bulk_env: BulkEnv) -> None:
    state = bulk_env.tmp / "state"
    job = bulk_env.job(bulk_env.tmp / "day-1", state_dir=state)
    job.start(REQUEST, since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    job.finish(manifest, job.download(manifest))
    assert BulkStateStore(state).load_since("s") == manifest.transaction_time
    assert not (bulk_env.tmp / "day-1" / "_bulk_state").exists()
    assert (bulk_env.tmp / "day-1" / "manifest.json").exists()


def test_missing_local_manifest_is_explained(bulk_env: BulkEnv) -> None:
    with pytest.raises(BulkExportError, match=r"manifest\.json is missing"):
        bulk_env.job().local_manifest()
