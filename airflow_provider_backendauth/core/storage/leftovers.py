"""What killed earlier writers left behind, found and dropped before a file is written again.

Locally: temporary siblings (``.{name}.partial-*``). On S3: incomplete multipart uploads of
the key (invisible, but stored and billed until aborted). Azure and GCS have nothing to
drop: what a killed upload left there is invisible and expires (docs/object-storage.md).
``Leftovers`` lists each folder once (one listing for a download of N files, not N) and
touches nothing but the leftovers of the files asked about.

Limits: only call it when no other writer can be writing the files asked about (a live
writer's temporary file or upload looks the same as a dead one's). An S3-compatible server
that does not implement ``ListMultipartUploads`` (s3rver answers 501 NotImplemented) cannot
say what is left: nothing is aborted there and the write goes on, with a warning (a bucket
lifecycle rule, ``AbortIncompleteMultipartUpload``, cleans up instead).

This module imports no Airflow.
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import suppress
from typing import Any

from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.storage.paths import (
    PARTIAL_MARKER,
    StoragePath,
    as_path,
    is_local,
    is_partial_name,
    remove_quietly,
)

log = get_logger(__name__)


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
            remove_quietly(child)
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
                remove_quietly(child)
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
            try:
                answer = fs.call_s3(
                    "list_multipart_uploads",
                    Bucket=bucket,
                    Prefix=prefix + (self._only or ""),
                    **markers,
                )
            except OSError as exc:
                if exc.errno != errno.ENOSYS:  # s3fs's translation of NotImplemented
                    raise
                log.warning(
                    "The S3 server at %s cannot list incomplete multipart uploads (%s): "
                    "uploads that killed runs left under s3://%s/%s are not aborted here; a "
                    "bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them",
                    getattr(fs, "endpoint_url", None) or "the configured endpoint",
                    exc.strerror or "NotImplemented",
                    bucket,
                    prefix,
                )
                return found
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
