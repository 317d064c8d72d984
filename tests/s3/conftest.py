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
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket, the env connection pointing at the server, and an empty request log."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", s3_server.connection_json())
    name = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    return Bucket(s3_server, name)
