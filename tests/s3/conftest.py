"""A real S3 endpoint for the tests: moto in server mode on 127.0.0.1, one bucket per test,
and the ``aws_default`` connection (``endpoint_url`` = that server) that ``s3://aws_default@bucket/``
paths use."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.s3 import S3Server

S3_CONN_ID = "aws_default"
NO_RETRIES_CONN_ID = "s3_no_retries"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@dataclass
class Bucket:
    server: S3Server
    name: str
    conn_id: str = S3_CONN_ID

    def url(self, key: str = "") -> str:
        return f"s3://{self.conn_id}@{self.name}/{key}"

    def path(self, key: str = "") -> object:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.url(key))


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A fresh bucket, the env connection pointing at the server, and an empty request log;
    the server's injected faults are removed afterwards."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", s3_server.connection_json())
    name = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    yield Bucket(s3_server, name)
    s3_server.clear_faults()


@pytest.fixture
def fragile_bucket(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """The same bucket through a connection whose client does not retry: an error the
    server injects reaches the code under test at once (botocore would retry a 5xx)."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{NO_RETRIES_CONN_ID.upper()}",
        bucket.server.connection_json(retries=False),
    )
    return Bucket(bucket.server, bucket.name, NO_RETRIES_CONN_ID)
