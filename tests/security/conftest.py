"""Fixtures for the security tests: a "good" server (FHIR base + token endpoint), an "other"
server that must never see the token, and a connection pointing at the good one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backendauth_sandbox.testing import ClientKey, generate_client_key
from tests.security.hostile import HostileServer

CONN_ID = "hostile"


@pytest.fixture(scope="session")
def client_key() -> ClientKey:
    return generate_client_key("RSA")


@pytest.fixture
def good() -> Iterator[HostileServer]:
    server = HostileServer("good")
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[HostileServer]:
    server = HostileServer("other")
    yield server
    server.close()


@pytest.fixture
def connect(
    good: HostileServer, client_key: ClientKey, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """``connect(**extra) -> conn_id``: an env connection whose FHIR base is ``good``/fhir."""

    def make(**extra: Any) -> str:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            json.dumps(
                {
                    "conn_type": "backendauth",
                    "host": f"{good.url}/fhir",
                    "login": "hostile-client",
                    "password": client_key.private_pem,
                    "extra": {
                        "profile": "custom",
                        "auth_url": f"{good.url}/token",
                        "scope": "system/*.rs",
                        "retries": 0,
                        **extra,
                    },
                }
            ),
        )
        return CONN_ID

    return make
