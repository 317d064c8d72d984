"""NDJSON outputs: a record writer, and a set of files committed together or not at all.

Guarantee: each file of an ``NdjsonFileSet`` is an ``atomic.AtomicFile``, so it appears
complete or not at all; on error none is committed.

Limits: committing is one rename (or one upload completion) per file, so a crash *during*
commit can leave some files committed and others not; each committed file is complete.

This module imports no Airflow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from airflow_provider_backendauth.core.storage.atomic import AtomicFile
from airflow_provider_backendauth.core.storage.paths import StoragePath, as_path


class NdjsonWriter:
    """Writes dict records as NDJSON lines (compact UTF-8 JSON, one per line) to a binary file.

    Attributes:
        records: how many records were written.
        bytes: how many bytes were written.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.records = 0
        self.bytes = 0

    def write(self, record: Mapping[str, Any]) -> int:
        """Write one record; returns the number of bytes written."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        self._handle.write(data)
        self.records += 1
        self.bytes += len(data)
        return len(data)

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Write every record; returns the number of bytes written."""
        return sum(self.write(record) for record in records)


@dataclass(frozen=True)
class WrittenFile:
    """One committed output file (JSON-serialisable through ``as_dict``)."""

    path: str
    records: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "bytes": self.bytes}


class NdjsonFileSet:
    """Several NDJSON outputs written together: all are committed, or none is.

    Files are opened lazily on first ``writer(name)``; ``create`` names files committed even
    when no record was written (an empty NDJSON file says "searched, found nothing").

    Use as a context manager: on success every file is committed (``written`` lists them), on
    error all are discarded.
    Committing is one rename (or one upload completion) per file, so a crash *during*
    commit can leave some files committed and others not; each committed file is complete.

    Args:
        directory: the directory (local path, ``ObjectStoragePath`` or URL string).
        create: file names to create even if empty.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | StoragePath, *, create: Iterable[str] = ()
    ) -> None:
        self.directory: StoragePath = as_path(directory)
        self._files: dict[str, AtomicFile] = {}
        self._writers: dict[str, NdjsonWriter] = {}
        self.written: list[WrittenFile] | None = None
        for name in create:
            self.writer(name)

    def writer(self, name: str) -> NdjsonWriter:
        """The writer for file ``name`` in the directory, opening it on first use."""
        writer = self._writers.get(name)
        if writer is None:
            atomic = AtomicFile(self.directory / name, "wb")
            self._files[name] = atomic
            writer = self._writers[name] = NdjsonWriter(atomic.open())
        return writer

    @property
    def records(self) -> int:
        return sum(w.records for w in self._writers.values())

    @property
    def bytes(self) -> int:
        return sum(w.bytes for w in self._writers.values())

    def commit(self) -> list[WrittenFile]:
        """Commit every file under its final name; returns what was written, in creation order.

        Calling it again returns the same list.
        """
        if self.written is not None:
            return self.written
        written = []
        try:
            for name, atomic in self._files.items():
                writer = self._writers[name]
                path = atomic.commit()
                written.append(WrittenFile(str(path), writer.records, writer.bytes))
        except BaseException:
            self.discard()
            raise
        self.written = written
        return written

    def discard(self) -> None:
        """Drop every file not yet committed."""
        for atomic in self._files.values():
            atomic.discard()

    def __enter__(self) -> NdjsonFileSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
