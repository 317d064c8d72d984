"""Files that appear under their final name complete or not at all, written once, in place.

Local paths (``pathlib.Path``, ``file://``): the file is written under a hidden temporary
sibling name (``.{name}.partial-{random}``) and renamed over the final name when complete.
A rename within one directory is atomic, so a reader never sees half a file.

Object stores (S3, GCS, Azure, fsspec memory, ...): there is no rename (fsspec's ``mv`` is a
server-side copy plus a delete, so every byte would be stored twice and a crash between the
two leaves litter). Instead each file is written *once, under its final key*, as an
uncommitted upload: the data is uploaded while it is written (S3: multipart upload parts,
several at a time; other stores: ``fs.open(path, "wb", autocommit=False)``), and the object
appears only on ``commit()`` (S3: ``CompleteMultipartUpload``); ``discard()`` aborts the
upload. A failed or killed run therefore leaves no object under the final name, and none
under any other name.
A file that stays smaller than one part is kept in memory and stored by one ``PUT`` at
commit (what s3fs does for small files too): one request for a small state record.

Paths may be ``pathlib.Path`` objects or pathlib-like objects over fsspec filesystems
(Airflow's ``ObjectStoragePath``, ``upath.UPath``): anything with ``name``, ``parent``,
``with_name()``, ``open()`` and ``unlink()``; fsspec-backed ones also have ``fs`` and
``path``.

This module imports no Airflow.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_backendauth.core.errors import StorageError
from airflow_provider_backendauth.core.redact import get_logger, short_error

log = get_logger(__name__)

PARTIAL_MARKER = ".partial-"
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_WRITE_MODES = frozenset({"w", "wb", "wt"})
# Bytes kept in memory before an object-store upload starts; also the multipart part size.
# S3's 10,000-part limit allows files up to 160 GB with 16 MiB parts (its minimum is 5 MiB).
DEFAULT_PART_SIZE = 16 * 2**20
# S3: parts of one file uploading while the next one fills. The writer waits when this many
# are in flight, so a file being written holds at most (DEFAULT_PARTS_IN_FLIGHT + 1) *
# DEFAULT_PART_SIZE bytes: 48 MiB, and a download of `parallel` files at once (4 by
# default) that many times, 192 MiB. Measured with benchmarks/s3.py (docs/deployment.md):
# 2 overlaps the part uploads with the download; 3 and 4 were no faster, and 4 files times
# 2 parts stay within s3fs's pool of 10 connections (botocore's max_pool_connections),
# where more would only queue. Other stores upload one part at a time (fsspec's file).
DEFAULT_PARTS_IN_FLIGHT = 2

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


def _is_s3(fs: Any) -> bool:
    """Whether ``fs`` is s3fs's (or a subclass): async S3 calls on fsspec's event loop."""
    return callable(getattr(fs, "_call_s3", None)) and getattr(fs, "loop", None) is not None


@dataclass(eq=False)
class _Part:
    """One S3 part on its way; ``settled`` is set once its upload has really ended."""

    number: int
    size: int
    settled: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[dict[str, Any]] | None = None
    entry: dict[str, Any] | None = None  # for CompleteMultipartUpload, once stored


class _S3Parts:
    """One S3 multipart upload whose parts go up while the next part is being written.

    s3fs's own file sends its parts one after the other from the writing thread (the
    download waits for each), and its concurrent part upload exists only for local files
    (``put_file``). Here each part is a task on the event loop s3fs already runs every call
    on (``fs._call_s3``, so its credentials, retries, endpoint and extra arguments apply):
    no thread is started, so none can outlive the upload.

    - At most ``limit`` parts are in flight; ``send`` waits for a free slot (backpressure:
      the memory bound).
    - Parts are numbered in the order they are sent and listed in that order on completion,
      whatever order their uploads finish in.
    - The first failure is kept and raised by every later ``send`` and by ``complete``.
    - ``abort`` cancels the parts in flight, waits until they have ended, then aborts the
      upload, so no part request can still be arriving after the abort.
    """

    def __init__(self, fs: Any, path: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"parts in flight must be at least 1, not {limit}")
        self.fs = fs
        self.path = path
        self.bucket, self.key, _ = fs.split_path(path)
        self._loop: asyncio.AbstractEventLoop = fs.loop
        self._slots = threading.BoundedSemaphore(limit)
        self._parts: list[_Part] = []
        self._failure: StorageError | None = None
        # Set while the writer waits for a free slot: storage, not the download, is slower.
        self.waiting = threading.Event()
        self.waits = 0
        answer = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key)
        self.upload_id: str = answer["UploadId"]

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self.fs.call_s3(method, **kwargs)
        except Exception as exc:
            raise self._error(method, exc) from exc

    def _error(self, what: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"S3 {what} of s3://{self.bucket}/{self.key} failed: {short_error(exc)}",
            # A denial needs a person (credentials, bucket policy); anything else may pass.
            retryable=not isinstance(exc, PermissionError),
        )

    @property
    def stored(self) -> list[_Part]:
        """The parts the store has acknowledged so far."""
        return [p for p in self._parts if p.entry is not None]

    @property
    def in_flight(self) -> int:
        return sum(1 for p in self._parts if not p.settled.is_set())

    def check(self) -> None:
        """Raise the failure of any part sent so far (again on every call)."""
        if self._failure is not None:
            raise self._failure

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Upload ``data`` as the next part, waiting first while ``limit`` parts are in flight.

        The part's copy is made after the wait, so a waiting writer holds no extra part.
        """
        self.check()
        # Released by _settle, on the loop, when a part has ended.
        if not self._slots.acquire(blocking=False):
            self.waits += 1
            self.waiting.set()
            self._slots.acquire()
            self.waiting.clear()
        if self._failure is not None:  # the part we waited for failed
            self._slots.release()
            raise self._failure
        # botocore wraps bytes in a BytesIO that shares them, and aiohttp's getbuffer() then
        # unshares it: a second copy of every part, made on the event loop that every
        # upload shares. A BytesIO filled by write() owns its memory: one copy, made here.
        body = io.BytesIO()
        size = body.write(data)
        body.seek(0)
        part = _Part(len(self._parts) + 1, size)
        self._parts.append(part)
        self._loop.call_soon_threadsafe(self._start, part, body)

    def _start(self, part: _Part, body: io.BytesIO) -> None:  # on the loop
        part.task = asyncio.ensure_future(self._upload(part.number, body))
        part.task.add_done_callback(lambda task: self._settle(part, task))

    async def _upload(self, number: int, body: io.BytesIO) -> dict[str, Any]:
        answer = await self.fs._call_s3(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
        )
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if "ChecksumSHA256" in answer:  # what s3fs's own file lists, too
            entry["ChecksumSHA256"] = answer["ChecksumSHA256"]
        return entry

    def _settle(self, part: _Part, task: asyncio.Task[dict[str, Any]]) -> None:  # on the loop
        # A done callback runs even for a task cancelled before it started, so every slot
        # taken by ``send`` is given back exactly once.
        try:
            if not task.cancelled():
                if (exc := task.exception()) is not None:
                    if self._failure is None:
                        self._failure = self._error(f"upload of part {part.number}", exc)
                else:
                    part.entry = task.result()
        finally:
            part.settled.set()
            self._slots.release()

    @staticmethod
    def _cancel(part: _Part) -> None:  # on the loop
        if part.task is not None:
            part.task.cancel()

    def _wait(self) -> None:
        for part in self._parts:
            part.settled.wait()

    def complete(self) -> None:
        """Wait for every part, then make the object visible (``CompleteMultipartUpload``)."""
        self._wait()
        self.check()
        parts = [p.entry for p in self._parts]
        self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        self.fs.invalidate_cache(self.path)  # listings cached before now lack the object

    def abort(self) -> None:
        """Cancel the parts in flight, wait until they have ended, abort the upload."""
        for part in self._parts:
            if not part.settled.is_set():
                # Runs after the part's _start (the loop takes callbacks in order).
                self._loop.call_soon_threadsafe(self._cancel, part)
        self._wait()
        self._call(
            "abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
        )


def _close_unflushed(file: Any) -> None:
    """Close an fsspec write file without its final flush (no upload, no commit).

    fsspec's ``close()`` flushes with ``final=True`` unless the file was force-flushed
    already, and adlfs commits the staged blocks on that final flush whatever ``autocommit``
    says (Azure has no abort: ``discard()`` does nothing there). Closing a discarded Azure
    upload the usual way would publish the partial data under the final name, over any
    existing blob (tests/storage). Marking it force-flushed with an empty buffer makes
    ``close()`` only release the file's client.
    """
    with suppress(Exception):
        file.buffer = io.BytesIO()
        file.forced = True
        file.close()


class _UncommittedUpload(io.RawIOBase):
    """A binary writer for one object-store file that becomes visible only on ``commit()``.

    Bytes are buffered in memory up to ``part_size``; past that the upload starts. On S3 it
    is a multipart upload fed part by part, up to ``parts_in_flight`` parts uploading while
    the next one fills (``_S3Parts``); on other stores an fsspec file opened with
    ``autocommit=False`` receives the buffer and everything after it. ``commit()``
    completes the upload (or, for a small file, stores the buffer with one ``pipe_file``);
    ``discard()`` aborts it. Nothing is ever copied server-side.
    """

    def __init__(
        self, fs: Any, path: str, part_size: int, parts_in_flight: int | None = None
    ) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self.part_size = part_size
        self.parts_in_flight = (
            DEFAULT_PARTS_IN_FLIGHT if parts_in_flight is None else parts_in_flight
        )
        self._buffer: bytearray | None = bytearray()
        self._file: Any = None  # the fsspec file, once the data outgrew the buffer
        self._s3: _S3Parts | None = None  # S3's multipart upload, likewise
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
            buffer = self._buffer
            assert buffer is not None
            if self._s3 is not None:
                self._s3.check()  # a part that failed meanwhile fails this write
            buffer += view
            if len(buffer) >= self.part_size and not self._buffer_only:
                if self._s3 is None and self._file is None:
                    self._start_upload()
                if self._s3 is not None:
                    self._send_full_parts()
        self.size += len(view)
        return len(view)

    def _start_upload(self) -> None:
        if _is_s3(self.fs):
            self._s3 = _S3Parts(self.fs, self.path, self.parts_in_flight)
            return
        file = self.fs.open(self.path, "wb", autocommit=False, block_size=self.part_size)
        # fsspec also queues every autocommit=False file on the filesystem's (shared,
        # cached) transaction object; this file is committed or discarded here, never by a
        # transaction someone else may run on the same filesystem instance.
        with suppress(Exception):
            self.fs.transaction.files.remove(file)
        self._file = file
        buffer, self._buffer = self._buffer, None
        file.write(bytes(buffer or b""))

    def _send_full_parts(self) -> None:
        assert self._s3 is not None and self._buffer is not None
        buffer = self._buffer
        while len(buffer) >= self.part_size:
            # Parts of exactly part_size (some S3-compatible stores require equal parts).
            # send() copies the part (its own memory while it uploads); deleting a
            # bytearray's head only moves its start, so the buffer keeps its allocation.
            part = memoryview(buffer)[: self.part_size]
            try:
                self._s3.send(part)
            finally:
                part.release()  # the buffer cannot shrink while a view of it exists
            del buffer[: self.part_size]

    def commit(self) -> None:
        """Make the file visible under its name (complete the upload)."""
        if self.closed:
            raise ValueError(f"the upload of {self.path} was already finished")
        try:
            if self._s3 is not None:
                if self._buffer:  # the last part (the only one allowed below 5 MiB)
                    self._s3.send(self._buffer)
                self._buffer = None
                self._s3.complete()
            elif self._file is None:
                self.fs.pipe_file(self.path, bytes(self._buffer or b""))
            else:
                self._file.close()  # uploads the last part; the object is still invisible
                self._file.commit()
            self._s3 = self._file = None  # committed: nothing left to abort
        finally:
            self._buffer = None
            super().close()

    def discard(self) -> None:
        """Abort the upload: no object appears. Idempotent."""
        if self.closed and self._s3 is None and self._file is None:
            return
        file, self._file, self._buffer = self._file, None, None
        s3, self._s3 = self._s3, None
        super().close()
        if s3 is not None:
            s3.abort()  # also after a failed commit: the upload may still be open
        if file is not None:
            try:
                file.discard()  # GCS: cancels the resumable upload; Azure: nothing
            finally:
                _close_unflushed(file)

    def __del__(self) -> None:
        # Dropped unfinished (neither committed nor discarded): the store's file must not
        # publish itself from its own finalizer (adlfs's closes an unclosed file, and that
        # commits its blocks). No request: what was sent stays uncommitted, as after a kill.
        if not self.closed and self._file is not None:
            _close_unflushed(self._file)

    def close(self) -> None:
        # Closing is not committing: an AtomicFile decides which of the two happens.
        # (io.TextIOWrapper closes its buffer when it is closed; that must not upload.)
        pass

    @property
    def parts_uploaded(self) -> int:
        """How many multipart parts the store has acknowledged (0 while still buffered)."""
        if self._s3 is not None:
            return len(self._s3.stored)
        return len(getattr(self._file, "parts", None) or [])

    @property
    def bytes_uploaded(self) -> int:
        """Bytes in parts the store has acknowledged."""
        if self._s3 is not None:
            return sum(p.size for p in self._s3.stored)
        return int(getattr(self._file, "offset", 0) or 0)


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
        parts_in_flight: S3: parts uploading at once while the next one fills (default
            ``DEFAULT_PARTS_IN_FLIGHT``); memory is at most ``(parts_in_flight + 1) *
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
                upload = self._upload = _UncommittedUpload(
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
    checks every byte it writes), so the file starts again. Azure and GCS have nothing to
    drop: what a killed upload left there is invisible and expires (docs/object-storage.md).

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
            # Nothing to drop elsewhere. Azure: a killed upload's blocks stay uncommitted
            # (invisible) until the name's next commit drops them, or a week passes; there
            # is no abort. GCS: an unfinished resumable upload expires a week after it began.
            return found
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
