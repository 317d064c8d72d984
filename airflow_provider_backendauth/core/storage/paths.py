"""Where a file goes: the path duck type, whether it is local, and temporary local names.

Paths may be ``pathlib.Path`` objects or pathlib-like objects over fsspec filesystems
(Airflow's ``ObjectStoragePath``, ``upath.UPath``): anything with ``name``, ``parent``,
``with_name()``, ``open()`` and ``unlink()``; fsspec-backed ones also have ``fs`` and
``path``. Only a local path can be renamed atomically (within one directory), so
``is_local`` decides how ``atomic.AtomicFile`` commits. Temporary local names start with a
dot and carry ``PARTIAL_MARKER`` plus a random suffix, so ``leftovers`` can recognise them
and two writers never share one.

This module imports no Airflow.
"""

from __future__ import annotations

import os
import pathlib
import secrets
from typing import Any

from airflow_provider_backendauth.core.redact import get_logger

log = get_logger(__name__)

PARTIAL_MARKER = ".partial-"
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})

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


def remove_quietly(path: StoragePath) -> None:
    """Delete a temporary file, logging (not raising) a failure: cleanup must not hide the
    error that led to it."""
    try:
        path.unlink(missing_ok=True)
    except Exception:
        log.warning("Could not delete the temporary file %s", path, exc_info=True)
