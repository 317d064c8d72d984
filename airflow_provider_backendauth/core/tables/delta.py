"""The Delta Lake transaction log of a view table: read its current files, commit a new version.

A table is a folder of Parquet data files and ``_delta_log/NNNNNNNNNNNNNNNNNNNN.json``, one
file per version, each a list of actions (Delta protocol, reader version 1 / writer
version 2: ``protocol``, ``metaData``, ``add``, ``remove``, ``commitInfo``; no deletion
vectors, checkpoints or column mapping). The table *is* what the newest version lists: data
files not added by a committed version are invisible to every Delta reader (DuckDB's
``delta_scan``, delta-rs/``deltalake``, Spark, polars), so a writer killed before its commit
leaves a table that still reads as its previous version, never a half-written one and never
duplicated rows.

Why this provider writes the log itself rather than through delta-rs: the data files go
through ``core/storage/`` (written once under their final name, uploaded while written,
bounded memory, Airflow connections for every store), which delta-rs cannot use (it has its
own object-store clients and credentials). The log part is small: JSON lines per version.

Commits are put-if-absent: locally a hard link (fails if the version exists), on S3 a
``PutObject`` with ``If-None-Match: *``; on other stores the version is checked just before
it is written. One writer per table at a time is the contract (one Airflow task per table);
a second writer that loses the race fails with ``TableError`` and commits nothing.

Checkpoints are neither written nor read: a table with one (written by another engine)
is refused rather than misread. This module imports no Airflow.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth.core.errors import TableError
from airflow_provider_backendauth.core.storage.atomic import atomic_writer
from airflow_provider_backendauth.core.storage.paths import StoragePath, is_local

if TYPE_CHECKING:
    import pyarrow as pa

LOG_DIR = "_delta_log"
_VERSION_NAME = re.compile(r"^(\d{20})\.json$")
READER_VERSION = 1
WRITER_VERSION = 2
ENGINE = "airflow-provider-backendauth"


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of the table: ``path`` relative to the table folder."""

    path: str
    size: int
    rows: int

    def add_action(self, now_ms: int) -> dict[str, Any]:
        return {
            "add": {
                "path": self.path,
                "partitionValues": {},
                "size": self.size,
                "modificationTime": now_ms,
                "dataChange": True,
                "stats": json.dumps({"numRecords": self.rows}),
            }
        }

    def remove_action(self, now_ms: int) -> dict[str, Any]:
        return {
            "remove": {
                "path": self.path,
                "deletionTimestamp": now_ms,
                "dataChange": True,
                "extendedFileMetadata": True,
                "partitionValues": {},
                "size": self.size,
            }
        }


@dataclass
class Snapshot:
    """The table as its newest version describes it."""

    version: int
    table_id: str
    schema_string: str
    files: dict[str, DataFile] = field(default_factory=dict)
    configuration: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files.values())


def spark_type(arrow_type: pa.DataType) -> Any:
    """The Delta (Spark) schema type of an Arrow type this package writes."""
    import pyarrow as pa

    if pa.types.is_list(arrow_type):
        return {
            "type": "array",
            "elementType": spark_type(arrow_type.value_type),
            "containsNull": True,
        }
    if pa.types.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    for check, name in (
        (pa.types.is_string, "string"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_int32, "integer"),
        (pa.types.is_int64, "long"),
        (pa.types.is_date32, "date"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_binary, "binary"),
    ):
        if check(arrow_type):
            return name
    raise TableError(f"no Delta type for Arrow type {arrow_type}")


def schema_string(schema: pa.Schema) -> str:
    """The ``metaData.schemaString`` of an Arrow schema."""
    return json.dumps(
        {
            "type": "struct",
            "fields": [
                {"name": f.name, "type": spark_type(f.type), "nullable": True, "metadata": {}}
                for f in schema
            ],
        },
        separators=(",", ":"),
    )


def _log_dir(table: StoragePath) -> StoragePath:
    return table / LOG_DIR


def _versions(table: StoragePath) -> list[int]:
    log_dir = _log_dir(table)
    try:
        names = [child.name for child in log_dir.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    if any("checkpoint" in name for name in names):
        raise TableError(
            f"{table} has Delta checkpoints (written by another engine); this provider "
            "writes tables without them and will not continue this one: write a new table"
        )
    return sorted(int(m.group(1)) for name in names if (m := _VERSION_NAME.match(name)))


def _version_path(table: StoragePath, version: int) -> StoragePath:
    return _log_dir(table) / f"{version:020d}.json"


def read_snapshot(table: StoragePath) -> Snapshot | None:
    """The table's newest version, or None when there is no table at ``table``.

    Raises:
        TableError: a log this provider cannot continue (newer protocol, checkpoints, a gap
            in the versions, unreadable JSON).
    """
    versions = _versions(table)
    if not versions:
        return None
    if versions != list(range(len(versions))):
        raise TableError(f"{table}: the Delta log's versions are not 0..{versions[-1]} in order")
    snapshot: Snapshot | None = None
    files: dict[str, DataFile] = {}
    meta: Mapping[str, Any] | None = None
    for version in versions:
        with _version_path(table, version).open("rb") as handle:
            lines = handle.read().splitlines()
        for line in lines:
            if not line.strip():
                continue
            try:
                action = json.loads(line)
            except ValueError as exc:
                raise TableError(f"{table}: version {version} of the log is not JSON") from exc
            if "protocol" in action:
                protocol = action["protocol"]
                if (
                    int(protocol.get("minReaderVersion", 1)) > READER_VERSION
                    or int(protocol.get("minWriterVersion", 2)) > WRITER_VERSION
                ):
                    raise TableError(
                        f"{table} needs Delta reader/writer features this provider does not "
                        f"write ({protocol}); write a new table"
                    )
            elif "metaData" in action:
                meta = action["metaData"]
            elif "add" in action:
                add = action["add"]
                if add.get("partitionValues"):
                    raise TableError(f"{table} is partitioned; this provider writes no partitions")
                stats = json.loads(add.get("stats") or "{}")
                files[add["path"]] = DataFile(
                    add["path"], int(add.get("size", 0)), int(stats.get("numRecords", 0))
                )
            elif "remove" in action:
                files.pop(action["remove"]["path"], None)
    if meta is None:
        raise TableError(f"{table}: the Delta log has no metaData")
    snapshot = Snapshot(
        version=versions[-1],
        table_id=str(meta.get("id", "")),
        schema_string=str(meta.get("schemaString", "")),
        files=files,
        configuration=dict(meta.get("configuration") or {}),
    )
    return snapshot


def commit(
    table: StoragePath,
    previous: Snapshot | None,
    *,
    schema: pa.Schema,
    adds: Iterable[DataFile],
    removes: Iterable[DataFile] = (),
    operation: str = "WRITE",
    parameters: Mapping[str, Any] | None = None,
    configuration: Mapping[str, str] | None = None,
    name: str | None = None,
) -> int:
    """Commit one version: the files added and removed, with the schema; returns the version.

    A new table (``previous`` None) gets the protocol and metadata; a changed schema or
    configuration a new ``metaData`` action (allowed for an overwrite; the caller refuses a
    changed schema for a merge).

    Raises:
        TableError: another writer committed this version first (nothing was written).
    """
    now_ms = int(time.time() * 1000)
    version = 0 if previous is None else previous.version + 1
    adds = list(adds)
    actions: list[dict[str, Any]] = [
        {
            "commitInfo": {
                "timestamp": now_ms,
                "operation": operation,
                "operationParameters": {k: str(v) for k, v in (parameters or {}).items()},
                "engineInfo": ENGINE,
                "operationMetrics": {
                    "numAddedFiles": str(len(adds)),
                    "numOutputRows": str(sum(f.rows for f in adds)),
                },
            }
        }
    ]
    schema_text = schema_string(schema)
    config = dict(configuration or {})
    if previous is None:
        actions.append(
            {"protocol": {"minReaderVersion": READER_VERSION, "minWriterVersion": WRITER_VERSION}}
        )
    changed = previous is None or (previous.schema_string, previous.configuration) != (
        schema_text,
        config,
    )
    if changed:
        metadata: dict[str, Any] = {
            "id": previous.table_id if previous is not None else str(uuid.uuid4()),
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_text,
            "partitionColumns": [],
            "configuration": config,
            "createdTime": now_ms,
        }
        if name:
            metadata["name"] = name
        actions.append({"metaData": metadata})
    actions.extend(f.remove_action(now_ms) for f in removes)
    actions.extend(f.add_action(now_ms) for f in adds)
    body = "".join(json.dumps(a, separators=(",", ":")) + "\n" for a in actions).encode()
    _put_if_absent(_version_path(table, version), body, version)
    return version


def _put_if_absent(path: StoragePath, body: bytes, version: int) -> None:
    taken = TableError(
        f"version {version} of {path.parent.parent} was committed by another writer meanwhile; "
        "one writer per table at a time (nothing was committed by this one)"
    )
    if is_local(path):
        os_path = getattr(path, "path", None) if hasattr(path, "fs") else None
        final = os.fspath(os_path if os_path is not None else path)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        temp = f"{final}.{uuid.uuid4().hex}.tmp"
        with open(temp, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, final)  # atomic, and fails if the version exists
        except FileExistsError:
            raise taken from None
        finally:
            os.unlink(temp)
        return
    fs = path.fs
    if callable(getattr(fs, "call_s3", None)):
        bucket, key, _ = fs.split_path(path.path)
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        except FileExistsError as exc:  # s3fs's form of 412 Precondition Failed
            raise taken from exc
        fs.invalidate_cache(path.path)
        return
    if path.exists():  # GCS, Azure: checked, then written (one writer per table)
        raise taken
    with atomic_writer(path, "wb") as handle:
        handle.write(body)


def table_files(table: StoragePath) -> list[str]:
    """The data files of the table's current version, as paths or URLs a reader opens (e.g.
    DuckDB's ``read_parquet([...])`` where its ``delta`` extension is not installed).

    Raises:
        TableError: there is no table at ``table``, or its log cannot be read.
    """
    snapshot = read_snapshot(table)
    if snapshot is None:
        raise TableError(f"no Delta table at {table}")
    return [str(table / name) for name in sorted(snapshot.files)]
