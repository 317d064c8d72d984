"""Bulk Data file downloads: the parallel scheduler, per-file retries, Range resume, verification.

Each file is streamed in chunks to a temporary sibling name and renamed only when complete,
so memory stays flat whatever the file size and the destination never holds a partial file
under a final name. Lines are counted on the fly and checked against the manifest's
``count``. gzip is accepted (``Content-Encoding: gzip``, or a gzip body served as is).

Parallel downloads share an adaptive limit: a 429 halves the number of concurrent
downloads, successes grow it back (AIMD), so a throttling server gets fewer connections.

This module owns the decisions: which files to fetch, in how many threads, when an attempt
is retried, resumed with ``Range``, restarted or committed, and whether a finished file is
complete. The pieces it drives live apart, one concept each: the limit
(``adaptive_limit.py``), one file's uncommitted output and counts (``partial_file.py``), the
raw-body reads (``wire.py``, the one module outside ``core/http/`` that reads a body) and the
bounded decoding (``decode.py``).

This module imports no Airflow.
"""

from __future__ import annotations

import errno
import http.client
import ssl
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import NoReturn

import requests
import tenacity
import urllib3

from airflow_provider_backendauth.core.bulk.adaptive_limit import AdaptiveLimit
from airflow_provider_backendauth.core.bulk.decode import (
    DEFAULT_MAX_COMPRESSION_RATIO,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_OUT_SIZE,
    BodyDecoder,
    DecodeLimits,
)
from airflow_provider_backendauth.core.bulk.files import ExportFile, FileResult
from airflow_provider_backendauth.core.bulk.inflaters import gzip_inflater_factory
from airflow_provider_backendauth.core.bulk.partial_file import PartialFile
from airflow_provider_backendauth.core.bulk.protocol import error_details
from airflow_provider_backendauth.core.bulk.wire import Retryable, Wire, error_body, range_start
from airflow_provider_backendauth.core.errors import BulkExportError, CorruptBodyError
from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions
from airflow_provider_backendauth.core.redact import get_logger, redact, short_error
from airflow_provider_backendauth.core.retry import RetryPolicy, parse_retry_after
from airflow_provider_backendauth.core.storage.leftovers import Leftovers
from airflow_provider_backendauth.core.storage.paths import StoragePath
from airflow_provider_backendauth.core.urls import display_url

log = get_logger(__name__)

NDJSON = "application/fhir+ndjson"
FILE_HEADERS = {
    "Accept": f"{NDJSON}, application/ndjson;q=0.9, */*;q=0.1",
    "Accept-Encoding": "gzip, deflate",
}
DEFAULT_CHUNK_SIZE = 1 << 20
# Reads and decoded pieces are at most this big, whatever chunk_size says: a buffer that
# stays in a core's L2 cache while it is received, counted and written measured 1.2-1.6x
# the throughput of a 1 MiB one on plain NDJSON (4 downloads on 2 cores, nginx, loopback).
READ_SIZE = 256 * 1024


# --- downloading --------------------------------------------------------------------------


class BulkDownloader:
    """Downloads export files to a destination, in parallel, with per-file retries.

    Args:
        http: sends the requests (token only to allowed origins, per redirect hop).
        parallel: maximum concurrent downloads (reduced while the server answers 429).
        retry: per-file attempts and backoff; a server's ``Retry-After`` wins, within
            ``retry.max_retry_after``.
        chunk_size: the most bytes per read and per decoded piece (reads are capped at
            ``READ_SIZE``, 256 KiB, a cache-friendly size); memory use stays below about
            ``parallel * chunk_size`` whatever the server sends.
        check_counts: fail a file whose line count differs from the manifest's ``count``,
            or whose final line is not a JSON object (NDJSON).
        stop: set it to abort (``on_kill``).
        max_file_bytes: the most decoded bytes one file may have.
        max_compression_ratio: the most decoded bytes per received byte (bombs).
        inflater: gzip inflater: ``auto`` (the fastest installed), ``isal``, ``zlib-ng``,
            ``zlib``.
    """

    def __init__(
        self,
        http: AuthorizedSessions,
        *,
        parallel: int = 4,
        retry: RetryPolicy | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        check_counts: bool = True,
        stop: threading.Event | None = None,
        read_timeout: float | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
        inflater: str = "auto",
    ) -> None:
        self.http = http
        self.parallel = max(1, parallel)
        self.retry = retry or RetryPolicy(
            attempts=5, initial_wait=1.0, max_wait=30.0, max_retry_after=300.0
        )
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.chunk_size = chunk_size
        self.check_counts = check_counts
        self.stop = stop or threading.Event()
        self.read_timeout = read_timeout
        self.limits = DecodeLimits(
            max_file_bytes=max_file_bytes, max_compression_ratio=max_compression_ratio
        )
        self.inflater, _ = gzip_inflater_factory(inflater)
        self.limit = AdaptiveLimit(self.parallel)
        self.attempts_made = 0
        self._counter_lock = threading.Lock()

    def download(
        self,
        files: Sequence[ExportFile],
        destination: StoragePath,
        *,
        requires_access_token: bool,
        already_done: Callable[[ExportFile], FileResult | None] | None = None,
        on_done: Callable[[ExportFile, FileResult], None] | None = None,
        on_start: Callable[[ExportFile], None] | None = None,
        on_error: Callable[[ExportFile, BaseException], None] | None = None,
    ) -> list[FileResult]:
        """Download ``files`` into ``destination``; returns one result per file, in order.

        Args:
            files: from ``plan_files``.
            destination: the folder.
            requires_access_token: the manifest's ``requiresAccessToken``.
            already_done: returns a result for a file complete from an earlier try (it is
                then not downloaded again), or None.
            on_done: called after each file is complete (record progress durably).
            on_start: called when a file's download starts (the export log).
            on_error: called when a file failed for good (not for the downloads stopped
                because another one failed).

        Raises:
            BulkExportError: a file failed after its retries (the others are stopped).
        """
        results: dict[int, FileResult] = {}
        todo: list[tuple[int, ExportFile]] = []
        for position, file in enumerate(files):
            done = already_done(file) if already_done is not None else None
            if done is not None:
                results[position] = done
            else:
                todo.append((position, file))
        if len(results):
            log.info("%d of %d files are already complete; skipping them", len(results), len(files))
        if todo:
            abort = threading.Event()
            # One listing per folder for the whole run (not one per file: thousands of files
            # would make it quadratic).
            leftovers = Leftovers()

            def run(file: ExportFile) -> FileResult:
                if on_start is not None:
                    on_start(file)
                try:
                    result = self._download_with_retries(
                        file, destination, requires_access_token, abort, leftovers
                    )
                except BaseException as exc:
                    if on_error is not None and not self._stopped(abort):
                        on_error(file, exc)
                    raise
                if on_done is not None:
                    on_done(file, result)
                return result

            workers = min(self.parallel, len(todo))
            with ThreadPoolExecutor(workers, thread_name_prefix="bulk-download") as pool:
                futures: dict[Future[FileResult], int] = {
                    pool.submit(run, file): position for position, file in todo
                }
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failure = next((f.exception() for f in finished if f.exception()), None)
                if failure is not None:
                    abort.set()
                    for future in futures:
                        future.cancel()
                    raise failure
                for future, position in futures.items():
                    results[position] = future.result()
        return [results[i] for i in range(len(files))]

    def download_one(
        self, file: ExportFile, destination: StoragePath, *, requires_access_token: bool
    ) -> FileResult:
        """Download a single file (with retries): what a mapped download task does."""
        return self._download_with_retries(
            file, destination, requires_access_token, threading.Event(), None
        )

    def _stopped(self, abort: threading.Event) -> bool:
        return self.stop.is_set() or abort.is_set()

    def _download_with_retries(
        self,
        file: ExportFile,
        destination: StoragePath,
        requires_access_token: bool,
        abort: threading.Event,
        leftovers: Leftovers | None,
    ) -> FileResult:
        partial = PartialFile(destination / file.name, skip_headers=file.organized)
        # A whole run shares one listing per folder; a single file lists only its own.
        if leftovers is None:
            leftovers = Leftovers(only=partial.target.name)
        leftover = leftovers.discard(partial.target)
        if leftover:
            # A killed earlier try's upload cannot be continued: its data cannot be read
            # back to count lines (S3 parts are unreadable before completion).
            log.warning(
                "%s: dropped what an interrupted earlier try left (%s); downloading it again",
                file.name,
                leftover,
            )
        try:
            return self._attempts(file, partial, requires_access_token, abort)
        finally:
            partial.discard()  # a no-op after a commit

    def _attempts(
        self,
        file: ExportFile,
        partial: PartialFile,
        requires_access_token: bool,
        abort: threading.Event,
    ) -> FileResult:
        attempts = 0

        def attempt() -> FileResult:
            nonlocal attempts
            attempts += 1
            if self._stopped(abort):
                raise BulkExportError(f"Download of {file.name} stopped.")
            self.limit.acquire(self.stop)
            try:
                with self._counter_lock:
                    self.attempts_made += 1
                result = self._fetch(file, partial, requires_access_token, abort)
            except Retryable as exc:
                if exc.throttled:
                    self.limit.throttled()
                raise
            except CorruptBodyError as exc:
                raise Retryable(str(exc)) from None
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise Retryable(f"{type(exc).__name__}: {short_error(exc)}") from None
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, OSError) and not _is_network_error(exc):
                    raise  # a local disk or storage problem: not the server's
                raise Retryable(f"{type(exc).__name__}: {short_error(exc)}") from None
            finally:
                self.limit.release()
            self.limit.succeeded()
            return result

        def sleep(seconds: float) -> None:
            if self.stop.wait(seconds) or abort.is_set():
                raise BulkExportError(f"Download of {file.name} stopped.")

        def before_sleep(state: tenacity.RetryCallState) -> None:
            problem = state.outcome.exception() if state.outcome else None
            log.warning(
                "Download of %s failed (attempt %d of %d: %s); retrying in %.1f s",
                file.name,
                state.attempt_number,
                self.retry.attempts,
                problem,
                state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = tenacity.Retrying(
            sleep=sleep,
            **self.retry.tenacity_kwargs(
                lambda exc: isinstance(exc, Retryable),
                lambda exc: exc.retry_after if isinstance(exc, Retryable) else None,
                before_sleep=before_sleep,
            ),
        )
        try:
            return retrying(attempt)
        except Retryable as problem:
            raise BulkExportError(
                f"Downloading {file.name} from {_shown(file.url)} failed after "
                f"{attempts} attempts; last error: {problem}",
                retryable=True,
            ) from None

    def _fetch(
        self,
        file: ExportFile,
        partial: PartialFile,
        requires_access_token: bool,
        abort: threading.Event,
    ) -> FileResult:
        headers = dict(FILE_HEADERS)
        resuming = partial.resumable and partial.offset > 0
        if resuming:
            # Ask for the rest of the plain representation: the offset counts decoded bytes.
            headers.update({"Range": f"bytes={partial.offset}-", "Accept-Encoding": "identity"})
        else:
            partial.restart("this file cannot be resumed: no Accept-Ranges, or gzip-encoded")
        timeout = self.read_timeout or self.http.timeout
        response = self.http.send(
            "GET",
            file.url,
            with_token=requires_access_token,
            headers=headers,
            stream=True,
            timeout=timeout,
        )
        with response:
            status = response.status_code
            encoding = response.headers.get("Content-Encoding")
            if status == 206 and resuming:
                if range_start(response.headers.get("Content-Range")) != partial.offset or (
                    encoding or "identity"
                ).strip().lower() not in ("identity", ""):
                    partial.restart("the server answered a different byte range")
                    raise Retryable("the server answered a different byte range")
                log.info("Resuming %s at byte %d", file.name, partial.offset)
            elif status == 200:
                # a whole body (even if we asked for the rest)
                partial.restart("the server sent the whole file again")
                partial.resumable = response.headers.get("Accept-Ranges", "").lower() == "bytes"
            else:
                # Keep what was written: the next attempt asks for the rest.
                self._raise_for(file, response, requires_access_token)
            decoder = BodyDecoder(
                encoding,
                sniff_gzip=status == 200,
                limits=self.limits,
                what=f"{file.name} from {_shown(file.url)}",
                already_decoded=partial.offset,
                out_size=min(self.chunk_size, DEFAULT_OUT_SIZE, READ_SIZE),
                inflater=self.inflater,
            )
            try:
                self._receive(file, response, decoder, partial, abort)
            except BaseException:
                # What was written stays for a Range request, unless its offsets are a gzip
                # file's rather than ours.
                if decoder.gzip_file:
                    partial.restart("a gzip file served as is cannot be resumed")
                raise
        tally = partial.tally
        resources = partial.resources
        problem = None
        # An error file's count is informative (servers copy the output's count into it):
        # never a reason to retry a complete body. Output and deleted counts are strict.
        strict = file.kind != "error"
        if strict and self.check_counts and file.count is not None and resources != file.count:
            lines = "resources" if file.organized else "lines"
            problem = (
                f"{file.name} has {resources} {lines} but the manifest's count is {file.count}"
            )
        elif self.check_counts and (reason := tally.final_line_problem()):
            problem = f"{file.name} looks cut short: {reason}"
        if problem:
            partial.restart()
            raise Retryable(problem)
        partial.commit()
        return FileResult(file.name, file.kind, file.type, resources, tally.bytes)

    def _receive(
        self,
        file: ExportFile,
        response: requests.Response,
        decoder: BodyDecoder,
        partial: PartialFile,
        abort: threading.Event,
    ) -> None:
        """Stream the body into ``partial``, decoding it within the limits."""
        wire = Wire(response, min(self.chunk_size, READ_SIZE))
        write = partial.write
        for data, size in wire:
            if self._stopped(abort):
                raise BulkExportError(f"Download of {file.name} stopped.")
            if decoder.transparent:
                decoder.passed(size)
                write(data, size)
            else:
                for piece in decoder.feed(memoryview(data)[:size]):
                    write(piece)
                if decoder.gzip_file:
                    partial.resumable = False  # the gzip file's offsets are not ours
        for piece in decoder.finish():
            write(piece)
        wire.release()

    @staticmethod
    def _raise_for(
        file: ExportFile, response: requests.Response, requires_access_token: bool
    ) -> NoReturn:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        diagnostics, transient = error_details(status, error_body(response))
        message = f"HTTP {status}: {diagnostics}"
        if status == 429:
            raise Retryable(message, retry_after, throttled=True)
        if status in (408, 416, 425) or status >= 500 or transient:
            raise Retryable(message, retry_after)
        if status == 401 and not requires_access_token:
            message += " (the manifest said requiresAccessToken=false, so no token was sent)"
        raise BulkExportError(
            f"Downloading {file.name} from {_shown(file.url)} failed with {message}",
            status_code=status,
            diagnostics=diagnostics,
        )


def _is_network_error(exc: OSError) -> bool:
    """A socket's error rather than the destination's (a full disk is not worth retrying)."""
    return isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)) or (
        exc.errno in _NETWORK_ERRNOS
    )


_NETWORK_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.ENETDOWN}
)


def _shown(url: str) -> str:
    """A URL fit for messages: no query string, no user info, nothing token-shaped."""
    return redact(display_url(url))
