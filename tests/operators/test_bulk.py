"""The bulk export operators against the sandbox: non-deferrable and deferrable runs,
``since="auto"``, resume after a crash, cancellation, error files, the mapped variant."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_backendauth._compat import TaskDeferred
from airflow_provider_backendauth.core.bulk.state import CANCELLED, DONE, BulkStateStore, job_key
from airflow_provider_backendauth.core.errors import BulkExportError, ConfigurationError
from airflow_provider_backendauth.operators.bulk import (
    FhirBulkDownloadOperator,
    FhirBulkExportOperator,
    FhirBulkFinalizeOperator,
)
from airflow_provider_backendauth.triggers.bulk import BulkExportTrigger
from tests.support.bulkkit import (
    CONN_ID,
    FAST_POLL,
    BulkEnv,
    assert_no_token_in,
    partials,
    task_context,
)
from tests.support.failures import fails_for_good

pytest_plugins = ("tests.support.bulk_fixtures",)

TYPES = {"Patient", "Observation", "Condition", "Encounter"}


def export_op(destination: Path | str, **kwargs: Any) -> FhirBulkExportOperator:
    options: dict[str, Any] = {
        "task_id": "export",
        "backendauth_conn_id": CONN_ID,
        "destination": str(destination),
        "deferrable": False,
        **FAST_POLL,
    }
    options.update(kwargs)
    return FhirBulkExportOperator(**options)


def job_state(destination: Path, run_id: str = "run-1", task_id: str = "export") -> Any:
    key = job_key(dag_id="bulk_dag", task_id=task_id, run_id=run_id)
    return BulkStateStore(destination).load_job(key)


def drive(deferred: TaskDeferred) -> dict[str, Any]:
    """Run the deferred task's trigger to its event, like the triggerer would."""

    async def first() -> dict[str, Any]:
        async for event in deferred.trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), 30))


def test_defaults_and_templating() -> None:
    signature = inspect.signature(FhirBulkExportOperator.__init__)
    assert signature.parameters["deferrable"].default is False  # [operators] default_deferrable
    for field in (
        "destination",
        "state_dir",
        "group_id",
        "types",
        "since",
        "until",
        "elements",
        "type_filters",
        "patients",
        "include_associated_data",
        "output_format",
        "extra_params",
    ):
        assert field in FhirBulkExportOperator.template_fields
    with pytest.raises(ValueError, match="level"):
        export_op("/tmp/x", level="everything")


def test_export_and_download(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "out"
    summary = export_op(f"file://{out}", level="group", group_id="g1").execute(task_context())
    assert set(summary["output"]) == TYPES
    assert summary["output"]["Patient"] == {
        "files": ["Patient.000.ndjson"],
        "count": 10,
        "bytes": (out / "Patient.000.ndjson").stat().st_size,
    }
    assert summary["transactionTime"]
    assert summary["destination"] == f"file://{out}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["transactionTime"] == summary["transactionTime"]
    text = json.dumps(summary)  # XCom
    assert len(text) < 2000
    assert "http" not in text
    assert_no_token_in(text, bulk_env.sb, bulk_env.client_id)
    assert job_state(out).state == DONE
    stats = bulk_env.sb.stats
    assert (stats["bulk_kickoffs"], stats["bulk_cancels"]) == (1, 1)  # DELETE after success
    assert not partials(out)


def test_post_with_patients_and_plain_path(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "plain"
    summary = export_op(
        out, level="patient", patients=_patient_ids(bulk_env, 3), types="Patient,Condition"
    ).execute(task_context())
    assert summary["output"]["Patient"]["count"] == 3
    assert set(summary["output"]) <= {"Patient", "Condition"}


def _patient_ids(bulk_env: BulkEnv, n: int) -> list[str]:
    import requests

    token = bulk_env.sb.issue_token(bulk_env.client_id)
    bundle = requests.get(
        f"{bulk_env.sb.fhir_base}/Patient",
        params={"_count": n},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    return [e["resource"]["id"] for e in bundle["entry"]]


def test_deferrable_run(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "out"
    op = export_op(out, deferrable=True, types=["Patient", "Condition"], max_wait=600)
    context = task_context()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert isinstance(deferred.trigger, BulkExportTrigger)
    _, kwargs = deferred.trigger.serialize()
    record = job_state(out)
    assert kwargs["status_url"] == record.status_url  # persisted before deferring
    assert kwargs["backendauth_conn_id"] == CONN_ID
    assert kwargs["deadline"] == pytest.approx(time.time() + 600, abs=30)
    assert kwargs["poll_settings"]["poll_interval_min"] == FAST_POLL["poll_interval_min"]

    event = drive(deferred)
    # A fresh operator object resumes, as in a new worker process.
    summary = export_op(out, deferrable=True, types=["Patient", "Condition"]).execute_complete(
        context, event
    )
    assert set(summary["output"]) == {"Patient", "Condition"}
    assert bulk_env.sb.stats["bulk_kickoffs"] == 1


def test_deferrable_resume_fetches_a_large_manifest(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "out"
    op = export_op(out, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(task_context())
    event = drive(info.value)
    event["manifest"] = None  # as when the manifest was too large to travel in the event
    summary = op.execute_complete(task_context(), event)
    assert set(summary["output"]) == TYPES


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ({"status": "error", "message": "The export failed: boom", "status_code": 500}, "boom"),
        ({"status": "timeout", "message": "did not complete within max_wait"}, "max_wait"),
    ],
)
def test_failure_events(bulk_env: BulkEnv, event: dict[str, Any], match: str) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    out = bulk_env.tmp / "out"
    op = export_op(out, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(task_context())
    with pytest.raises(BulkExportError, match=match):
        op.execute_complete(task_context(), {"status_url": "x", **event})
    # The only try failed: the export is cancelled on the server.
    assert bulk_env.sb.stats["bulk_cancels"] == 1
    assert job_state(out).state == CANCELLED


def test_since_auto(bulk_env: BulkEnv) -> None:
    state = bulk_env.tmp / "state"

    def run(run_id: str, **kwargs: Any) -> dict[str, Any]:
        return export_op(
            bulk_env.tmp / run_id,
            state_dir=state,
            since="auto",
            level="group",
            group_id="g1",
            types="Patient,Observation",
            **kwargs,
        ).execute(task_context(run_id))

    first = run("day-1")
    assert (
        BulkStateStore(state)
        .load_job(job_key(dag_id="bulk_dag", task_id="export", run_id="day-1"))
        .request["since"]
        is None
    )
    second = run("day-2")
    record = BulkStateStore(state).load_job(
        job_key(dag_id="bulk_dag", task_id="export", run_id="day-2")
    )
    assert record.request["since"] == first["transactionTime"]
    assert second["transactionTime"] > first["transactionTime"]
    # Another group (or other types) has its own watermark.
    other = export_op(
        bulk_env.tmp / "g2", state_dir=state, since="auto", level="group", group_id="g2"
    ).execute(task_context("g2-1"))
    assert other["output"]["Patient"]["count"] == 3


def test_since_auto_is_not_advanced_by_a_failed_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_error_file="fatal")
    state = bulk_env.tmp / "state"
    with pytest.raises(BulkExportError, match="error files"):
        export_op(bulk_env.tmp / "a", state_dir=state, since="auto").execute(task_context("a"))
    bulk_env.sb.settings.update(bulk_error_file=None)
    export_op(bulk_env.tmp / "b", state_dir=state, since="auto").execute(task_context("b"))
    record = BulkStateStore(state).load_job(
        job_key(dag_id="bulk_dag", task_id="export", run_id="b")
    )
    assert record.request["since"] is None


def test_resume_after_a_crash_while_deferred(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=1.0)
    out = bulk_env.tmp / "out"
    with pytest.raises(TaskDeferred) as first:
        export_op(out, deferrable=True).execute(task_context(try_number=1, max_tries=2))
    # The worker (or triggerer) died; the task is retried from scratch.
    with pytest.raises(TaskDeferred) as second:
        export_op(out, deferrable=True).execute(task_context(try_number=2, max_tries=2))
    assert (
        second.value.trigger.serialize()[1]["status_url"]
        == (first.value.trigger.serialize()[1]["status_url"])
    )
    summary = export_op(out, deferrable=True).execute_complete(
        task_context(try_number=2, max_tries=2), drive(second.value)
    )
    assert set(summary["output"]) == TYPES
    assert bulk_env.sb.stats["bulk_kickoffs"] == 1


def test_retry_continues_the_export_and_skips_complete_files(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=5)
    out = bulk_env.tmp / "out"
    op = export_op(out, parallel_downloads=1, download_retries=0, retries=2)
    # The first try kicks off and dies downloading one file (the server keeps failing it).

    def fail_one_file() -> None:
        # Wait for the manifest, then break one file for good.
        deadline = time.time() + 10
        while time.time() < deadline and not (out / "manifest.json").exists():
            time.sleep(0.01)
        data = json.loads((out / "manifest.json").read_text())
        url = data["output"][5]["url"]
        bulk_env.sb.faults.add(urlsplit(url).path, status=500, times=None)

    bulk_env.sb.faults.add("/fhir/_bulk/files", delay=0.3, times=1)  # time to break a file
    breaker = threading.Thread(target=fail_one_file)
    breaker.start()
    with pytest.raises(BulkExportError, match="failed after 1 attempts"):
        op.execute(task_context(try_number=1, max_tries=2))
    breaker.join()
    stats = bulk_env.sb.stats
    assert stats["bulk_cancels"] == 0  # a retry follows: keep the export
    downloaded_first = stats["file_downloads"]
    assert downloaded_first >= 1

    bulk_env.sb.faults.clear()
    summary = export_op(out, parallel_downloads=2, retries=2).execute(
        task_context(try_number=2, max_tries=2)
    )
    stats = bulk_env.sb.stats
    assert stats["bulk_kickoffs"] == 1
    assert 1 <= summary["resumed_files"] <= downloaded_first
    # Only the files not complete after the first try were downloaded again.
    assert stats["file_downloads"] - downloaded_first == summary["files"] - summary["resumed_files"]
    assert sum(t["count"] for t in summary["output"].values()) > 0


def test_failing_for_good_cancels_the_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs",
        method="GET",
        status=500,
        issue_code="exception",
        severity="fatal",
        body="export crashed",
        times=None,
    )
    out = bulk_env.tmp / "out"
    with pytest.raises(BulkExportError, match="export crashed"):
        export_op(out).execute(task_context(try_number=3, max_tries=2))
    assert bulk_env.sb.stats["bulk_cancels"] == 1
    assert job_state(out).state == CANCELLED


def test_failing_with_retries_left_keeps_the_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", status=503, times=None)
    out = bulk_env.tmp / "out"
    with pytest.raises(BulkExportError, match="kept failing"):
        export_op(out, max_transient_errors=1).execute(task_context(try_number=1, max_tries=2))
    assert bulk_env.sb.stats["bulk_cancels"] == 0
    assert job_state(out).active


def test_cancel_on_failure_can_be_turned_off(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs", method="GET", status=400, issue_code="invalid", times=None
    )
    with pytest.raises(BulkExportError):
        export_op(bulk_env.tmp / "o", cancel_on_failure=False).execute(task_context())
    assert bulk_env.sb.stats["bulk_cancels"] == 0


def test_on_kill_cancels_the_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    op = export_op(bulk_env.tmp / "out", poll_interval_min=0.2, poll_interval_max=0.2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(task_context(try_number=1, max_tries=3))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 10
    while time.time() < deadline and bulk_env.sb.stats["bulk_status_polls"] == 0:
        time.sleep(0.02)
    op.on_kill()
    worker.join(10)
    assert not worker.is_alive()
    assert errors and "Stopped" in str(errors[0])
    assert bulk_env.sb.stats["bulk_cancels"] >= 1


@pytest.mark.parametrize("tolerate", [False, True])
def test_error_files_fail_the_task_unless_tolerated(bulk_env: BulkEnv, tolerate: bool) -> None:
    bulk_env.sb.settings.update(bulk_error_file="error")
    out = bulk_env.tmp / "out"
    op = export_op(out, tolerate_errors=tolerate)
    if tolerate:
        summary = op.execute(task_context())
        assert summary["error"]["errors"] > 0
    else:
        with pytest.raises(BulkExportError, match="tolerate_errors"):
            op.execute(task_context())
    # Either way the files were downloaded before judging them.
    assert (out / "Patient.000.ndjson").exists()
    assert list((out / "error").glob("*.ndjson"))


def test_cleanup_false_keeps_the_job_on_the_server(bulk_env: BulkEnv) -> None:
    export_op(bulk_env.tmp / "out", cleanup=False).execute(task_context())
    assert bulk_env.sb.stats["bulk_cancels"] == 0


def test_kickoff_busy_budget(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_reject_concurrent=True, bulk_job_seconds=30)
    blocker = export_op(bulk_env.tmp / "a", deferrable=True)
    with pytest.raises(TaskDeferred):
        blocker.execute(task_context("a"))
    with pytest.raises(BulkExportError, match="kickoff_busy_budget"):
        export_op(bulk_env.tmp / "b", kickoff_busy_budget=0.3).execute(task_context("b"))
    assert bulk_env.sb.stats["bulk_rejected_concurrent"] >= 1


def test_token_only_to_allowed_origins(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_file_origin="redirect")
    summary = export_op(bulk_env.tmp / "out").execute(task_context())
    assert summary["files"] == 4
    assert bulk_env.sb.stats["foreign_origin"]["authorization_headers"] == []


def test_object_storage_path_destination(bulk_env: BulkEnv) -> None:
    dest = ObjectStoragePath(f"file://{bulk_env.tmp}/osp")
    summary = export_op(dest, types="Patient").execute(task_context())
    assert summary["output"]["Patient"]["count"] == 20
    assert (bulk_env.tmp / "osp" / "Patient.000.ndjson").exists()


# --- the mapped variant -----------------------------------------------------------------


def mapped_run(bulk_env: BulkEnv, out: Path, run_id: str = "run-1") -> list[dict[str, Any]]:
    files = export_op(out, download=False, since="auto").execute(task_context(run_id))
    assert isinstance(files, list)
    return files


def download_op(out: Path, **kwargs: Any) -> FhirBulkDownloadOperator:
    return FhirBulkDownloadOperator(
        task_id="download", backendauth_conn_id=CONN_ID, destination=str(out), **kwargs
    )


def finalize_op(out: Path, **kwargs: Any) -> FhirBulkFinalizeOperator:
    return FhirBulkFinalizeOperator(
        task_id="finalize",
        export_task_id="export",
        backendauth_conn_id=CONN_ID,
        destination=str(out),
        **kwargs,
    )


def test_mapped_downloads(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=6)
    out = bulk_env.tmp / "out"
    files = mapped_run(bulk_env, out)
    assert len(files) > 4
    text = json.dumps(files)  # the XCom the mapped tasks expand over
    assert_no_token_in(text, bulk_env.sb, bulk_env.client_id)
    assert {f["kind"] for f in files} == {"output"}
    assert "http" not in text  # no (possibly signed) URLs in XCom
    assert (out / "manifest.json").exists()
    assert [p.name for p in out.glob("*.ndjson")] == ["log.ndjson"]  # the kick-off so far

    results = [
        download_op(out, file=f).execute(task_context(task_id="download", map_index=i))
        for i, f in enumerate(files)
    ]
    assert [r["name"] for r in results] == [f["name"] for f in files]
    # A retried mapped task skips its complete file.
    again = download_op(out, file=files[0]).execute(task_context(task_id="download"))
    assert again["skipped"] is True

    summary = finalize_op(out).execute(task_context(task_id="finalize"))
    assert sum(v["count"] for v in summary["output"].values()) == sum(f["count"] for f in files)
    stats = bulk_env.sb.stats
    assert stats["file_downloads"] == len(files)
    assert stats["bulk_cancels"] == 1
    assert BulkStateStore(out).load_since(job_state(out).export_key) == summary["transactionTime"]


def test_mapped_downloads_store_gzip_when_the_export_asked_for_it(bulk_env: BulkEnv) -> None:
    # Only the export task names compression; the mapped downloads and the finalize task
    # follow the job's record.
    bulk_env.sb.settings.update(bulk_lines_per_file=6, bulk_error_file="warning")
    out = bulk_env.tmp / "out"
    files = export_op(out, download=False, compression="gzip").execute(task_context())
    assert files and all(f["name"].endswith(".ndjson.gz") for f in files)
    for i, f in enumerate(files):
        download_op(out, file=f).execute(task_context(task_id="download", map_index=i))
    summary = finalize_op(out).execute(task_context(task_id="finalize"))
    outputs = [f for f in files if f["kind"] == "output"]
    stored = [out / f["name"] for f in outputs]
    lines = sum(len(gzip.decompress(path.read_bytes()).splitlines()) for path in stored)
    assert lines == sum(f["count"] for f in outputs)
    assert sum(v["count"] for v in summary["output"].values()) == lines
    assert summary["error"]["warnings"] > 0  # the error file, read back through gzip
    assert not list(out.rglob("*.[0-9][0-9][0-9].ndjson"))  # no export file stored plain
    with pytest.raises(ConfigurationError, match="compression must be None or one of"):
        export_op(out, compression="zstd")


def test_finalize_fails_and_cancels_when_a_download_is_missing(bulk_env: BulkEnv) -> None:
    out = bulk_env.tmp / "out"
    files = mapped_run(bulk_env, out)
    for f in files[1:]:
        download_op(out, file=f).execute(task_context(task_id="download"))
    with pytest.raises(BulkExportError, match=rf"1 of {len(files)} export files are not complete"):
        finalize_op(out).execute(task_context(task_id="finalize"))
    assert bulk_env.sb.stats["bulk_cancels"] == 1
    assert job_state(out).state == CANCELLED


def test_finalize_without_export_state(bulk_env: BulkEnv) -> None:
    with pytest.raises(BulkExportError, match="No export state"):
        finalize_op(bulk_env.tmp / "nothing").execute(task_context(task_id="finalize"))
    assert (
        FhirBulkFinalizeOperator(task_id="f", export_task_id="e", destination="/tmp/x").trigger_rule
        == "all_done"
    )


def test_download_operator_rejects_foreign_input(bulk_env: BulkEnv) -> None:
    from airflow_provider_backendauth.core.errors import ConfigurationError

    with fails_for_good(ConfigurationError, "download=False"):
        download_op(bulk_env.tmp, file={"url": "x"}).execute(task_context())
    out = bulk_env.tmp / "out"
    mapped_run(bulk_env, out)
    with fails_for_good(ConfigurationError, "is not a file of the export"):
        download_op(out, file={"job": "j", "name": "Nope.000.ndjson"}).execute(task_context())


@pytest.mark.parametrize(
    "absurd",
    [{"poll_interval_max": 1e9}, {"max_wait": 1e12}, {"max_transient_errors": 10**9}],
)
def test_absurd_poll_settings_fail_when_the_dag_is_parsed(tmp_path: Path, absurd: Any) -> None:
    from airflow_provider_backendauth.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        export_op(tmp_path, **absurd)


def _failure(run: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        run()
    return info.value


@pytest.mark.parametrize("fault", ["transient", "fatal", "fatal_with_controls", "timeout"])
def test_the_deferred_path_raises_what_the_worker_path_raises(
    bulk_env: BulkEnv, fault: str
) -> None:
    # Before: "gave up after N transient errors" was retryable on a worker but not deferred,
    # and the deferred error lost the server's diagnostics.
    options: dict[str, Any] = {"max_transient_errors": 1}
    if fault == "transient":
        bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", status=503, times=None)
    elif fault.startswith("fatal"):
        # Server text that would forge a log line and colour a terminal, if quoted raw.
        body = "disk\r\nINFO forged line \x1b[31mred" if fault == "fatal_with_controls" else None
        bulk_env.sb.faults.add(
            "/fhir/_bulk/jobs",
            method="GET",
            status=400,
            issue_code="invalid",
            body=body,
            times=None,
        )
    else:
        bulk_env.sb.settings.update(bulk_job_seconds=60)
        options["max_wait"] = 0.5
    context = task_context(try_number=1, max_tries=2)  # retries left: nothing is cancelled
    worker = _failure(lambda: export_op(bulk_env.tmp / "worker", **options).execute(context))

    op = export_op(bulk_env.tmp / "deferred", deferrable=True, **options)
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    event = drive(info.value)
    json.dumps(event)  # the triggerer stores it as JSON
    deferred = _failure(lambda: op.execute_complete(context, event))

    assert type(deferred) is type(worker) is BulkExportError
    assert isinstance(worker, BulkExportError) and isinstance(deferred, BulkExportError)
    assert deferred.retryable == worker.retryable == (not fault.startswith("fatal"))
    assert deferred.retry_cannot_help == worker.retry_cannot_help
    assert deferred.status_code == worker.status_code
    assert deferred.diagnostics == worker.diagnostics
    if fault != "timeout":  # a timeout's message counts the polls, which vary
        assert same_job(str(deferred)) == same_job(str(worker))
    for text in (str(worker), str(deferred), str(worker.diagnostics), str(deferred.diagnostics)):
        assert "\r" not in text and "\n" not in text and "\x1b" not in text
    if fault == "fatal_with_controls":  # quoted, escaped, on both paths
        assert "\\r\\nINFO forged line \\x1b[31mred" in str(deferred.diagnostics)


def same_job(message: str) -> str:
    """``message`` with the export's status URL made the same for every job."""
    return re.sub(r"/_bulk/jobs/[0-9a-f]+", "/_bulk/jobs/ID", message)


def test_progress_reaches_the_task_log_when_deferred(
    bulk_env: BulkEnv, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Still running for the first two polls whatever the machine's load: progress is sent.
    bulk_env.sb.settings.update(bulk_job_seconds=0, bulk_complete_after_polls=3)
    out = bulk_env.tmp / "out"
    op = export_op(out, deferrable=True, types=["Patient"])
    with pytest.raises(TaskDeferred) as info:
        op.execute(task_context())
    event = drive(info.value)
    assert "exported" in str(event["progress"])
    with caplog.at_level(logging.INFO):
        op.execute_complete(task_context(), event)
    logged = capsys.readouterr().out + caplog.text
    assert f"The server's last progress report: {event['progress']}" in logged
