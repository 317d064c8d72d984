"""View tables on a real S3 endpoint (moto): data files as uploads completed once, the log
version put-if-absent, merges, nothing visible from a failed write, no copy."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from airflow_provider_backendauth.core.errors import TableError
from airflow_provider_backendauth.core.tables import ViewTable, read_snapshot
from airflow_provider_backendauth.core.tables.delta import DataFile, commit
from tests.core.tables.support import COLUMNS, row
from tests.s3.conftest import Bucket


def _table_rows(bucket: Bucket, prefix: str) -> list[str]:
    snapshot = read_snapshot(bucket.path(prefix))
    assert snapshot is not None
    objects = bucket.server.objects(bucket.name, prefix)
    ids: list[str] = []
    for name in snapshot.files:
        ids += pq.read_table(io.BytesIO(objects[f"{prefix}/{name}"])).column("id").to_pylist()
    return sorted(ids)


def test_write_and_merge_on_s3(bucket: Bucket) -> None:
    ViewTable(bucket.path("tables/obs"), COLUMNS).write([row("a"), row("b")])
    result = ViewTable(bucket.path("tables/obs"), COLUMNS).write([row("b", 2)], replace_keys={"b"})
    assert (result.version, result.rows) == (1, 2)
    assert _table_rows(bucket, "tables/obs") == ["a-v1", "b-v2"]
    keys = bucket.server.objects(bucket.name, "tables/obs")
    assert sorted(k for k in keys if "_delta_log" in k) == [
        "tables/obs/_delta_log/00000000000000000000.json",
        "tables/obs/_delta_log/00000000000000000001.json",
    ]
    ops = bucket.server.operations(bucket.name)
    assert ops["CopyObject"] == 0 and ops["UploadPartCopy"] == 0
    assert bucket.server.incomplete_uploads(bucket.name) == []


def test_a_stale_writer_cannot_overwrite_a_version_on_s3(bucket: Bucket) -> None:
    table = bucket.path("tables/t")
    ViewTable(table, COLUMNS).write([row("a")])
    stale = read_snapshot(table)
    ViewTable(table, COLUMNS).write([row("b")])
    before = bucket.server.objects(bucket.name, "tables/t/_delta_log/00000000000000000001.json")
    with pytest.raises(TableError, match="another writer"):
        commit(table, stale, schema=ViewTable(table, COLUMNS).schema, adds=[DataFile("x", 1, 1)])
    after = bucket.server.objects(bucket.name, "tables/t/_delta_log/00000000000000000001.json")
    assert after == before
    assert _table_rows(bucket, "tables/t") == ["b-v1"]


def test_a_failed_write_leaves_nothing_new_on_s3(bucket: Bucket) -> None:
    table = bucket.path("tables/t")
    ViewTable(table, COLUMNS).write([row("a")])
    before = set(bucket.server.objects(bucket.name))

    def rows():  # type: ignore[no-untyped-def]
        for i in range(50):
            yield row(f"k{i}")
        yield {**row("x"), "issued": "not an instant"}

    with pytest.raises(TableError):
        ViewTable(table, COLUMNS, row_group_rows=10, target_file_bytes=1).write(rows())
    assert set(bucket.server.objects(bucket.name)) == before
    assert bucket.server.incomplete_uploads(bucket.name) == []
