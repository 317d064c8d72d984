"""File names derived from server data: the one sanitiser.

Every output name built from something a server chose (a manifest's ``type``, a resource's
``resourceType``) goes through ``safe_type_name``, so no server string can leave the
destination (``../``), hide a file (``.x``), or name a device.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_NAME_LENGTH = 64


def safe_type_name(resource_type: str) -> str:
    """A file-name-safe form of a server-given type: ASCII letters, digits, ``_`` and ``-``
    only, at most 64 characters. A hostile type such as ``../../etc/passwd`` becomes
    ``etc_passwd``; an empty one ``Unknown``."""
    cleaned = _UNSAFE.sub("_", str(resource_type)).strip("_-")[:MAX_NAME_LENGTH]
    return cleaned or "Unknown"
