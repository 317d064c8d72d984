"""A file that appears under its final name complete or not at all: ``AtomicFile``.

Guarantee: until ``commit()`` the final name is untouched (an existing file there stays as
it was); after ``discard()``, or an error in the ``with`` block, nothing was published.
Locally the file is written under a temporary sibling (``paths.partial_name``) and renamed
over the final name, which is atomic within one directory. On object stores, which have no
rename (fsspec's ``mv`` is a server-side copy plus a delete), it is an uncommitted upload to
the final key (``uploads``).

Limits: a process killed before ``discard()`` leaves a temporary local file or an
incomplete S3 upload; ``leftovers`` drops them on the next run.

This module imports no Airflow.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.paths import (
    StoragePath,
    as_path,
    is_local,
    partial_name,
    remove_quietly,
)
from airflow_provider_backendauth.core.storage.uploads import DEFAULT_PART_SIZE, UncommittedUpload

log = get_logger(__name__)

_WRITE_MODES = frozenset({"w", "wb", "wt"})


def _move(source: StoragePath, target: StoragePath) -> None:
    """Rename local ``source`` over ``target`` (atomic within a directory)."""
    fs = getattr(source, "fs", None)
    if fs is not None:
        fs.mv(source.path, target.path)  # LocalFileSystem.mv is os.rename here
    else:
        os.replace(source, target)


class AtomicFile:
    """One output file that appears under its final name only on ``commit()``.

    Locally it is written under a temporary sibling name and renamed on commit; on object
    stores it is an uncommitted upload to the final key (see ``uploads``).

    Args:
        path: the final path (``pathlib.Path``, ``ObjectStoragePath``, ``UPath`` or string).
        mode: ``"wb"`` (default) or ``"w"``/``"wt"`` for text.
        encoding: text encoding for text modes (default UTF-8).
        make_parents: create missing parent directories on local filesystems. Object stores
            have no directories to create.
        part_size: object stores: bytes buffered before the upload starts, and the size of
            each multipart part.
        parts_in_flight: S3: parts uploading at once while the next one fills (default
            ``s3_parts.DEFAULT_PARTS_IN_FLIGHT``); memory is at most ``(parts_in_flight + 1) *
            part_size``.

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
        part_size: int = DEFAULT_PART_SIZE,
        parts_in_flight: int | None = None,
    ) -> None:
        if mode not in _WRITE_MODES:
            raise ValueError(f"mode must be one of {sorted(_WRITE_MODES)}, not {mode!r}")
        self.path: StoragePath = as_path(path)
        self.mode = mode
        self.encoding = None if "b" in mode else (encoding or "utf-8")
        self.make_parents = make_parents
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.local = is_local(self.path)
        # Local files only: object-store files are written under their final key.
        self.temp_path: StoragePath | None = (
            self.path.with_name(partial_name(self.path.name)) if self.local else None
        )
        self._upload: UncommittedUpload | None = None
        self._handle: IO[Any] | None = None
        self._done = False

    def __repr__(self) -> str:
        return f"AtomicFile({str(self.path)!r})"

    @property
    def handle(self) -> IO[Any]:
        """The open file object (opening it on first use)."""
        return self._handle if self._handle is not None else self.open()

    @property
    def bytes_uploaded(self) -> int:
        """Object stores: bytes the store has acknowledged in parts (kept on resume)."""
        return 0 if self._upload is None else self._upload.bytes_uploaded

    def open(self) -> IO[Any]:
        """Open the file for writing and return the file object."""
        if self._done:
            raise ValueError(f"{self!r} was already committed or discarded")
        if self._handle is None:
            if self.local:
                assert self.temp_path is not None
                if self.make_parents:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.encoding is None:
                    self._handle = self.temp_path.open(self.mode)
                else:
                    self._handle = self.temp_path.open(self.mode, encoding=self.encoding)
            else:
                upload = self._upload = UncommittedUpload(
                    self.path.fs, self.path.path, self.part_size, self.parts_in_flight
                )
                handle: Any = upload
                if self.encoding is not None:
                    handle = io.TextIOWrapper(handle, encoding=self.encoding)
                self._handle = handle
        assert self._handle is not None
        return self._handle

    def commit(self) -> StoragePath:
        """Close the file and make it appear under its final name; returns the final path.

        A file that was never opened is created empty (the caller asked for this output).
        """
        if self._done:
            raise ValueError(f"{self!r} was already committed or discarded")
        try:
            self.handle.close()  # text mode: flushes into the upload; never commits
            if self._upload is not None:
                self._upload.commit()
            else:
                _move(self.temp_path, self.path)
        except BaseException:
            self.discard()
            raise
        self._done = True
        return self.path

    def discard(self) -> None:
        """Drop what was written; the final name is left untouched. Idempotent."""
        if self._done:
            return
        self._done = True
        if self._upload is not None:
            try:
                self._upload.discard()
            except Exception:  # cleanup must not hide the error that got us here
                log.warning("Could not abort the upload of %s", self.path, exc_info=True)
        elif self._handle is not None:
            try:
                self._handle.close()
            except Exception:
                log.warning("Could not close the temporary file %s", self.temp_path, exc_info=True)
            remove_quietly(self.temp_path)

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
        The open file object.

    Raises:
        Whatever the block raised; what was written is dropped first and any existing
        file at the final name is left as it was.
    """
    with AtomicFile(path, mode, encoding=encoding, make_parents=make_parents) as handle:
        yield handle
