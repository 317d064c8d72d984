"""Atomic file output over local paths and object stores, and an NDJSON record writer.

A file is written under a hidden temporary sibling name (``.{name}.partial-{random}``) and
moved to its final name only when writing succeeded; on failure the temporary file is
deleted. So a reader (or the next task) never mistakes the output of a failed run for a
complete file.

Paths may be ``pathlib.Path`` objects or pathlib-like objects over fsspec filesystems
(Airflow's ``ObjectStoragePath``, ``upath.UPath``): anything with ``name``, ``parent``,
``with_name()``, ``open()`` and ``unlink()``; fsspec-backed ones also have ``fs`` and
``path``. On a local filesystem the final move is an atomic ``rename``; on object stores it
is a server-side copy followed by a delete, so a reader may briefly see both names, but never
a partial file under the final name.

This module imports no Airflow.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

PARTIAL_MARKER = ".partial-"
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_WRITE_MODES = frozenset({"w", "wb", "wt"})

# ``Any`` on purpose: pathlib.Path, ObjectStoragePath and UPath share this duck type but no
# common base class.
StoragePath = Any


def as_path(path: str | os.PathLike[str] | StoragePath) -> StoragePath:
    """A path object for ``path``: URLs (``s3://...``) become ``upath.UPath``, plain strings
    ``pathlib.Path``; path objects are returned unchanged."""
    if isinstance(path, str):
        if "://" in path:
            from upath import UPath  # lazy: only needed for URL strings

            return UPath(path)
        return pathlib.Path(path)
    return path


def is_local(path: StoragePath) -> bool:
    """Whether ``path`` lives on the local filesystem (where renames are atomic)."""
    if isinstance(path, pathlib.PurePath) and not hasattr(path, "fs"):
        return True
    return str(getattr(path, "protocol", "") or "") in _LOCAL_PROTOCOLS


def partial_name(name: str) -> str:
    """The temporary name a file called ``name`` is written under (random per call)."""
    return f".{name}{PARTIAL_MARKER}{secrets.token_hex(6)}"


def is_partial_name(name: str) -> bool:
    """Whether ``name`` is a temporary name made by ``partial_name``."""
    return name.startswith(".") and PARTIAL_MARKER in name


def _move(source: StoragePath, target: StoragePath) -> None:
    """Move ``source`` over ``target`` (replacing it)."""
    fs = getattr(source, "fs", None)
    if fs is not None:
        # fsspec: a local filesystem renames (atomic); object stores copy then delete.
        fs.mv(source.path, target.path)
    else:
        os.replace(source, target)


def _remove_quietly(path: StoragePath) -> None:
    try:
        path.unlink(missing_ok=True)
    except Exception:  # cleanup must not hide the error that got us here
        log.warning("Could not delete the temporary file %s", path, exc_info=True)


class AtomicFile:
    """One output file written under a temporary name and moved into place on ``commit()``.

    Args:
        path: the final path (``pathlib.Path``, ``ObjectStoragePath``, ``UPath`` or string).
        mode: ``"wb"`` (default) or ``"w"``/``"wt"`` for text.
        encoding: text encoding for text modes (default UTF-8).
        make_parents: create missing parent directories on local filesystems. Object stores
            have no directories to create.

    Use as a context manager (commits on success, discards on error) or call ``open()``,
    then ``commit()`` or ``discard()`` yourself, e.g. to commit several files together.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | StoragePath,
        mode: str = "wb",
        *,
        encoding: str | None = None,
        make_parents: bool = True,
    ) -> None:
        if mode not in _WRITE_MODES:
            raise ValueError(f"mode must be one of {sorted(_WRITE_MODES)}, not {mode!r}")
        self.path: StoragePath = as_path(path)
        self.mode = mode
        self.encoding = None if "b" in mode else (encoding or "utf-8")
        self.make_parents = make_parents
        self.temp_path: StoragePath = self.path.with_name(partial_name(self.path.name))
        self._handle: IO[Any] | None = None
        self._done = False

    def __repr__(self) -> str:
        return f"AtomicFile({str(self.path)!r})"

    @property
    def handle(self) -> IO[Any]:
        """The open file object (opening it on first use)."""
        return self._handle if self._handle is not None else self.open()

    def open(self) -> IO[Any]:
        """Open the temporary file for writing and return the file object."""
        if self._done:
            raise ValueError(f"{self!r} was already committed or discarded")
        if self._handle is None:
            if self.make_parents and is_local(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.encoding is None:
                self._handle = self.temp_path.open(self.mode)
            else:
                self._handle = self.temp_path.open(self.mode, encoding=self.encoding)
        return self._handle

    def commit(self) -> StoragePath:
        """Close the file and move it to its final name; returns the final path.

        A file that was never opened is created empty (the caller asked for this output).
        """
        if self._done:
            raise ValueError(f"{self!r} was already committed or discarded")
        try:
            self.handle.close()
            _move(self.temp_path, self.path)
        except BaseException:
            self.discard()
            raise
        self._done = True
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary file; the final name is left untouched. Idempotent."""
        if self._done:
            return
        self._done = True
        if self._handle is not None:
            try:
                self._handle.close()
            except Exception:  # e.g. an object-store upload failing on close
                log.warning("Could not close the temporary file %s", self.temp_path, exc_info=True)
            _remove_quietly(self.temp_path)

    def __enter__(self) -> IO[Any]:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str] | StoragePath,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    make_parents: bool = True,
) -> Iterator[IO[Any]]:
    """Write a file that appears under its final name only if the ``with`` block succeeds.

    Example::

        with atomic_writer(ObjectStoragePath("s3://conn@bucket/out/Patient.ndjson")) as f:
            f.write(b"...")

    Args:
        path: the final path (``pathlib.Path``, ``ObjectStoragePath``, ``UPath`` or string).
        mode: ``"wb"`` (default) or ``"w"``/``"wt"`` for text.
        encoding: text encoding for text modes (default UTF-8).
        make_parents: create missing parent directories on local filesystems.

    Yields:
        The open file object (of the temporary file).

    Raises:
        Whatever the block raised; the temporary file is deleted first and any existing
        file at the final name is left as it was.
    """
    with AtomicFile(path, mode, encoding=encoding, make_parents=make_parents) as handle:
        yield handle


def remove_partials(directory: str | os.PathLike[str] | StoragePath) -> list[str]:
    """Delete temporary files left in ``directory`` by killed processes; returns their names.

    Only call this when no other writer can be using the directory.
    """
    directory = as_path(directory)
    removed = []
    try:
        children = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for child in children:
        if is_partial_name(child.name):
            _remove_quietly(child)
            removed.append(child.name)
    return removed


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
    Committing is one move per file, so a crash *during* commit can leave some files moved
    and others not; each moved file is still complete.

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
        """Move every file to its final name; returns what was written, in creation order.

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
        """Delete every temporary file not yet committed."""
        for atomic in self._files.values():
            atomic.discard()

    def __enter__(self) -> NdjsonFileSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
