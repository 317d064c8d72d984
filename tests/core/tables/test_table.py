"""View tables: Parquet files committed as Delta versions, read back by an independent reader
(delta-rs); incremental merges equal full writes; failures and kills leave the previous
version; memory stays bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airflow_provider_backendauth.core.errors import TableError
from airflow_provider_backendauth.core.tables import (
    KEY_COLUMN,
    ViewTable,
    read_snapshot,
    table_files,
)
from airflow_provider_backendauth.core.tables.delta import DataFile, commit
from tests.core.tables.support import COLUMNS, read_rows, row


def _parquet_files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.suffix == ".parquet"}


def test_a_first_write_creates_a_delta_table(tmp_path: Path) -> None:
    table = tmp_path / "obs"
    result = ViewTable(table, COLUMNS, name="obs").write([row("a"), row("b")])
    assert result.version == 0 and result.rows == 2 and result.rows_written == 2
    assert result.files == 1 and result.bytes > 0
    assert [r["id"] for r in read_rows(table)] == ["a-v1", "b-v1"]
    assert read_rows(table)[0]["value"] == "1.50"  # the exact decimal text


def test_an_empty_input_commits_an_empty_table(tmp_path: Path) -> None:
    result = ViewTable(tmp_path / "t", COLUMNS).write([])
    assert (result.version, result.rows, result.files) == (0, 0, 0)
    assert read_rows(tmp_path / "t") == []


def test_full_plus_incremental_equals_full(tmp_path: Path) -> None:
    # T1: a..e; then b updated (two rows now: a forEach), d deleted, f new, c updated into a
    # resource that yields no row (its key is still replaced).
    t1 = [row(k) for k in "abcde"]
    t2_changes = [row("b", 2), {**row("b", 2), "id": "b-second"}, row("f", 2)]
    changed_keys = {"b", "c", "f"}
    deleted_keys = {"d"}

    incremental = tmp_path / "incremental"
    ViewTable(incremental, COLUMNS, row_group_rows=2).write(t1)
    result = ViewTable(incremental, COLUMNS, row_group_rows=2).write(
        t2_changes, replace_keys=changed_keys | deleted_keys
    )
    full = tmp_path / "full"
    ViewTable(full, COLUMNS).write([row("a"), *t2_changes, row("e")])

    assert read_rows(incremental) == read_rows(full)
    assert (result.version, result.mode, result.rows_written, result.rows_removed) == (
        1,
        "merge",
        3,
        3,
    )
    assert result.rows == len(read_rows(full)) == 5


def test_a_merge_rewrites_only_the_files_holding_a_changed_key(tmp_path: Path) -> None:
    table = tmp_path / "t"
    writer = ViewTable(table, COLUMNS, target_file_bytes=1)  # one file per row group
    writer.write([row("a"), row("b")])
    before = read_snapshot(table)
    assert before is not None and len(before.files) == 1
    writer.write([row("c")], replace_keys=set())
    writer.write([row("a", 2)], replace_keys={"a"})
    after = read_snapshot(table)
    assert after is not None
    kept = [f for f in after.files if f not in before.files]
    assert len(after.files) == 3  # c's file kept, a+b's rewritten as b's, a's new one
    assert any(f.startswith("part-") for f in kept)
    assert [r["id"] for r in read_rows(table)] == ["a-v2", "b-v1", "c-v1"]


def test_a_merge_needs_a_table_with_the_same_columns(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="write the full export first"):
        ViewTable(tmp_path / "t", COLUMNS).write([row("a")], replace_keys={"a"})
    ViewTable(tmp_path / "t", COLUMNS).write([row("a")])
    with pytest.raises(TableError, match="other columns"):
        ViewTable(tmp_path / "t", COLUMNS[:-1]).write([], replace_keys={"a"})
    # An overwrite may change the columns (a new metaData action).
    ViewTable(tmp_path / "t", COLUMNS[:-1]).write(
        [{k: v for k, v in row("z").items() if k != "codes"}]
    )
    assert [r["id"] for r in read_rows(tmp_path / "t")] == ["z-v1"]


def test_an_overwrite_replaces_every_row(tmp_path: Path) -> None:
    table = tmp_path / "t"
    ViewTable(table, COLUMNS).write([row("a"), row("b")])
    result = ViewTable(table, COLUMNS).write([row("c")])
    assert (result.version, result.rows_removed, result.rows) == (1, 2, 1)
    assert [r["id"] for r in read_rows(table)] == ["c-v1"]


def test_a_bad_value_mid_stream_commits_nothing_and_leaves_no_file(tmp_path: Path) -> None:
    table = tmp_path / "t"
    ViewTable(table, COLUMNS).write([row("a")])
    before = _parquet_files(table)

    def rows() -> Any:
        for i in range(10):
            yield row(f"k{i}")
        yield {**row("bad"), "issued": "not an instant"}

    with pytest.raises(TableError, match="'issued'"):
        ViewTable(table, COLUMNS, row_group_rows=3, target_file_bytes=1).write(rows())
    assert _parquet_files(table) == before  # the finished files were deleted again
    assert not [p for p in table.iterdir() if p.name.startswith(".")]
    assert [r["id"] for r in read_rows(table)] == ["a-v1"]


def test_a_row_without_a_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no column 'codes'"):
        ViewTable(tmp_path / "t", COLUMNS).write(
            [{k: v for k, v in row("a").items() if k != "codes"}]
        )
    assert read_snapshot(tmp_path / "t") is None


def test_a_second_writer_of_the_same_version_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "t"
    ViewTable(table, COLUMNS).write([row("a")])
    stale = read_snapshot(table)
    ViewTable(table, COLUMNS).write([row("b")])  # version 1
    schema = ViewTable(table, COLUMNS).schema
    with pytest.raises(TableError, match="version 1 .* another writer"):
        commit(table, stale, schema=schema, adds=[DataFile("x.parquet", 1, 1)])
    assert [r["id"] for r in read_rows(table)] == ["b-v1"]


def test_a_killed_writer_leaves_the_previous_version(tmp_path: Path) -> None:
    table = tmp_path / "t"
    ViewTable(table, COLUMNS).write([row("a")])
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from airflow_provider_backendauth.core.tables import ViewTable
        from tests.core.tables.support import COLUMNS, row

        def rows():
            for i in range(100_000):
                if i == 20_000:
                    Path({str(ready)!r}).write_text("x")
                    time.sleep(600)
                yield row(f"k{{i}}")

        ViewTable(Path({str(table)!r}), COLUMNS, row_group_rows=1000, target_file_bytes=1).write(rows())
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        for _ in range(1200):
            if ready.exists() or child.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert ready.exists(), "the writer did not get to its rows"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(_parquet_files(table)) > 1  # finished data files exist, unreferenced
    assert [r["id"] for r in read_rows(table)] == ["a-v1"]
    snapshot = read_snapshot(table)
    assert snapshot is not None and snapshot.version == 0


def test_memory_stays_bounded_whatever_the_input_size(tmp_path: Path) -> None:
    peak = 0

    def rows(n: int) -> Any:
        nonlocal peak
        for i in range(n):
            if i % 500 == 0:
                peak = max(peak, pa.total_allocated_bytes())
            yield row(f"k{i}")

    ViewTable(tmp_path / "small", COLUMNS, row_group_rows=1000).write(rows(5_000))
    small = peak
    peak = 0
    result = ViewTable(tmp_path / "large", COLUMNS, row_group_rows=1000).write(rows(60_000))
    assert result.rows == 60_000
    # Twelve times the rows, about the same Arrow memory: one row group at a time.
    assert peak < small * 2 + (1 << 20)


def test_on_an_object_store_path(tmp_path: Path) -> None:
    import uuid

    from upath import UPath

    table = UPath(f"memory://bucket-{uuid.uuid4().hex}/tables/obs")
    ViewTable(table, COLUMNS).write([row("a"), row("b")])
    ViewTable(table, COLUMNS).write([row("b", 2)], replace_keys={"b"})
    snapshot = read_snapshot(table)
    assert snapshot is not None and snapshot.version == 1 and snapshot.rows == 2
    assert KEY_COLUMN in ViewTable(table, COLUMNS).schema.names


def test_duckdb_reads_the_current_files(tmp_path: Path) -> None:
    import duckdb

    table = tmp_path / "t"
    ViewTable(table, COLUMNS).write([row("a"), row("b")])
    first = table_files(table)
    ViewTable(table, COLUMNS).write([row("b", 2)], replace_keys={"b"})
    files = table_files(table)
    # a's row rewritten and b's new row share one new file; the first file is not current
    # (but still there: a glob would read b twice).
    assert len(files) == 1 and files != first and Path(first[0]).exists()
    got = duckdb.execute("SELECT id FROM read_parquet(?) ORDER BY id", [files]).fetchall()
    assert got == [("a-v1",), ("b-v2",)]
    with pytest.raises(TableError, match="no Delta table"):
        table_files(tmp_path / "none")
