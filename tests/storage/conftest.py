"""Real Azure Blob and Google Cloud Storage endpoints on 127.0.0.1, one container or bucket
per test, reached through ``ObjectStoragePath`` the way users reach the clouds.

- Azure: Azurite, with an Airflow ``wasb`` connection holding its connection string; the
  Microsoft Azure provider turns ``abfs://azurite@<container>/...`` into an adlfs filesystem.
- GCS: fake-gcs-server. The Google provider would build the filesystem from a
  ``google_cloud_platform`` connection, but it has no endpoint setting for an emulator and
  falls back to Application Default Credentials (which probe the cloud metadata server);
  it also brings about a hundred packages. So the tests give Airflow the gcsfs filesystem
  themselves, with Airflow's own ``attach("gs", conn_id, fs=...)``: ``gs://gcs_emulator@
  <bucket>/...`` then resolves to it exactly as a provider-made one would.

Both servers start once per session; if one cannot be installed or started, its tests error
with the reason (they are never skipped).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.azurite import AzuriteServer
from tests.support.gcs import FakeGcsServer

AZURE_CONN_ID = "azurite"
GCS_CONN_ID = "gcs_emulator"


# The Azure SDK logs every request's headers at INFO: noise in a failing test's report.
logging.getLogger("azure").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    with AzuriteServer() as server:
        yield server


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcsServer]:
    from airflow.sdk.io import attach

    with FakeGcsServer() as server:
        attach("gs", conn_id=GCS_CONN_ID, fs=server.filesystem())
        yield server


@dataclass
class Container:
    server: AzuriteServer
    name: str
    conn_id: str = AZURE_CONN_ID

    def url(self, key: str = "") -> str:
        return f"abfs://{self.conn_id}@{self.name}/{key}"

    def path(self, key: str = "") -> Any:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.url(key))

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        return self.server.blobs(self.name, prefix)

    def uncommitted(self) -> dict[str, int]:
        return self.server.uncommitted(self.name)


@dataclass
class GcsBucket:
    server: FakeGcsServer
    name: str
    conn_id: str = GCS_CONN_ID

    def url(self, key: str = "") -> str:
        return f"gs://{self.conn_id}@{self.name}/{key}"

    def path(self, key: str = "") -> Any:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.url(key))

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        return self.server.objects(self.name, prefix)


@pytest.fixture
def container(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> Container:
    """A fresh Azure container and the ``azurite`` connection pointing at the server."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{AZURE_CONN_ID.upper()}",
        json.dumps(
            {"conn_type": "wasb", "extra": {"connection_string": azurite.connection_string}}
        ),
    )
    return Container(azurite, azurite.create_container())


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGcsServer) -> GcsBucket:
    """A fresh GCS bucket on the emulator."""
    return GcsBucket(fake_gcs, fake_gcs.create_bucket())
