"""``BulkExportTrigger``: serialisation, and ``run()`` driven to its event in an asyncio loop
against the sandbox (faults, token expiry, timeouts, on_kill, a never-blocked loop)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import json
import logging
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.bulk.client import BulkExportClient
from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.triggers.bulk import TRIGGERER_CALLS_ON_KILL, BulkExportTrigger
from backendauth_sandbox import Sandbox
from tests.support.bulkkit import CONN_ID, BulkEnv, assert_no_token_in, fast_poll

pytest_plugins = ("tests.support.bulk_fixtures",)


DEFAULT_EXECUTOR_THREADS = 4  # the loop's shared executor in the isolation test


def kickoff(bulk_env: BulkEnv, **request: Any) -> str:
    client = BulkExportClient(bulk_env.auth_client().authorized_sessions(), bulk_env.sb.fhir_base)
    return client.kickoff(BulkExportRequest.create(request.pop("level", "system"), **request))


POLL_FIELDS = {f.name for f in dataclasses.fields(PollSettings)}


def trigger(status_url: str, **options: Any) -> BulkExportTrigger:
    """A trigger polling fast; ``options`` may mix ``PollSettings`` fields and arguments."""
    poll = {name: options.pop(name) for name in list(options) if name in POLL_FIELDS}
    return BulkExportTrigger(CONN_ID, status_url, poll_settings=fast_poll(**poll), **options)


async def first_event(t: BulkExportTrigger, timeout: float = 20) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async for event in t.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(go(), timeout)


def run_trigger(t: BulkExportTrigger) -> dict[str, Any]:
    return asyncio.run(first_event(t))


def test_serialize_round_trip() -> None:
    original = BulkExportTrigger(
        "conn",
        "https://fhir.example/status/1",
        poll_settings=PollSettings(
            poll_interval_min=1.5, poll_interval_max=600, max_transient_errors=3
        ),
        deadline=1_900_000_000.0,
        cancel_on_kill=False,
        inline_manifest_bytes=1000,
    )
    classpath, kwargs = original.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls is BulkExportTrigger
    json.dumps(kwargs)  # stored in the metadata DB
    rebuilt = cls(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert "token" not in json.dumps(kwargs).lower()


def test_run_to_completion(bulk_env: BulkEnv) -> None:
    status_url = kickoff(bulk_env, level="group", group_id="g1")
    payload = run_trigger(trigger(status_url))
    assert payload["status"] == "complete"
    assert payload["status_url"] == status_url
    manifest = payload["manifest"]
    assert {o["type"] for o in manifest["output"]} == {
        "Patient",
        "Observation",
        "Condition",
        "Encounter",
    }
    assert_no_token_in(json.dumps(payload), bulk_env.sb, bulk_env.client_id)


def test_large_manifest_is_not_inlined(bulk_env: BulkEnv) -> None:
    payload = run_trigger(trigger(kickoff(bulk_env), inline_manifest_bytes=10))
    assert payload["status"] == "complete"
    assert payload["manifest"] is None


def test_expired_token_is_renewed(bulk_env: BulkEnv) -> None:
    status_url = kickoff(bulk_env)
    bulk_env.sb.reset_stats()
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", expire_tokens=True, times=1)
    assert run_trigger(trigger(status_url))["status"] == "complete"
    stats = bulk_env.sb.stats
    assert stats["unauthorized"] == 1
    assert stats["token_requests"] == 1  # the trigger's own, after the 401 (cache renewed)
    assert stats["bulk_status_polls"] >= 1


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "issue_code": "transient"},
        {"status": 503, "body_kind": "empty"},
        {"status": 429, "retry_after": 0.05},
        {"drop": True},
    ],
    ids=["transient", "503", "429", "dropped"],
)
def test_transient_answers_are_waited_out(bulk_env: BulkEnv, fault: dict[str, Any]) -> None:
    status_url = kickoff(bulk_env)
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", times=2, **fault)
    assert run_trigger(trigger(status_url, max_transient_errors=2))["status"] == "complete"
    assert bulk_env.sb.stats["faults_applied"] == 2


def test_fatal_outcome_is_an_error_event(bulk_env: BulkEnv) -> None:
    status_url = kickoff(bulk_env)
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs",
        method="GET",
        status=500,
        issue_code="exception",
        severity="fatal",
        body="ran out of disk",
        times=None,
    )
    payload = run_trigger(trigger(status_url))
    assert payload["status"] == "error"
    assert "ran out of disk" in payload["message"]
    assert payload["status_code"] == 500


def test_transient_budget(bulk_env: BulkEnv) -> None:
    status_url = kickoff(bulk_env)
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", method="GET", status=503, times=None)
    payload = run_trigger(trigger(status_url, max_transient_errors=2))
    assert payload["status"] == "error"
    assert "gave up after 3" in payload["message"]


def test_deadline_gives_a_timeout_event(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    status_url = kickoff(bulk_env)
    payload = run_trigger(trigger(status_url, deadline=time.time() + 0.3))
    assert payload["status"] == "timeout"
    assert "max_wait" in payload["message"]


@pytest.mark.e2e  # slow: waits out real Retry-After values
def test_http_date_retry_after(bulk_env: BulkEnv) -> None:
    # Complete on the third poll, whatever the clock says: the poll count is then a fact of
    # the protocol, not of how fast a loaded machine reached the first poll.
    bulk_env.sb.settings.update(
        bulk_job_seconds=0,
        bulk_complete_after_polls=3,
        bulk_retry_after=1,
        bulk_retry_after_http_date=True,
    )
    status_url = kickoff(bulk_env)
    started = time.monotonic()
    payload = run_trigger(trigger(status_url, poll_interval_min=0.01, poll_interval_max=30))
    assert payload["status"] == "complete"
    polls = bulk_env.sb.stats["bulk_status_polls"]
    # Honouring "Retry-After: <date 1 s ahead>" means about one poll per second, not a flood.
    assert polls <= 1 + (time.monotonic() - started) / 0.5
    assert polls == 3


def test_far_future_retry_after_is_a_timeout_event_at_once(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    status_url = kickoff(bulk_env)
    later = str(int(time.time()) + 7200)
    bulk_env.sb.faults.add(
        "/fhir/_bulk/jobs", method="GET", status=429, headers={"Retry-After": later}, times=None
    )
    started = time.monotonic()
    payload = run_trigger(trigger(status_url, deadline=time.time() + 60))
    assert time.monotonic() - started < 5
    assert payload["status"] == "timeout"
    assert "asked to wait 2.0 h" in payload["message"]
    bulk_env.sb.faults.clear()
    BulkExportClient(bulk_env.auth_client().authorized_sessions(), bulk_env.sb.fhir_base).cancel(
        status_url
    )


def test_unknown_status_url_is_an_error_event(bulk_env: BulkEnv) -> None:
    payload = run_trigger(trigger(f"{bulk_env.sb.fhir_base}/_bulk/jobs/nope"))
    assert payload["status"] == "error"
    assert payload["status_code"] == 404


class _RecordingLog:
    """Stands in for the trigger's structlog logger; keeps each formatted message."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, message: str, *args: Any, **_: Any) -> None:
        self.lines.append(message % args if args else message)

    def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        self._keep(message, *args, **kwargs)

    debug = info = warning = error = exception = _keep


def test_progress_is_logged(
    bulk_env: BulkEnv, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # The job answers 202 to the first two polls whatever the load: under CPU pressure a
    # 0.5 s job used to finish before the first poll, and no progress was ever seen.
    bulk_env.sb.settings.update(bulk_job_seconds=0, bulk_complete_after_polls=3)
    status_url = kickoff(bulk_env)
    observed = trigger(status_url)
    # Record what the trigger logs through its own logger (in a deployment: the triggerer's
    # log). Reading stdout instead depends on how earlier tests left structlog configured.
    recorder = _RecordingLog()
    observed._log = recorder
    with caplog.at_level(logging.INFO):
        run_trigger(observed)
    logged = (
        "\n".join(recorder.lines)
        + capfd.readouterr().out
        + "\n".join(r.getMessage() for r in caplog.records)
    )
    assert "Export in progress: in-progress:" in logged
    assert "Bearer" not in logged
    assert_no_token_in(logged, bulk_env.sb, bulk_env.client_id)


def test_the_event_loop_is_never_blocked(bulk_env: BulkEnv) -> None:
    """A slow token endpoint and slow status answers must not stall other coroutines."""
    status_url = kickoff(bulk_env)
    # Each slow answer takes 3 s: a blocking call would stall the loop for at least that long,
    # twice the 1.5 s allowed below for scheduling noise (0.6 s was seen at load average 16
    # on a 2-core machine). The margin is asymmetric on purpose: noise cannot reach 3 s of
    # a stall that is not there, and a real stall cannot hide below 1.5 s.
    bulk_env.sb.faults.add("/auth/token", delay=3.0, times=None)
    bulk_env.sb.faults.add("/fhir/_bulk/jobs", delay=3.0, times=None)

    async def scenario() -> tuple[dict[str, Any], float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        payload = await first_event(trigger(status_url))
        done.set()
        await tick
        return payload, max(gaps)

    # A full garbage collection late in a long test session can pause any loop for 0.2 s;
    # that is not what this test is about.
    gc.collect()
    gc.disable()
    try:
        payload, worst = asyncio.run(scenario())
    finally:
        gc.enable()
    assert payload["status"] == "complete"
    assert worst < 1.5, f"the event loop stalled for {worst:.2f} s"


def test_a_held_token_endpoint_never_delays_another_connections_exports(
    bulk_env: BulkEnv,
) -> None:
    # Connection A (bulk_env's sandbox): exports that stay pending, tokens expired, token
    # endpoint held. Its triggers all need a new token and cannot get one. The loop's default
    # executor (what a triggerer shares with every provider's triggers) is given fewer
    # threads than A has triggers, so if renewal ran there A would hold every one of them.
    # Connection B (a second sandbox) must still run to completion meanwhile. Progress is
    # judged by the sandbox's counters, never by elapsed time.
    a = bulk_env.sb
    a.settings.update(bulk_job_seconds=3600)
    a_urls = [kickoff(bulk_env) for _ in range(DEFAULT_EXECUTOR_THREADS + 2)]
    with Sandbox(patients=5, seed=3, bulk_job_seconds=0.2) as b:
        b.register_client("conn-b", bulk_env.key.public_jwks, vendor="smart")
        bulk_env.monkeypatch.setenv(
            "AIRFLOW_CONN_FHIR_BULK_B",
            json.dumps(
                {
                    "conn_type": "backendauth",
                    "host": b.fhir_base,
                    "login": "conn-b",
                    "password": bulk_env.key.private_pem,
                    "extra": {"scope": "system/*.rs"},
                }
            ),
        )
        b_client = BulkExportClient(
            BackendAuthClient(
                ClientSettings.from_connection_fields(
                    host=b.fhir_base,
                    login="conn-b",
                    password=bulk_env.key.private_pem,
                    extra={"scope": "system/*.rs"},
                )
            ).authorized_sessions(),
            b.fhir_base,
        )
        b_url = b_client.kickoff(BulkExportRequest.create("system"))
        held = a.faults.add("/auth/token", hold_after_bytes=0, times=None)
        a.expire_tokens()
        a.reset_stats()

        before = {t.ident for t in threading.enumerate()}

        def renewal_threads() -> int:
            return sum(
                1
                for t in threading.enumerate()
                if t.ident not in before and t.name.startswith("backendauth-token-renewal")
            )

        async def scenario() -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ThreadPoolExecutor(DEFAULT_EXECUTOR_THREADS))
            a_tasks = [loop.create_task(first_event(trigger(url), timeout=600)) for url in a_urls]
            try:
                # A's token request is being held: from here on every A trigger that polls
                # needs a token and waits for it (without the fix, in a thread of the
                # default executor: the first on the fetch, the others on the cache's lock).
                while a.stats["responses_held"] < 1:
                    await asyncio.sleep(0.01)
                b_trigger = BulkExportTrigger("fhir_bulk_b", b_url, poll_settings=fast_poll())
                event = await first_event(b_trigger, timeout=60)
                # One renewal thread per connection, however many triggers and requests.
                assert renewal_threads() <= 2
                return event
            finally:
                a.faults.release(held)
                for task in a_tasks:
                    task.cancel()
                await asyncio.gather(*a_tasks, return_exceptions=True)

        payload = asyncio.run(scenario())
        assert payload["status"] == "complete"
        assert a.stats["token_requests"] == 1  # A's triggers renewed once, together


def test_on_kill_deletes_the_export(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    status_url = kickoff(bulk_env)
    asyncio.run(trigger(status_url).on_kill())
    assert bulk_env.sb.stats["bulk_cancels"] == 1
    payload = run_trigger(trigger(status_url))
    assert payload["status"] == "error"
    assert payload["status_code"] == 404


@pytest.mark.parametrize(
    ("state", "cancels"),
    [("failed", True), ("up_for_retry", True), (None, True), ("deferred", False), ("?", False)],
    ids=["marked-failed", "up-for-retry", "cleared", "triggerer-restart", "state-unknown"],
)
def test_a_cancelled_trigger_cancels_the_export_only_when_the_task_left_deferral(
    bulk_env: BulkEnv, monkeypatch: pytest.MonkeyPatch, state: str | None, cancels: bool
) -> None:
    """Airflow 3.1/3.2 never call on_kill: they cancel the trigger's coroutine, for a user's
    mark-failed as for a triggerer restart. The task instance's state tells them apart.
    On 3.3+ the triggerer calls on_kill itself, so the cancellation path stays out of it."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    bulk_env.sb.settings.update(bulk_job_seconds=30)
    status_url = kickoff(bulk_env)
    asked: list[dict[str, Any]] = []

    def get_task_states(**query: Any) -> dict[str, Any]:
        asked.append(query)
        if state == "?":
            raise ConnectionError("the supervisor is gone")
        return {"run-1": {"export": state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    t = trigger(status_url)
    t.task_instance = types.SimpleNamespace(  # what the triggerer attaches to each trigger
        dag_id="bulk_dag", task_id="export", run_id="run-1", map_index=-1
    )

    async def scenario() -> None:
        async def consume() -> None:
            async for _ in t.run():
                raise AssertionError("the export cannot have completed")

        task = asyncio.create_task(consume())
        while bulk_env.sb.stats["bulk_status_polls"] < 1:  # the wait has started
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 30))
    if TRIGGERER_CALLS_ON_KILL:  # Airflow 3.3+
        assert asked == [] and bulk_env.sb.stats["bulk_cancels"] == 0
    else:
        assert asked == [
            {"dag_id": "bulk_dag", "task_ids": ["export"], "run_ids": ["run-1"], "map_index": -1}
        ]
        assert bulk_env.sb.stats["bulk_cancels"] == (1 if cancels else 0)
    BulkExportClient(bulk_env.auth_client().authorized_sessions(), bulk_env.sb.fhir_base).cancel(
        status_url
    )


def test_on_kill_can_be_turned_off(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_job_seconds=30)
    status_url = kickoff(bulk_env)
    asyncio.run(trigger(status_url, cancel_on_kill=False).on_kill())
    assert bulk_env.sb.stats["bulk_cancels"] == 0
    BulkExportClient(bulk_env.auth_client().authorized_sessions(), bulk_env.sb.fhir_base).cancel(
        status_url
    )


def test_missing_connection_is_an_error_event(bulk_env: BulkEnv) -> None:
    payload = run_trigger(BulkExportTrigger("no_such_conn", f"{bulk_env.sb.fhir_base}/x"))
    assert payload["status"] == "error"
    assert "no_such_conn" in payload["message"]


def test_a_trigger_serialised_by_an_earlier_version_still_builds() -> None:
    # Before PollSettings the trigger stored each poll value as its own argument.
    older = BulkExportTrigger(
        "conn",
        "https://fhir.example/status/1",
        poll_interval_min=1.5,
        poll_interval_max=600,
        max_transient_errors=3,
        deadline=1_900_000_000.0,
    )
    assert older.poll_settings == PollSettings(
        poll_interval_min=1.5, poll_interval_max=600, max_transient_errors=3
    )
