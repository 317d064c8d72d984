"""Uncommitted uploads through fsspec's own files: Azure Blob, GCS and the other non-S3 stores.

Guarantee: a file opened by ``open_uncommitted`` publishes nothing until its ``commit()``;
``discard()`` plus ``close_unflushed`` leave no object under the name (GCS cancels the
resumable upload; Azure has no abort, so the staged blocks stay uncommitted and invisible
until the name's next commit drops them, or a week passes).

Limits: one part uploads at a time (fsspec's file); fsspec's memory filesystem publishes on
open whatever ``autocommit`` says, so ``uploads`` never opens one there (it buffers instead).

This module imports no Airflow.
"""

from __future__ import annotations

import io
from contextlib import suppress
from typing import Any


def open_uncommitted(fs: Any, path: str, block_size: int) -> Any:
    """An fsspec write file for ``path`` that this caller alone commits or discards."""
    file = fs.open(path, "wb", autocommit=False, block_size=block_size)
    # fsspec also queues every autocommit=False file on the filesystem's (shared,
    # cached) transaction object; this file is committed or discarded by its caller, never
    # by a transaction someone else may run on the same filesystem instance.
    with suppress(Exception):
        fs.transaction.files.remove(file)
    return file


def close_unflushed(file: Any) -> None:
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
