"""``log.ndjson``: bulk-data-client's export log, written beside the data by every kind of run.

The expected event names and the fields each carries are those bulk-data-client's logger
writes (its ``src/app.ts`` and ``src/lib/BulkDataClient.ts``: ``kickOffEnd``,
``exportPage``, ``manifestComplete``, ``exportComplete``, ``downloadStart``,
``downloadComplete``, ``downloadError``, ``allDownloadsComplete``, ``exportError`` and the
``client_error`` of a failed run). The exports run against the sandbox.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_backendauth._compat import TaskDeferred
from airflow_provider_backendauth.core.bulk.exportlog import ExportLog
from airflow_provider_backendauth.core.bulk.state import BulkStateStore, job_key
from airflow_provider_backendauth.core.errors import BulkExportError
from tests.operators.test_bulk import download_op, drive, export_op, finalize_op
from tests.support.bulkkit import BulkEnv, assert_no_token_in, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)

# Every line: bulk-data-client's logger format (plus its log.metadata keys, none here).
LINE_FIELDS = {"exportId", "timestamp", "eventId", "eventDetail"}
# eventId -> the eventDetail fields bulk-data-client writes for it.
DETAIL_FIELDS = {
    "kickoff": {
        "exportUrl",
        "errorCode",
        "errorBody",
        "softwareName",
        "softwareVersion",
        "softwareReleaseDate",
        "fhirVersion",
        "requestParameters",
        "responseHeaders",
        "logVersion",
    },
    "status_progress": {"body", "xProgress", "retryAfter"},
    "status_error": {"body", "code", "message", "responseHeaders"},
    "status_page_complete": {
        "transactionTime",
        "outputFileCount",
        "deletedFileCount",
        "errorFileCount",
    },
    "manifest_complete": {
        "transactionTime",
        "totalOutputFileCount",
        "totalDeletedFileCount",
        "totalErrorFileCount",
        "totalManifests",
    },
    "status_complete": {"transactionTime"},
    "download_request": {"fileUrl", "itemType", "resourceType"},
    "download_complete": {"fileUrl", "fileSize", "resourceCount"},
    "download_error": {"body", "code", "fileUrl", "message", "responseHeaders"},
    "export_complete": {"files", "resources", "bytes", "attachments", "duration"},
    "client_error": {"error"},
}
PAGED = {"bulk_manifest_page_size": 3, "bulk_lines_per_file": 4}


def read_log(out: Path, bulk_env: BulkEnv) -> list[dict[str, Any]]:
    """The log's events, each checked against the format; no secret, no query string."""
    text = (out / "log.ndjson").read_text()
    assert text.endswith("\n")
    events = [json.loads(line) for line in text.splitlines()]
    for event in events:
        assert set(event) == LINE_FIELDS, event
        assert set(event["eventDetail"]) == DETAIL_FIELDS[event["eventId"]], event
        assert isinstance(event["timestamp"], str) and event["timestamp"][:2] == "20"
    assert "?" not in text  # no URL keeps its query string (signed URLs carry credentials)
    assert_no_token_in(text, bulk_env.sb, bulk_env.client_id)
    assert bulk_env.key.private_pem.split("\n")[1] not in text
    return events


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["eventId"] for e in events]


def milestones(events: list[dict[str, Any]]) -> list[str]:
    """The event names without status_progress (how many 202s come depends on the load)."""
    return [name for name in names(events) if name != "status_progress"]


def only(events: list[dict[str, Any]], event_id: str) -> list[dict[str, Any]]:
    return [e["eventDetail"] for e in events if e["eventId"] == event_id]


def test_a_paged_export_logs_every_step(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(**PAGED)
    out = bulk_env.tmp / "out"
    summary = export_op(
        out,
        since="2020-01-01T00:00:00Z",
        types="Patient,Observation",
        allow_partial_manifests=True,
    ).execute(task_context())
    events = read_log(out, bulk_env)
    order = milestones(events)
    assert order[0] == "kickoff" and order[-1] == "export_complete"
    assert order[1] == "status_complete"
    (kickoff,) = only(events, "kickoff")
    assert kickoff["exportUrl"] == f"{bulk_env.sb.fhir_base.rstrip('/')}/$export"
    assert kickoff["requestParameters"] == {
        "_since": "2020-01-01T00:00:00Z",
        "_type": "Patient,Observation",
        "allowPartialManifests": "true",
    }
    assert (kickoff["errorCode"], kickoff["logVersion"]) == (None, "2")
    paths = [out / "manifest.json", *sorted(out.glob("manifest.0*.json"))]  # page order
    manifests = [json.loads(p.read_text()) for p in paths]
    pages = only(events, "status_page_complete")
    assert len(pages) == len(manifests) > 1
    assert [p["outputFileCount"] for p in pages] == [len(m["output"]) for m in manifests]
    (complete,) = only(events, "manifest_complete")
    assert complete["totalManifests"] == len(manifests)
    assert complete["totalOutputFileCount"] == sum(len(m["output"]) for m in manifests)
    assert complete["totalDeletedFileCount"] == summary["deleted"]["files"]
    total = sum(complete[f"total{kind}FileCount"] for kind in ("Output", "Deleted", "Error"))
    assert total == summary["files"]
    assert complete["transactionTime"] == summary["transactionTime"]
    # Each file: one request, one completion, with the size and count of the stored file.
    requests = only(events, "download_request")
    completions = only(events, "download_complete")
    assert len(requests) == len(completions) == summary["files"]
    urls = [e["fileUrl"] for e in requests]
    assert len(set(urls)) == len(urls)
    assert {e["fileUrl"] for e in completions} == set(urls)
    kinds = Counter(e["itemType"] for e in requests)
    assert kinds["output"] == complete["totalOutputFileCount"]
    assert kinds["deleted"] == complete["totalDeletedFileCount"]
    resources = sum(t["count"] for t in summary["output"].values())
    assert sum(e["resourceCount"] for e in completions) == resources + summary["deleted"]["count"]
    assert sum(e["fileSize"] for e in completions) == summary["bytes"]
    (done,) = only(events, "export_complete")
    assert (done["files"], done["bytes"]) == (summary["files"], summary["bytes"])
    assert done["duration"] >= 0
    assert len({e["exportId"] for e in events}) == 1


def test_a_retried_export_appends_and_never_logs_a_second_kickoff(bulk_env: BulkEnv) -> None:
    """The first try dies downloading a file (the server keeps failing it); the retry
    continues the same export: its events follow the first try's, under one exportId."""
    bulk_env.sb.settings.update(bulk_lines_per_file=5)
    out = bulk_env.tmp / "out"

    def fail_one_file() -> None:
        deadline = time.time() + 10
        while time.time() < deadline and not (out / "manifest.json").exists():
            time.sleep(0.01)
        url = json.loads((out / "manifest.json").read_text())["output"][5]["url"]
        bulk_env.sb.faults.add(urlsplit(url).path, status=500, times=None)

    bulk_env.sb.faults.add("/fhir/_bulk/files", delay=0.3, times=1)  # time to break a file
    breaker = threading.Thread(target=fail_one_file)
    breaker.start()
    with pytest.raises(BulkExportError):
        export_op(out, parallel_downloads=1, download_retries=0, retries=2).execute(
            task_context(try_number=1, max_tries=2)
        )
    breaker.join()
    first = read_log(out, bulk_env)
    assert names(first)[0] == "kickoff"
    (failed,) = only(first, "download_error")
    assert "500" in failed["message"]
    assert names(first)[-1] == "client_error"  # why the try ended
    assert "export_complete" not in names(first)

    bulk_env.sb.faults.clear()
    summary = export_op(out, retries=2).execute(task_context(try_number=2, max_tries=2))
    events = read_log(out, bulk_env)
    assert events[: len(first)] == first  # appended, nothing rewritten
    assert names(events).count("kickoff") == 1
    assert names(events).count("export_complete") == 1
    assert len({e["exportId"] for e in events}) == 1
    completed = Counter(e["fileUrl"] for e in only(events, "download_complete"))
    assert len(completed) == summary["files"] and set(completed.values()) == {1}


def test_a_deferred_export_resumed_by_another_try_logs_one_kickoff(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=1.0)
    out = bulk_env.tmp / "out"
    with pytest.raises(TaskDeferred):
        export_op(out, deferrable=True).execute(task_context(try_number=1, max_tries=2))
    with pytest.raises(TaskDeferred) as second:
        export_op(out, deferrable=True).execute(task_context(try_number=2, max_tries=2))
    export_op(out, deferrable=True).execute_complete(
        task_context(try_number=2, max_tries=2), drive(second.value)
    )
    events = read_log(out, bulk_env)
    assert names(events).count("kickoff") == 1
    assert names(events)[-1] == "export_complete"


def test_mapped_downloads_write_their_own_parts_and_finalize_merges_them(
    bulk_env: BulkEnv,
) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=6)
    out = bulk_env.tmp / "out"
    files = export_op(out, download=False).execute(task_context())
    after_export = read_log(out, bulk_env)
    assert milestones(after_export)[:2] == ["kickoff", "status_complete"]
    store = BulkStateStore(out)
    key = job_key(dag_id="bulk_dag", task_id="export", run_id="run-1")
    # The mapped tasks run at once on different workers: each writes only its own part.
    results: list[Any] = []
    errors: list[BaseException] = []

    def download(index: int, spec: dict[str, Any]) -> None:
        try:
            results.append(
                download_op(out, file=spec).execute(
                    task_context(task_id="download", map_index=index)
                )
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=download, args=(i, f)) for i, f in enumerate(files)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert read_log(out, bulk_env) == after_export  # the log itself is the export task's
    assert len(store.log_parts(key)) == len(files)

    summary = finalize_op(out).execute(task_context(task_id="finalize"))
    events = read_log(out, bulk_env)
    assert events[: len(after_export)] == after_export
    assert len(only(events, "download_request")) == len(files) == summary["files"]
    assert len(only(events, "download_complete")) == len(files)
    assert names(events)[-1] == "export_complete"
    assert store.log_parts(key) == []  # merged, then deleted
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)


def test_merging_a_part_twice_adds_nothing(tmp_path: Path) -> None:
    """A finalize retried after it wrote the log but before it deleted the parts."""
    main = ExportLog(tmp_path / "log.ndjson", "abc")
    main.kickoff("https://h/fhir/$export?_type=Patient", {"_type": "Patient"})
    main.flush()
    part = ExportLog(tmp_path / "part.ndjson", "abc")
    part.download_request("https://files/x.ndjson?sig=SECRET", "output", "Patient")
    part.download_complete("https://files/x.ndjson?sig=SECRET", 10, 1)
    part.flush()
    kept = (tmp_path / "part.ndjson").read_bytes()
    assert main.merge_parts([tmp_path / "part.ndjson"]) == 2
    (tmp_path / "part.ndjson").write_bytes(kept)  # the deletion did not happen
    assert main.merge_parts([tmp_path / "part.ndjson"]) == 0
    text = (tmp_path / "log.ndjson").read_text()
    assert len(text.splitlines()) == 3
    assert "SECRET" not in text and "?" not in text


def test_a_refused_kickoff_is_logged_with_its_status(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/$export", status=400, issue_code="invalid", body="bad _type", times=1
    )
    out = bulk_env.tmp / "out"
    with pytest.raises(Exception, match="bad _type"):
        export_op(out).execute(task_context())
    (event,) = read_log(out, bulk_env)
    assert event["eventId"] == "kickoff"
    assert event["eventDetail"]["errorCode"] == 400
    assert "bad _type" in event["eventDetail"]["errorBody"]


# Three 202 answers, then the manifest, whatever the machine's load (the job completes on
# the 4th poll); bulk-data-client logs one status_progress per 202, in order.
THREE_PENDING = {"bulk_job_seconds": 0.0, "bulk_complete_after_polls": 4}
# C0 (ESC), DEL, C1 (CSI) and a token. A CR or
# LF never reaches the client: the HTTP layer refuses such an answer (a transient error).
HOSTILE_PROGRESS = "\x1b[2J\x1b[31m{percent}%\x7fFAKE LINE\x9b0m access_token=s3cr3t"


def _assert_progress(events: list[dict[str, Any]], percents: list[str]) -> list[str]:
    """The status_progress events: between kick-off and status_complete, one per 202, in
    order, with bulk-data-client's fields; returns their xProgress texts."""
    order = names(events)
    first, last = (
        order.index("status_progress"),
        len(order) - 1 - order[::-1].index("status_progress"),
    )
    assert order.index("kickoff") < first and last < order.index("status_complete")
    progress = only(events, "status_progress")
    assert len(progress) == len(percents)
    stamps = [e["timestamp"] for e in events if e["eventId"] == "status_progress"]
    assert stamps == sorted(stamps)
    for detail, percent in zip(progress, percents, strict=True):
        assert detail["body"] is None
        assert float(detail["retryAfter"]) >= 1  # the sandbox's Retry-After: 1
        assert percent in detail["xProgress"]
    return [str(d["xProgress"]) for d in progress]


def _assert_escaped(texts: list[str]) -> None:
    for text in texts:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text), text
        assert "s3cr3t" not in text
        assert "FAKE LINE" in text  # escaped, not dropped


def test_a_worker_wait_logs_each_202_as_status_progress(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(**THREE_PENDING)
    out = bulk_env.tmp / "out"
    export_op(out).execute(task_context())
    texts = _assert_progress(read_log(out, bulk_env), ["25%", "50%", "75%"])
    assert texts == [f"in-progress: {p}% exported" for p in (25, 50, 75)]


def test_a_worker_wait_escapes_a_hostile_x_progress(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(**THREE_PENDING, bulk_progress_text=HOSTILE_PROGRESS)
    out = bulk_env.tmp / "out"
    export_op(out).execute(task_context())
    texts = _assert_progress(read_log(out, bulk_env), ["25", "50", "75"])
    _assert_escaped(texts)
    assert "\\x1b[31m" in texts[0] and "\\x7f" in texts[0].lower()


def test_a_deferred_wait_carries_its_202s_to_the_log(bulk_env: BulkEnv) -> None:
    """The triggerer writes no log: the event carries the 202s, execute_complete logs them."""
    bulk_env.sb.settings.update(**THREE_PENDING)
    out = bulk_env.tmp / "out"
    with pytest.raises(TaskDeferred) as deferred:
        export_op(out, deferrable=True).execute(task_context())
    assert "status_progress" not in names(read_log(out, bulk_env))
    event = drive(deferred.value)
    assert event["progress_trail"]["count"] == 3
    export_op(out, deferrable=True).execute_complete(task_context(), event)
    texts = _assert_progress(read_log(out, bulk_env), ["25%", "50%", "75%"])
    assert texts == [f"in-progress: {p}% exported" for p in (25, 50, 75)]


def test_a_deferred_wait_escapes_a_hostile_x_progress(bulk_env: BulkEnv) -> None:
    # The trigger's HTTP/1.1 parser refuses C0 controls in a header: C1 and the URL remain.
    bulk_env.sb.settings.update(
        **THREE_PENDING, bulk_progress_text="\x9b31m{percent}% FAKE LINE access_token=s3cr3t"
    )
    out = bulk_env.tmp / "out"
    with pytest.raises(TaskDeferred) as deferred:
        export_op(out, deferrable=True).execute(task_context())
    event = drive(deferred.value)
    assert "s3cr3t" not in json.dumps(event)
    export_op(out, deferrable=True).execute_complete(task_context(), event)
    texts = _assert_progress(read_log(out, bulk_env), ["25", "50", "75"])
    _assert_escaped(texts)
    assert "\\x9b31m" in texts[0]


def test_progress_events_wait_for_a_milestone_not_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-day wait polls thousands of times: its status_progress events are written
    with the next milestone (or FLUSH_EVERY events), never one rewrite per poll."""
    from airflow_provider_backendauth.core.bulk import exportlog

    monkeypatch.setattr(exportlog, "FLUSH_SECONDS", 0.0)  # every event is "late"
    elog = ExportLog(tmp_path / "log.ndjson", "abc")
    for percent in range(10):
        elog.status_progress(f"{percent}%\x1b[0m", 1.0, at=1_700_000_000.0 + percent)
    assert not (tmp_path / "log.ndjson").exists()
    elog.status_complete("2026-01-01T00:00:00Z")  # a milestone: written now, in order
    lines = [json.loads(x) for x in (tmp_path / "log.ndjson").read_text().splitlines()]
    assert [x["eventId"] for x in lines] == ["status_progress"] * 10 + ["status_complete"]
    assert lines[0]["timestamp"] == "2023-11-14T22:13:20.000+00:00"  # when it was observed
    assert lines[3]["eventDetail"] == {"body": None, "xProgress": "3%\\x1b[0m", "retryAfter": "1"}


MAX_WAIT = 6.0


def test_a_deferred_wait_that_times_out_logs_its_202s_before_the_error(
    bulk_env: BulkEnv,
) -> None:
    """The trail rides the failure event too: the log shows the 202s, then why it failed."""
    bulk_env.sb.settings.update(bulk_job_seconds=0.0, bulk_complete_after_polls=10_000)
    out = bulk_env.tmp / "out"
    # The first poll follows the kick-off at once (fast test polling); max_wait leaves it
    # several seconds even on a machine under CPU load, at the cost of a longer wait here.
    with pytest.raises(TaskDeferred) as deferred:
        export_op(out, deferrable=True, max_wait=MAX_WAIT).execute(task_context())
    event = drive(deferred.value)
    assert event["status"] == "timeout" and event["progress_trail"]["count"] >= 1
    with pytest.raises(BulkExportError, match="max_wait"):
        export_op(out, deferrable=True, max_wait=MAX_WAIT).execute_complete(task_context(), event)
    events = read_log(out, bulk_env)
    assert milestones(events) == ["kickoff", "status_error"]
    assert names(events)[-1] == "status_error"
    progress = only(events, "status_progress")
    assert len(progress) == event["progress_trail"]["count"]
    assert all(p["xProgress"] == "in-progress: 0% exported" for p in progress)


def test_a_202_while_fetching_a_manifest_page_is_a_status_progress(bulk_env: BulkEnv) -> None:
    """bulk-data-client follows a page's ``next`` link with the same status polling, and
    logs its 202s too: here the page after the first answers 202 once."""
    bulk_env.sb.settings.update(**PAGED, bulk_job_seconds=0.0)
    out = bulk_env.tmp / "out"
    op = export_op(out, deferrable=True, allow_partial_manifests=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(task_context())
    event = drive(deferred.value)  # the first page, inline
    # How many 202s the job answers before it completes depends on the load: none is asserted.
    assert event["manifest"]
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs", status=202, retry_after=1, headers={"X-Progress": "page pending"}
    )
    export_op(out, deferrable=True, allow_partial_manifests=True).execute_complete(
        task_context(), event
    )
    events = read_log(out, bulk_env)
    order = [
        e["eventId"] if e["eventDetail"].get("xProgress") != "page pending" else "page_202"
        for e in events
    ]
    page_202s = [e for e in only(events, "status_progress") if e["xProgress"] == "page pending"]
    assert page_202s == [{"body": None, "xProgress": "page pending", "retryAfter": "1"}]
    assert order.index("status_complete") < order.index("page_202")
    assert order.index("page_202") < order.index("manifest_complete")
