"""Every operator with a client that requires DPoP (RFC 9449), against the sandbox's DPoP mode
with server nonces that rotate every few proofs: REST through the hook, FHIR search pages,
bulk export with and without deferral (the trigger's httpx polls), mapped downloads, and bulk
files served from another origin (the proof, like the token, never goes there)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_backendauth._compat import TaskDeferred
from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook
from airflow_provider_backendauth.operators.fhir import FhirSearchOperator
from tests.operators.test_bulk import TYPES, download_op, drive, export_op, finalize_op, mapped_run
from tests.support.bulkkit import CONN_ID, BulkEnv, assert_no_token_in, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)


@pytest.fixture
def dpop_env(bulk_env: BulkEnv) -> BulkEnv:
    bulk_env.sb.register_client(
        bulk_env.client_id, bulk_env.key.public_jwks, vendor="smart", dpop="require"
    )
    bulk_env.sb.settings.update(dpop_nonce=True, dpop_nonce_rotate_after=4)
    bulk_env.set_connection(dpop="on")
    return bulk_env


def _dpop_worked(env: BulkEnv) -> dict[str, Any]:
    stats = env.sb.stats
    assert stats["dpop"]["tokens_issued"] >= 1
    assert stats["dpop"]["nonces_rotated"] >= 1
    assert stats["dpop"]["failures"] == stats["dpop"]["nonce_challenges"], stats["dpop"]
    dpop: dict[str, Any] = stats["dpop"]
    return dpop


def test_rest_through_the_hook(dpop_env: BulkEnv) -> None:
    hook = BackendAuthHook(CONN_ID)
    for _ in range(6):
        answer = hook.run("GET", "Patient", params={"_count": 2})
        assert answer.status_code == 200
    ok, message = hook.test_connection()
    assert ok and "DPoP-bound" in message, message
    _dpop_worked(dpop_env)


def test_search_pages(dpop_env: BulkEnv) -> None:
    out = dpop_env.tmp / "search"
    FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=CONN_ID,
        resource_type="Observation",
        search_params={"_count": 5},
        destination=str(out),
    ).execute(task_context())
    lines = (out / "Observation.ndjson").read_text().splitlines()
    assert len(lines) > 10  # several pages, each with its own proof
    _dpop_worked(dpop_env)


@pytest.mark.e2e
def test_bulk_export_without_and_with_deferral(dpop_env: BulkEnv) -> None:
    out = dpop_env.tmp / "plain"
    summary = export_op(out).execute(task_context())
    assert set(summary["output"]) == TYPES
    deferred_out = dpop_env.tmp / "deferred"
    op = export_op(deferred_out, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(task_context("run-2"))
    event = drive(info.value)  # the trigger polls over httpx, with proofs
    summary = export_op(deferred_out, deferrable=True).execute_complete(
        task_context("run-2"), event
    )
    assert set(summary["output"]) == TYPES
    assert_no_token_in(json.dumps(summary), dpop_env.sb, dpop_env.client_id)
    _dpop_worked(dpop_env)


@pytest.mark.e2e
def test_mapped_downloads_from_another_origin(dpop_env: BulkEnv) -> None:
    dpop_env.sb.settings.update(bulk_lines_per_file=6, bulk_file_origin="redirect")
    out = dpop_env.tmp / "out"
    files = mapped_run(dpop_env, out)
    for index, entry in enumerate(files):
        download_op(out, file=entry).execute(task_context(task_id="download", map_index=index))
    summary = finalize_op(out).execute(task_context(task_id="finalize"))
    assert sum(v["count"] for v in summary["output"].values()) == sum(f["count"] for f in files)
    foreign = dpop_env.sb.stats["foreign_origin"]
    assert foreign["file_downloads"] == len(files)
    assert foreign["authorization_headers"] == [] and foreign["dpop_headers"] == []
    _dpop_worked(dpop_env)
