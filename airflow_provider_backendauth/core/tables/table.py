"""A view table: rows streamed into Parquet files, committed as one Delta Lake version.

Guarantees:
- **Nothing half-written is visible.** Each Parquet file is written once under its final name
  through ``core/storage/`` (a local temporary sibling renamed when complete; on object
  stores an uncommitted upload, no copy), and the table shows the files only once one log
  version (``delta.py``) lists them all. A writer that fails removes the data files it had
  finished; one that is killed leaves unreferenced files no Delta reader sees.
- **Bounded memory, whatever the input size.** Rows are taken ``row_group_rows`` at a time,
  converted to Arrow and written as one Parquet row group; a file is closed and the next one
  started past ``target_file_bytes``. A merge reads the old files one row group at a time.
- **Incremental = full.** ``write(rows, replace_keys=K)`` keeps every row of the table whose
  key column is not in ``K``, and adds ``rows``: so a full table at T1, merged with the
  resources changed since T1 (their keys in ``K`` together with the deleted ones), holds the
  same rows as a full table at T2. Files without such a key are kept as they are; a file
  holding one is rewritten without those rows (copy-on-write: Delta readers without
  deletion-vector support, DuckDB's included, read every version).

pyarrow is imported lazily. This module imports no Airflow.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_backendauth.core.errors import TableError
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.atomic import AtomicFile
from airflow_provider_backendauth.core.storage.paths import StoragePath, as_path
from airflow_provider_backendauth.core.tables import delta
from airflow_provider_backendauth.core.tables.types import (
    ColumnType,
    TypeOptions,
    column_type,
    schema_of,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger(__name__)

DEFAULT_ROW_GROUP_ROWS = 50_000
DEFAULT_TARGET_FILE_BYTES = 256 * 2**20
KEY_COLUMN = "_resource_key"  # what getResourceKey() returned for the row's resource


class ColumnLike(Protocol):
    """A view's output column (``core.views.Column`` or anything shaped like it)."""

    name: str
    type: str | None
    collection: bool


@dataclass
class TableResult:
    """What one write did (JSON-serialisable through ``as_dict``, for XCom).

    Attributes:
        path: the table folder.
        version: the Delta version committed.
        mode: ``overwrite`` or ``merge``.
        rows_written: rows added by this version.
        rows_removed: rows of earlier versions this version dropped (merge).
        rows: rows in the table after this version.
        files: data files added.
        bytes: bytes of the data files added.
    """

    path: str
    version: int
    mode: str
    rows_written: int
    rows_removed: int
    rows: int
    files: int
    bytes: int
    columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Counting(io.RawIOBase):
    """A write-only file that counts what passes (Parquet asks ``tell()``; an upload may not
    know its position)."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self._target = target
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._target.write(data)
        size = memoryview(data).nbytes
        self.position += size
        return size

    def tell(self) -> int:
        return self.position


class _ParquetFiles:
    """Record batches -> Parquet files in the table folder, each committed when full."""

    def __init__(
        self,
        table: StoragePath,
        schema: pa.Schema,
        *,
        target_file_bytes: int,
        compression: str,
    ) -> None:
        self.table = table
        self.schema = schema
        self.target_file_bytes = target_file_bytes
        self.compression = compression
        self.token = secrets.token_hex(8)  # this write's files, distinct from any other's
        self.done: list[delta.DataFile] = []
        self._atomic: AtomicFile | None = None
        self._writer: Any = None
        self._counter: _Counting | None = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        import pyarrow.parquet as pq

        if batch.num_rows == 0:
            return
        if self._writer is None:
            name = f"part-{self.token}-{len(self.done):05d}.parquet"
            self._atomic = AtomicFile(self.table / name, "wb")
            self._counter = _Counting(self._atomic.open())
            self._writer = pq.ParquetWriter(
                self._counter, self.schema, compression=self.compression
            )
            self._rows = 0
        self._writer.write_batch(batch)
        self._rows += batch.num_rows
        assert self._counter is not None
        if self._counter.position >= self.target_file_bytes:
            self.close_file()

    def close_file(self) -> None:
        if self._writer is None:
            return
        assert self._atomic is not None and self._counter is not None
        self._writer.close()
        path = self._atomic.commit()
        self.done.append(delta.DataFile(path.name, self._counter.position, self._rows))
        self._writer = self._atomic = self._counter = None

    def discard(self) -> None:
        """Drop the file being written and delete the ones finished (none is in the log)."""
        if self._atomic is not None:
            self._atomic.discard()
        self._writer = self._atomic = None
        for done in self.done:
            try:
                (self.table / done.path).unlink(missing_ok=True)
            except Exception:  # cleanup must not hide the error that got us here
                log.warning("Could not delete the unreferenced data file %s", done.path)


def _batches(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[ColumnType],
    row_keys: Sequence[str] | None,
    size: int,
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``size`` rows. ``row_keys`` None: the rows are tuples in column
    order already (``CompiledView.run_tuples``), taken as they are."""
    import pyarrow as pa

    schema = schema_of(columns)
    getter = None if row_keys is None else itemgetter(*row_keys)
    single = row_keys is not None and len(row_keys) == 1
    chunk: list[Any] = []
    iterator = iter(rows)
    while True:
        chunk.clear()
        try:
            if getter is None:
                for row in iterator:
                    chunk.append(row)
                    if len(chunk) >= size:
                        break
            else:
                for row in iterator:
                    chunk.append((getter(row),) if single else getter(row))
                    if len(chunk) >= size:
                        break
        except KeyError as exc:
            raise TableError(f"a row has no column {exc.args[0]!r}") from None
        if not chunk:
            return
        try:
            values = list(zip(*chunk, strict=True))
        except ValueError:
            raise TableError(
                f"rows of different lengths (the table has {len(columns)} columns)"
            ) from None
        arrays = [column.to_arrow(values[i]) for i, column in enumerate(columns)]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        if len(chunk) < size:
            return


class ViewTable:
    """One view's Delta table at ``path``.

    Args:
        path: the table folder (local path, ``ObjectStoragePath``, ``UPath`` or URL).
        columns: the view's columns (name, FHIR type, collection), in order. A merge needs the
            key column (``KEY_COLUMN``) among them.
        options: the type choices (``TypeOptions``).
        tags: each column's ``ansi/type`` tag, if any (``{name: "DATE"}``).
        name: the table's name in the Delta metadata (the view's name).
        row_keys: the key of each column in the rows, where it differs from the column's
            name (``{"_resource_key": "k"}``).
        row_group_rows: rows per Parquet row group (and per batch held in memory).
        target_file_bytes: a data file is closed past this size.
        compression: the Parquet codec (``snappy``, Delta's default; ``zstd``...).
    """

    def __init__(
        self,
        path: Any,
        columns: Sequence[ColumnLike],
        *,
        options: TypeOptions | None = None,
        tags: Mapping[str, str] | None = None,
        name: str | None = None,
        row_keys: Mapping[str, str] | None = None,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES,
        compression: str = "snappy",
    ) -> None:
        if row_group_rows < 1:
            raise ValueError(f"row_group_rows must be at least 1, not {row_group_rows}")
        self.path: StoragePath = as_path(path)
        options = options or TypeOptions()
        tags = tags or {}
        self.columns = [
            column_type(c.name, c.type, bool(c.collection), options, tags.get(c.name))
            for c in columns
        ]
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise TableError(f"column names repeat: {names}")
        self.schema = schema_of(self.columns)
        self.row_keys = [(row_keys or {}).get(n, n) for n in names]
        self.name = name
        self.row_group_rows = row_group_rows
        self.target_file_bytes = target_file_bytes
        self.compression = compression

    def snapshot(self) -> delta.Snapshot | None:
        """The table's current version, or None when there is no table yet."""
        return delta.read_snapshot(self.path)

    def write(
        self,
        rows: Iterable[Mapping[str, Any]] | Iterable[Sequence[Any]],
        *,
        replace_keys: Collection[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        tuples: bool = False,
    ) -> TableResult:
        """Write ``rows`` as the table's next version and return what was done.

        ``replace_keys`` None: the rows *are* the table (an overwrite; a first write creates
        it). Otherwise a merge into the existing table: ``rows`` are added and the earlier
        rows whose ``KEY_COLUMN`` is in ``replace_keys`` dropped. ``replace_keys`` is read
        after ``rows`` is exhausted, so a generator of rows may fill it as it goes.
        ``tuples``: each row is a tuple of the values in column order (no dict per row).

        Raises:
            TableError: a value that does not fit its column, a merge into a table that does
                not exist or whose columns differ, a log this provider cannot continue.
                Nothing is committed then.
        """
        previous = self.snapshot()
        merge = replace_keys is not None
        if merge:
            self._check_mergeable(previous)
        files = _ParquetFiles(
            self.path,
            self.schema,
            target_file_bytes=self.target_file_bytes,
            compression=self.compression,
        )
        removes: list[delta.DataFile] = []
        removed_rows = 0
        try:
            new_rows = 0
            keys = None if tuples else self.row_keys
            for batch in _batches(rows, self.columns, keys, self.row_group_rows):  # type: ignore[arg-type]
                files.write(batch)
                new_rows += batch.num_rows
            if merge:
                # After the rows: ``replace_keys`` may be filled while they are read.
                assert previous is not None and replace_keys is not None
                removes, removed_rows = self._drop_keys(previous, replace_keys, files)
            files.close_file()
            if not merge and previous is not None:
                removes = list(previous.files.values())
                removed_rows = previous.rows
            params = {"mode": "Merge" if merge else "Overwrite", **(parameters or {})}
            version = delta.commit(
                self.path,
                previous,
                schema=self.schema,
                adds=files.done,
                removes=removes,
                operation="MERGE" if merge else "WRITE",
                parameters=params,
                name=self.name,
            )
        except BaseException:
            files.discard()
            raise
        kept = previous.rows - removed_rows if merge and previous is not None else 0
        return TableResult(
            path=str(self.path),
            version=version,
            mode="merge" if merge else "overwrite",
            rows_written=new_rows,
            rows_removed=removed_rows,
            rows=kept + new_rows,
            files=len(files.done),
            bytes=sum(f.size for f in files.done),
            columns=[c.name for c in self.columns],
        )

    def _check_mergeable(self, previous: delta.Snapshot | None) -> None:
        if previous is None:
            raise TableError(
                f"no table at {self.path} to apply an incremental export to: write the full "
                "export first"
            )
        if KEY_COLUMN not in self.schema.names:
            raise TableError(f"a merge needs the key column {KEY_COLUMN!r} in the table")
        if previous.schema_string != delta.schema_string(self.schema):
            raise TableError(
                f"the table at {self.path} has other columns or types than this view now has: "
                "write a full export to replace it"
            )

    def _drop_keys(
        self, previous: delta.Snapshot, keys: Collection[str], files: _ParquetFiles
    ) -> tuple[list[delta.DataFile], int]:
        """Rewrite the files holding a row of ``keys`` without those rows; returns the files
        replaced and how many rows were dropped. Row groups are read one at a time."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if not keys:
            return [], 0
        value_set = pa.array(list(keys), pa.string())
        removes: list[delta.DataFile] = []
        dropped = 0
        for data_file in previous.files.values():
            with (self.path / data_file.path).open("rb") as handle:
                parquet = pq.ParquetFile(handle)
                # The key column alone first: most files of a large table hold no changed key.
                hits = {
                    group
                    for group in range(parquet.num_row_groups)
                    if pc.any(
                        pc.is_in(
                            parquet.read_row_group(group, columns=[KEY_COLUMN]).column(0),
                            value_set=value_set,
                        )
                    ).as_py()
                }
                if not hits:
                    continue
                removes.append(data_file)
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group)
                    if group in hits:
                        keep = pc.invert(pc.is_in(table.column(KEY_COLUMN), value_set=value_set))
                        before = table.num_rows
                        table = table.filter(keep)
                        dropped += before - table.num_rows
                    for batch in table.cast(self.schema).to_batches():
                        files.write(batch)
        return removes, dropped
