"""Shared set-up for the bulk export tests: a module-wide sandbox, a fresh client per test, an
env connection, and builders for the core objects and a task context.

The fixtures (``bulk_sandbox``, ``bulk_key``, ``bulk_env``) live in ``tests/support/bulk_fixtures.py``: load
them in a test module with ``pytest_plugins = ("tests.support.bulk_fixtures",)``.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.bulk.client import BulkExportClient
from airflow_provider_backendauth.core.bulk.download import BulkDownloader
from airflow_provider_backendauth.core.bulk.job import BulkExportJob
from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.bulk.state import BulkStateStore
from airflow_provider_backendauth.core.retry import RetryPolicy
from backendauth_sandbox import Sandbox, SandboxSettings
from backendauth_sandbox.testing import ClientKey

CONN_ID = "fhir_bulk"
JOB_SECONDS = 0.3
FAST_POLL = {"poll_interval_min": 0.05, "poll_interval_max": 0.2}


def fast_poll(**overrides: Any) -> PollSettings:
    """``PollSettings`` that poll the sandbox quickly (``FAST_POLL``), with ``overrides``."""
    return PollSettings(**{**FAST_POLL, **overrides})


SANDBOX_DEFAULTS = {**SandboxSettings().as_dict(), "bulk_job_seconds": JOB_SECONDS}


@dataclass
class BulkEnv:
    """One test's world: the sandbox, a freshly registered client and its connection."""

    sb: Sandbox
    key: ClientKey
    client_id: str
    conn_id: str
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def set_connection(self, **extra: Any) -> None:
        """(Re)define the env connection, with extras such as ``allowed_hosts``."""
        self.monkeypatch.setenv(
            f"AIRFLOW_CONN_{self.conn_id.upper()}",
            json.dumps(
                {
                    "conn_type": "backendauth",
                    "host": self.sb.fhir_base,
                    "login": self.client_id,
                    "password": self.key.private_pem,
                    "extra": {"scope": "system/*.rs", **extra},
                }
            ),
        )
        self._extra = extra

    def auth_client(self, **extra: Any) -> BackendAuthClient:
        merged = {"scope": "system/*.rs", **getattr(self, "_extra", {}), **extra}
        settings = ClientSettings.from_connection_fields(
            host=self.sb.fhir_base,
            login=self.client_id,
            password=self.key.private_pem,
            extra=merged,
        )
        return BackendAuthClient(settings)

    def job(
        self,
        destination: Path | None = None,
        *,
        key: str = "job-1",
        parallel: int = 4,
        attempts: int = 4,
        state_dir: Path | None = None,
        client_options: dict[str, Any] | None = None,
        auth_extra: dict[str, Any] | None = None,
        chunk_size: int = 64 * 1024,
        compression: str | None = None,
    ) -> BulkExportJob:
        """A ``BulkExportJob`` with fast polling and quick retries."""
        destination = destination or self.tmp / "out"
        http = self.auth_client(**(auth_extra or {})).authorized_sessions()
        client = BulkExportClient(
            http, self.sb.fhir_base, poll_settings=fast_poll(**(client_options or {}))
        )
        downloader = BulkDownloader(
            http,
            parallel=parallel,
            retry=RetryPolicy(
                attempts=attempts, initial_wait=0.02, max_wait=0.1, max_retry_after=1.0
            ),
            chunk_size=chunk_size,
        )
        return BulkExportJob(
            client=client,
            store=BulkStateStore(state_dir or destination),
            key=key,
            destination=destination,
            downloader=downloader,
            compression=compression,
        )


def task_context(
    run_id: str = "run-1",
    *,
    dag_id: str = "bulk_dag",
    task_id: str = "export",
    try_number: int = 1,
    max_tries: int = 0,
    map_index: int = -1,
) -> dict[str, Any]:
    """The parts of an Airflow context the bulk operators read."""
    ti = types.SimpleNamespace(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=try_number,
        max_tries=max_tries,
    )
    return {"ti": ti, "run_id": run_id}


def ndjson_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial-" in p.name]


def issued_tokens(sb: Sandbox, client_id: str) -> list[str]:
    """Every access token the sandbox issued to ``client_id`` (for leak checks).

    The sandbox has no public accessor for these, so this reads its token store."""
    store = sb.tokens
    with store._lock:
        return [value for value, token in store._tokens.items() if token.client_id == client_id]


def assert_no_token_in(text: str, sb: Sandbox, client_id: str) -> None:
    tokens = issued_tokens(sb, client_id)
    assert tokens, "the test should have made the client obtain a token"
    for token in tokens:
        assert token not in text, "an access token leaked"
