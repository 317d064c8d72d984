"""Files that appear under their final name complete or not at all, written once, in place.

Local paths (``pathlib.Path``, ``file://``): the file is written under a hidden temporary
sibling name (``.{name}.partial-{random}``) and renamed over the final name when complete.
A rename within one directory is atomic, so a reader never sees half a file.

Object stores (S3, GCS, Azure, fsspec memory, ...): there is no rename (fsspec's ``mv`` is a
server-side copy plus a delete, so every byte would be stored twice and a crash between the
two leaves litter). Instead each file is written *once, under its final key*, as an
uncommitted fsspec write (``fs.open(path, "wb", autocommit=False)``): the data is uploaded
while it is written (S3: multipart upload parts), and the object appears only on
``commit()`` (S3: ``CompleteMultipartUpload``); ``discard()`` aborts the upload. A failed or
killed run therefore leaves no object under the final name, and none under any other name.
A file that stays smaller than one part is kept in memory and stored by one ``PUT`` at
commit (what s3fs does for small files too): one request for a small state record.

Paths may be ``pathlib.Path`` objects or pathlib-like objects over fsspec filesystems
(Airflow's ``ObjectStoragePath``, ``upath.UPath``): anything with ``name``, ``parent``,
``with_name()``, ``open()`` and ``unlink()``; fsspec-backed ones also have ``fs`` and
``path``.

This module imports no Airflow.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

from airflow_provider_backendauth.core.redact import get_logger

log = get_logger(__name__)

PARTIAL_MARKER = ".partial-"
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_WRITE_MODES = frozenset({"w", "wb", "wt"})
# Bytes kept in memory before an object-store upload starts; also the multipart part size.
# 16 MiB parts: memory stays at about parallel * 16 MiB, and S3's 10,000-part limit allows
# files up to 160 GB. (S3's minimum part size is 5 MiB.)
DEFAULT_PART_SIZE = 16 * 2**20

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
    """The temporary local name a file called ``name`` is written under (random per call)."""
    return f".{name}{PARTIAL_MARKER}{secrets.token_hex(6)}"


def is_partial_name(name: str) -> bool:
    """Whether ``name`` is a temporary name made by ``partial_name``."""
    return name.startswith(".") and PARTIAL_MARKER in name


def _move(source: StoragePath, target: StoragePath) -> None:
    """Rename local ``source`` over ``target`` (atomic within a directory)."""
    fs = getattr(source, "fs", None)
    if fs is not None:
        fs.mv(source.path, target.path)  # LocalFileSystem.mv is os.rename here
    else:
        os.replace(source, target)


def _remove_quietly(path: StoragePath) -> None:
    try:
        path.unlink(missing_ok=True)
    except Exception:  # cleanup must not hide the error that got us here
        log.warning("Could not delete the temporary file %s", path, exc_info=True)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class _UncommittedUpload(io.RawIOBase):
    """A binary writer for one object-store file that becomes visible only on ``commit()``.

    Bytes are buffered in memory up to ``part_size``; past that an fsspec file is opened with
    ``autocommit=False`` (S3: a multipart upload) and receives the buffer and everything
    after it, part by part. ``commit()`` completes the upload (or, for a small file, stores
    the buffer with one ``pipe_file``); ``discard()`` aborts it. Nothing is ever copied.
    """

    def __init__(self, fs: Any, path: str, part_size: int) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self.part_size = part_size
        self._buffer: bytearray | None = bytearray()
        self._file: Any = None  # the fsspec file, once the data outgrew the buffer
        # fsspec's memory filesystem publishes a file as soon as it is opened, whatever
        # ``autocommit`` says; since it keeps everything in memory anyway, buffer it all.
        self._buffer_only = "memory" in _protocols(fs)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"write to a closed upload of {self.path}")
        view = memoryview(data).cast("B")
        if self._file is not None:
            self._file.write(view)
        else:
            assert self._buffer is not None
            self._buffer += view
            if len(self._buffer) >= self.part_size and not self._buffer_only:
                self._start_upload()
        self.size += len(view)
        return len(view)

    def _start_upload(self) -> None:
        file = self.fs.open(self.path, "wb", autocommit=False, block_size=self.part_size)
        # fsspec also queues every autocommit=False file on the filesystem's (shared,
        # cached) transaction object; this file is committed or discarded here, never by a
        # transaction someone else may run on the same filesystem instance.
        with suppress(Exception):
            self.fs.transaction.files.remove(file)
        self._file = file
        buffer, self._buffer = self._buffer, None
        file.write(bytes(buffer or b""))

    def commit(self) -> None:
        """Make the file visible under its name (complete the upload)."""
        if self.closed:
            raise ValueError(f"the upload of {self.path} was already finished")
        try:
            if self._file is None:
                self.fs.pipe_file(self.path, bytes(self._buffer or b""))
            else:
                self._file.close()  # uploads the last part; the object is still invisible
                self._file.commit()
        finally:
            self._buffer = None
            super().close()

    def discard(self) -> None:
        """Abort the upload: no object appears. Idempotent."""
        if self.closed:
            return
        file, self._file, self._buffer = self._file, None, None
        super().close()
        if file is not None:
            try:
                file.discard()  # S3: AbortMultipartUpload
            finally:
                # The discarded file has no buffer left; closing it only marks it closed
                # (so garbage collection does not try to upload anything).
                with suppress(Exception):
                    file.close()

    def close(self) -> None:
        # Closing is not committing: an AtomicFile decides which of the two happens.
        # (io.TextIOWrapper closes its buffer when it is closed; that must not upload.)
        pass

    @property
    def parts_uploaded(self) -> int:
        """How many multipart parts were sent so far (0 while the data is still buffered)."""
        return len(getattr(self._file, "parts", None) or [])


class AtomicFile:
    """One output file that appears under its final name only on ``commit()``.

    Locally it is written under a temporary sibling name and renamed on commit; on object
    stores it is an uncommitted upload to the final key (see the module docstring).

    Args:
        path: the final path (``pathlib.Path``, ``ObjectStoragePath``, ``UPath`` or string).
        mode: ``"wb"`` (default) or ``"w"``/``"wt"`` for text.
        encoding: text encoding for text modes (default UTF-8).
        make_parents: create missing parent directories on local filesystems. Object stores
            have no directories to create.
        part_size: object stores: bytes buffered before the upload starts, and the size of
            each multipart part.

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
    ) -> None:
        if mode not in _WRITE_MODES:
            raise ValueError(f"mode must be one of {sorted(_WRITE_MODES)}, not {mode!r}")
        self.path: StoragePath = as_path(path)
        self.mode = mode
        self.encoding = None if "b" in mode else (encoding or "utf-8")
        self.make_parents = make_parents
        self.part_size = part_size
        self.local = is_local(self.path)
        # Local files only: object-store files are written under their final key.
        self.temp_path: StoragePath | None = (
            self.path.with_name(partial_name(self.path.name)) if self.local else None
        )
        self._upload: _UncommittedUpload | None = None
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
        """Object stores: bytes already sent to the store in parts (kept on resume)."""
        upload = self._upload
        if upload is None or upload._file is None:
            return 0
        return int(getattr(upload._file, "offset", 0) or 0)

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
                upload = self._upload = _UncommittedUpload(
                    self.path.fs, self.path.path, self.part_size
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
        The open file object.

    Raises:
        Whatever the block raised; what was written is dropped first and any existing
        file at the final name is left as it was.
    """
    with AtomicFile(path, mode, encoding=encoding, make_parents=make_parents) as handle:
        yield handle


def remove_partials(directory: str | os.PathLike[str] | StoragePath) -> list[str]:
    """Delete temporary local files left in ``directory`` by killed processes; returns their
    names. (Object stores keep no temporary objects; see ``discard_leftovers``.)

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


def discard_leftovers(path: str | os.PathLike[str] | StoragePath) -> str | None:
    """Drop what a killed earlier writer of ``path`` left behind; returns what it was (for a
    log line), or None when there was nothing.

    Locally: the file's temporary siblings. On S3: incomplete multipart uploads of the key
    (invisible, but stored and billed until aborted). Their data cannot be continued by this
    process (S3 does not let a part be read before the upload completes, and the download
    checks every byte it writes), so the file starts again.

    One listing per call: for many files use one ``Leftovers``, which lists each folder once.
    Only call this when no other writer can be writing ``path``.
    """
    path = as_path(path)
    return Leftovers(only=path.name).discard(path)


class Leftovers:
    """What killed earlier writers left, listed once per folder and then asked (and dropped)
    file by file: a download run of N files into one folder makes one listing, not N.

    ``discard(path)`` drops what ``discard_leftovers(path)`` would: locally the temporary
    siblings (``.{name}.partial-*``) of that file; on S3 the incomplete multipart uploads of
    exactly its key. Nothing else in a folder is touched (other files' temporary names,
    uploads of other keys), and temporary files this run creates after a folder's listing are
    not in it, so they are never taken for leftovers. Thread-safe: download threads share one.

    Args:
        only: list just this file name's leftovers (one file; S3 then lists by its key).

    Only use it when no other writer can be writing the files asked about.
    """

    def __init__(self, *, only: str | None = None) -> None:
        self._only = only
        self._lock = threading.Lock()
        # folder -> final name -> what is left for it (local paths, or S3 upload ids)
        self._folders: dict[str, dict[str, list[Any]]] = {}
        self.listings = 0  # list requests made (tests: must not grow with the files)

    def discard(self, path: StoragePath) -> str | None:
        """Drop what was left for ``path``; returns what it was (for a log line), or None
        when there was nothing."""
        path = as_path(path)
        folder = path.parent
        with self._lock:
            found = self._folders.get(str(folder))
            if found is None:
                found = self._folders[str(folder)] = self._list(folder)
            left = found.pop(path.name, [])
        if not left:
            return None
        if is_local(path):
            sizes = 0
            for child in left:
                with suppress(OSError):
                    sizes += child.stat().st_size
                _remove_quietly(child)
            return f"{len(left)} temporary file(s), {sizes} bytes"
        fs = path.fs
        bucket, key, _ = fs.split_path(path.path)
        for upload_id in left:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        return f"{len(left)} incomplete multipart upload(s)"

    def _wanted(self, name: str) -> bool:
        return self._only is None or name == self._only

    def _list(self, folder: StoragePath) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        if is_local(folder):
            self.listings += 1
            try:
                children = list(folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                return found
            for child in children:
                if is_partial_name(child.name):
                    final = child.name[1 : child.name.rindex(PARTIAL_MARKER)]
                    if self._wanted(final):
                        found.setdefault(final, []).append(child)
            return found
        fs = folder.fs
        if not hasattr(fs, "call_s3"):
            return found  # other stores expire uncommitted uploads themselves (GCS, Azure)
        bucket, key, _ = fs.split_path(folder.path)
        prefix = f"{key.rstrip('/')}/" if key else ""
        markers: dict[str, str] = {}
        while True:  # S3 answers at most 1,000 uploads a page
            self.listings += 1
            answer = fs.call_s3(
                "list_multipart_uploads",
                Bucket=bucket,
                Prefix=prefix + (self._only or ""),
                **markers,
            )
            for upload in answer.get("Uploads", []):
                name = str(upload.get("Key", ""))[len(prefix) :]
                # This folder's own files only (a deeper key is another folder's).
                if "/" not in name and self._wanted(name):
                    found.setdefault(name, []).append(upload["UploadId"])
            if not answer.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": answer.get("NextKeyMarker", ""),
                "UploadIdMarker": answer.get("NextUploadIdMarker", ""),
            }


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
