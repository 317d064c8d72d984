"""Connections for operator tests: a client registered with the sandbox, as AIRFLOW_CONN_*."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import connection_json
from tests.support.clients import register, vendor_extra


@pytest.fixture
def sb(sandbox: Any) -> Iterator[Any]:
    yield sandbox
    sandbox.settings.update(search_next_link="absolute")


@pytest.fixture
def make_conn(sb: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``make_conn(conn_id, vendor="smart", host=None, **extra) -> client_id``."""

    def make(
        conn_id: str = "fhir_test", vendor: str = "smart", host: str | None = None, **extra: Any
    ) -> str:
        client_id, key = register(sb, vendor)
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            connection_json(
                host=host or sb.fhir_base,
                login=client_id,
                password=key.private_pem,
                **{**vendor_extra(sb, vendor), **extra},
            ),
        )
        return client_id

    return make


@pytest.fixture
def fast_retry() -> dict[str, Any]:
    """``retry_args`` for quick retries (tests that do not check Retry-After)."""
    import tenacity

    return {"wait": tenacity.wait_fixed(0.05)}
