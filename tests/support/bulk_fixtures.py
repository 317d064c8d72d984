"""Fixtures for the bulk export tests (load with ``pytest_plugins = ("tests.support.bulk_fixtures",)``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import ClientKey, generate_client_key
from tests.support.bulkkit import CONN_ID, JOB_SECONDS, SANDBOX_DEFAULTS, BulkEnv


@pytest.fixture(scope="module")
def bulk_sandbox() -> Iterator[Sandbox]:
    with Sandbox(patients=20, seed=7, bulk_job_seconds=JOB_SECONDS) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def bulk_key() -> ClientKey:
    return generate_client_key("EC-P384")


@pytest.fixture
def bulk_env(
    bulk_sandbox: Sandbox, bulk_key: ClientKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BulkEnv]:
    sb = bulk_sandbox
    sb.faults.clear()
    sb.settings.update(**SANDBOX_DEFAULTS)
    sb.reset_stats()
    client_id = f"bulk-{uuid.uuid4().hex[:8]}"  # one per test: exports never collide
    sb.register_client(client_id, bulk_key.public_jwks, vendor="smart")
    world = BulkEnv(sb, bulk_key, client_id, CONN_ID, tmp_path, monkeypatch)
    world.set_connection()
    yield world
    sb.faults.clear()
    sb.settings.update(**SANDBOX_DEFAULTS)


@pytest.fixture
def fhir(bulk_env: BulkEnv) -> BulkEnv:
    """The sandbox client exposed as the example DAGs' connection ``backendauth_fhir``."""
    bulk_env.conn_id = "backendauth_fhir"
    bulk_env.set_connection()
    return bulk_env
