"""Kick-off, status polling and cancellation over HTTP against the sandbox."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.client import BulkExportClient
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.poller import JITTER
from airflow_provider_backendauth.core.bulk.protocol import Failed
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.errors import BulkExportError
from tests.support.bulkkit import BulkEnv, fast_poll

pytest_plugins = ("tests.support.bulk_fixtures",)

ALL_TYPES = {"Patient", "Observation", "Condition", "Encounter"}


def client(bulk_env: BulkEnv, **options: Any) -> BulkExportClient:
    return BulkExportClient(
        bulk_env.auth_client().authorized_sessions(),
        bulk_env.sb.fhir_base,
        poll_settings=fast_poll(**options),
    )


def recording_sleeps(c: BulkExportClient) -> list[float]:
    """Make ``c`` record every wait it asks for (and still wait)."""
    delays: list[float] = []
    original = c._sleep

    def sleep(seconds: float, why: str) -> None:
        delays.append(seconds)
        original(seconds, why)

    c._sleep = sleep  # type: ignore[method-assign]
    return delays


def run_export(c: BulkExportClient, request: BulkExportRequest) -> BulkManifest:
    return c.wait(c.kickoff(request))


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("level", "group_id", "path"),
    [
        ("system", None, "/fhir/$export"),
        ("patient", None, "/fhir/Patient/$export"),
        ("group", "g1", "/fhir/Group/g1/$export"),
    ],
)
def test_kickoff_at_every_level(
    bulk_env: BulkEnv, level: str, group_id: str | None, path: str, method: str
) -> None:
    manifest = run_export(
        client(bulk_env), BulkExportRequest.create(level, group_id=group_id, method=method)
    )
    assert bulk_env.sb.stats["requests_by_path"][path] == 1
    assert bulk_env.sb.stats["bulk_kickoffs"] == 1
    types = {entry.type for entry in manifest.output}
    assert types == ALL_TYPES
    assert manifest.transaction_time
    assert manifest.requires_access_token is True
    patients = next(e for e in manifest.output if e.type == "Patient")
    assert patients.count == (10 if level == "group" else 20)


def test_parameters_reach_the_server(bulk_env: BulkEnv) -> None:
    c = client(bulk_env)
    only_patients = run_export(c, BulkExportRequest.create("system", types="Patient"))
    assert [e.type for e in only_patients.output] == ["Patient"]
    assert only_patients.deleted == ()

    two = run_export(
        c,
        BulkExportRequest.create(
            "patient",
            patients=_two_patient_ids(bulk_env),
            types="Patient,Observation",
            elements="id",
        ),
    )
    assert next(e for e in two.output if e.type == "Patient").count == 2

    filtered = run_export(
        c,
        BulkExportRequest.create(
            "system",
            types="Observation",
            type_filters=["Observation?_lastUpdated=ge2024-07-01"],
            since="2024-03-01T00:00:00Z",
            until="2024-12-31T00:00:00Z",
            include_associated_data="LatestProvenanceResources",
            output_format="application/fhir+ndjson",
        ),
    )
    unfiltered = run_export(c, BulkExportRequest.create("system", types="Observation"))
    count = next(e for e in filtered.output if e.type == "Observation").count or 0
    total = next(e for e in unfiltered.output if e.type == "Observation").count or 0
    assert 0 < count < total
    assert filtered.raw.get("deleted") is not None  # _since asks for deleted[]


def _two_patient_ids(bulk_env: BulkEnv) -> list[str]:
    import requests

    token = bulk_env.sb.issue_token(bulk_env.client_id)
    bundle = requests.get(
        f"{bulk_env.sb.fhir_base}/Patient",
        params={"_count": 2},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        timeout=10,
    ).json()
    return [entry["resource"]["id"] for entry in bundle["entry"]]


def test_kickoff_error_quotes_the_server(bulk_env: BulkEnv) -> None:
    with pytest.raises(BulkExportError, match="_type: 'Spaceship' is not supported") as info:
        client(bulk_env).kickoff(BulkExportRequest.create("system", types="Spaceship"))
    assert info.value.status_code == 400


def test_unknown_group_fails(bulk_env: BulkEnv) -> None:
    with pytest.raises(BulkExportError, match="Group/nope does not exist"):
        client(bulk_env).kickoff(BulkExportRequest.create("group", group_id="nope"))


@pytest.mark.e2e  # slow: waits out real Retry-After values
def test_retry_after_seconds_are_honoured_within_bounds(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=1.0, bulk_retry_after=0.4)
    c = client(bulk_env, poll_interval_min=0.05, poll_interval_max=5.0)
    delays = recording_sleeps(c)
    run_export(c, BulkExportRequest.create("system", types="Patient"))
    assert delays and all(0.4 <= d <= 0.4 * (1 + JITTER) for d in delays)

    bulk_env.sb.settings.update(bulk_retry_after=30)
    c = client(bulk_env, poll_interval_min=0.05, poll_interval_max=0.25)
    delays = recording_sleeps(c)
    run_export(c, BulkExportRequest.create("system", types="Patient"))
    assert delays and all(0.25 <= d <= 0.25 * (1 + JITTER) for d in delays)  # capped

    bulk_env.sb.settings.update(bulk_retry_after=0)
    c = client(bulk_env, poll_interval_min=0.1, poll_interval_max=1.0)
    delays = recording_sleeps(c)
    run_export(c, BulkExportRequest.create("system", types="Patient"))
    # Floored: below RETRY_AFTER_FLOOR only because poll_interval_min is set below it.
    assert delays and all(0.1 <= d <= 0.1 * (1 + JITTER) for d in delays)


@pytest.mark.e2e  # slow: waits out real Retry-After values
def test_retry_after_as_http_date(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(
        bulk_job_seconds=1.0, bulk_retry_after=2, bulk_retry_after_http_date=True
    )
    c = client(bulk_env, poll_interval_min=0.05, poll_interval_max=10.0)
    delays = recording_sleeps(c)
    started = time.monotonic()
    run_export(c, BulkExportRequest.create("system", types="Patient"))
    # An HTTP-date has 1 s resolution: "in 2 s" means 1 to 2 s from now, never NaN or 0.
    assert delays and all(0.9 <= d <= 2.1 * (1 + JITTER) for d in delays)
    assert time.monotonic() - started >= 0.9


def test_progress_is_logged(bulk_env: BulkEnv, caplog: pytest.LogCaptureFixture) -> None:
    # Still running for the first two polls whatever the machine's load: no timing race.
    bulk_env.sb.settings.update(bulk_job_seconds=0, bulk_complete_after_polls=3)
    c = client(bulk_env)
    with caplog.at_level(logging.INFO, logger="airflow_provider_backendauth.core.bulk.client"):
        c.wait(c.kickoff(BulkExportRequest.create("system")))
    progress = [r.getMessage() for r in caplog.records if "Export in progress: " in r.getMessage()]
    assert progress and "exported" in progress[0]


def test_polling_too_often_is_a_wait(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", status=429, retry_after=0.1, times=3)
    c = client(bulk_env, max_transient_errors=0)
    manifest = run_export(c, BulkExportRequest.create("system", types="Patient"))
    assert manifest.output
    assert bulk_env.sb.stats["responses_by_status"]["429"] == 3


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "issue_code": "transient"},
        {"status": 400, "issue_code": "transient"},
        {"status": 503, "body_kind": "empty"},
        {"status": 502, "body_kind": "text", "body": "Bad gateway"},
        {"drop": True},
    ],
    ids=["500-transient", "400-transient", "503-empty", "502-text", "dropped"],
)
def test_transient_poll_errors_are_retried(bulk_env: BulkEnv, fault: dict[str, Any]) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", times=2, **fault)
    manifest = run_export(
        client(bulk_env, max_transient_errors=2), BulkExportRequest.create("system")
    )
    assert manifest.output
    assert bulk_env.sb.stats["faults_applied"] == 2


def test_transient_errors_have_a_budget(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs",
        method="GET",
        status=503,
        times=None,
        issue_code="transient",
        body="try later",
    )
    with pytest.raises(BulkExportError, match="gave up after 3 consecutive errors") as info:
        run_export(client(bulk_env, max_transient_errors=2), BulkExportRequest.create("system"))
    assert info.value.transient
    assert "try later" in str(info.value)


def test_fatal_outcome_fails_quoting_diagnostics(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs",
        method="GET",
        status=500,
        issue_code="exception",
        severity="fatal",
        body="the export database is corrupt",
        times=None,
    )
    with pytest.raises(BulkExportError, match="the export database is corrupt") as info:
        run_export(client(bulk_env), BulkExportRequest.create("system"))
    assert info.value.status_code == 500
    assert not info.value.transient


@pytest.mark.e2e  # slow: waits out real Retry-After values
def test_kickoff_429_waits_for_the_running_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_reject_concurrent=True, bulk_job_seconds=0.8)
    c = client(bulk_env, kickoff_busy_budget=10, poll_interval_max=0.3)
    first = c.kickoff(BulkExportRequest.create("system", types="Patient"))
    started = time.monotonic()
    second = c.kickoff(BulkExportRequest.create("system", types="Condition"))
    assert second != first
    assert time.monotonic() - started >= 0.3
    stats = bulk_env.sb.stats
    assert stats["bulk_rejected_concurrent"] >= 1
    assert stats["bulk_kickoffs"] == 2
    assert c.wait(second).output


def test_kickoff_429_with_a_unix_time_retry_after_waits_within_the_budget(
    bulk_env: BulkEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 10 #3: "Retry-After: 1796160426" was read as 57 years, clamped to
    # poll_interval_max (1 h) and compared with the budget: the kick-off failed at once.
    bulk_env.sb.settings.update(
        bulk_reject_concurrent=True, bulk_job_seconds=1.0, bulk_retry_after_epoch=True
    )
    c = client(bulk_env, kickoff_busy_budget=30, poll_interval_max=3600)
    first = c.kickoff(BulkExportRequest.create("system", types="Patient"))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="airflow_provider_backendauth.core.bulk.client"):
        second = c.kickoff(BulkExportRequest.create("system", types="Condition"))
    assert second != first
    assert time.monotonic() - started < 10
    assert bulk_env.sb.stats["bulk_rejected_concurrent"] >= 1
    waits = [r.getMessage() for r in caplog.records if "Server busy (429)" in r.getMessage()]
    assert waits and "kickoff_busy_budget left" in waits[0]
    assert c.wait(second).output


def test_kickoff_429_budget(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_reject_concurrent=True, bulk_job_seconds=30)
    c = client(bulk_env, kickoff_busy_budget=0.5)
    status_url = c.kickoff(BulkExportRequest.create("system"))
    try:
        with pytest.raises(BulkExportError, match="kickoff_busy_budget") as info:
            c.kickoff(BulkExportRequest.create("system"))
        assert info.value.status_code == 429
        # The real numbers: how often, for how long, and what the server asked for.
        message = str(info.value)
        assert "times over" in message and "Retry-After asked for" in message
    finally:
        assert c.cancel(status_url)


def test_kickoff_5xx_is_retried(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add("/fhir/$export", status=503, times=1, retry_after=0.05)
    assert run_export(client(bulk_env), BulkExportRequest.create("system")).output
    assert bulk_env.sb.stats["bulk_kickoffs"] == 1


def test_cancel_then_status_is_404(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    c = client(bulk_env)
    status_url = c.kickoff(BulkExportRequest.create("system"))
    assert c.cancel(status_url)
    assert bulk_env.sb.stats["bulk_cancels"] == 1
    result = c.poll(status_url)
    assert isinstance(result, Failed)
    assert result.status_code == 404
    assert c.cancel(status_url)  # already gone counts as done


def test_status_401_renews_the_token(bulk_env: BulkEnv) -> None:
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", expire_tokens=True, times=1)
    manifest = run_export(client(bulk_env), BulkExportRequest.create("system", types="Patient"))
    assert manifest.output
    stats = bulk_env.sb.stats
    assert stats["unauthorized"] == 1
    assert stats["token_requests"] == 2


def test_far_future_retry_after_on_a_status_429_fails_at_once(bulk_env: BulkEnv) -> None:
    # Issue 10 #4: the far-future value was clamped to poll_interval_max and polled again,
    # 429 after 429, without backoff and without a word until max_wait ran out.
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    c = client(bulk_env, poll_interval_max=0.2)
    status_url = c.kickoff(BulkExportRequest.create("system"))
    later = str(int(time.time()) + 7200)  # a Unix time, as servers in the wild send
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs", method="GET", status=429, headers={"Retry-After": later}, times=None
    )
    started = time.monotonic()
    try:
        with pytest.raises(BulkExportError, match=r"asked to wait 2\.0 h") as info:
            c.wait(status_url, deadline=time.time() + 30)
        assert time.monotonic() - started < 5
        assert bulk_env.sb.stats["responses_by_status"]["429"] == 1
        assert "left before the export's deadline" in str(info.value)
    finally:
        bulk_env.sb.faults.clear()
        c.cancel(status_url)


def test_long_retry_after_on_a_202_is_said_not_silently_cut(
    bulk_env: BulkEnv, caplog: pytest.LogCaptureFixture
) -> None:
    bulk_env.sb.settings.update(
        bulk_job_seconds=0, bulk_complete_after_polls=2, bulk_retry_after=30
    )
    c = client(bulk_env, poll_interval_max=0.1)
    with caplog.at_level(logging.INFO, logger="airflow_provider_backendauth.core.bulk.client"):
        assert run_export(c, BulkExportRequest.create("system", types="Patient")).output
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "asked to poll again in 30.0 s (Retry-After); polling in 0.1 s instead" in said


def test_deadline(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    c = client(bulk_env)
    status_url = c.kickoff(BulkExportRequest.create("system"))
    with pytest.raises(BulkExportError, match="max_wait"):
        c.wait(status_url, deadline=time.time() + 0.3)
    c.cancel(status_url)


def test_stop_event_ends_the_wait(bulk_env: BulkEnv) -> None:
    import threading

    bulk_env.sb.settings.update(bulk_job_seconds=30)
    c = client(bulk_env, poll_interval_min=5, poll_interval_max=5)
    status_url = c.kickoff(BulkExportRequest.create("system"))
    threading.Timer(0.2, c.stop.set).start()
    started = time.monotonic()
    with pytest.raises(BulkExportError, match="Stopped"):
        c.wait(status_url)
    assert time.monotonic() - started < 2
    c.stop.clear()
    c.cancel(status_url)


def test_kickoff_429_asking_beyond_the_budget_fails_at_once(bulk_env: BulkEnv) -> None:
    # Before: the wait was cut to the budget and slept whole (300 s by default), only to
    # fail afterwards. The server said when it would be ready; that is after the budget.
    bulk_env.sb.faults.add("/fhir/$export", status=429, retry_after=3600, times=None)
    now = [0.0]
    c = BulkExportClient(
        bulk_env.auth_client().authorized_sessions(),
        bulk_env.sb.fhir_base,
        poll_settings=fast_poll(kickoff_busy_budget=300),
        clock=lambda: now[0],
    )
    slept: list[float] = []

    def sleep(seconds: float, why: str) -> None:  # no real wait: the clock moves instead
        slept.append(seconds)
        now[0] += seconds

    c._sleep = sleep  # type: ignore[method-assign]
    with pytest.raises(BulkExportError, match="kickoff_busy_budget") as info:
        c.kickoff(BulkExportRequest.create("system"))
    assert slept == []
    assert info.value.status_code == 429 and info.value.retryable
    assert "asked for 60.0 min" in str(info.value)  # what the server asked for
