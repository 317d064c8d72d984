"""The completed export's manifest: the files to download and what they need.

This module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_backendauth.core.errors import BulkExportError

FILE_KINDS = ("output", "error", "deleted")


@dataclass(frozen=True)
class ManifestEntry:
    """One file listed in the manifest."""

    kind: str
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class BulkManifest:
    """The completed export's manifest.

    Attributes:
        transaction_time: the server's ``transactionTime`` (the next incremental ``_since``).
        requires_access_token: whether file downloads need the bearer token.
        output, error, deleted: the listed files.
        next_url: the ``link`` with ``relation: next`` (Bulk Data 3.0 partial manifests): more
            files are listed there, so this manifest alone is never the whole export.
        organized_by: ``outputOrganizedBy`` (``organizeOutputBy`` exports): output files hold
            blocks led by header lines.
        expires: the status answer's ``Expires`` header, when it had one (files are fetched
            right away; it is logged and kept in the summary).
        raw: the manifest as received (``extension`` and any other field pass through to
            ``manifest.json`` untouched).
    """

    transaction_time: str | None
    request: str | None
    requires_access_token: bool
    output: tuple[ManifestEntry, ...]
    error: tuple[ManifestEntry, ...]
    deleted: tuple[ManifestEntry, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)
    next_url: str | None = None
    organized_by: str | None = None
    expires: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, expires: str | None = None) -> BulkManifest:
        """Parse a manifest; raises ``BulkExportError`` when it is unusable."""
        if not isinstance(body, Mapping) or not isinstance(body.get("output"), list):
            raise BulkExportError("The export manifest has no 'output' list.")
        lists: dict[str, tuple[ManifestEntry, ...]] = {}
        for kind in FILE_KINDS:
            items = body.get(kind) or []
            if not isinstance(items, list):
                raise BulkExportError(f"The export manifest's {kind!r} is not a list.")
            entries = []
            for position, item in enumerate(items):
                if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
                    raise BulkExportError(
                        f"The export manifest's {kind}[{position}] has no 'url' string."
                    )
                count = item.get("count")
                entries.append(
                    ManifestEntry(
                        kind=kind,
                        type=str(item.get("type") or ""),
                        url=item["url"],
                        count=count if isinstance(count, int) and count >= 0 else None,
                    )
                )
            lists[kind] = tuple(entries)
        requires = body.get("requiresAccessToken")
        return cls(
            transaction_time=_str_or_none(body.get("transactionTime")),
            request=_str_or_none(body.get("request")),
            # Missing: assume a token is needed (it still goes to allowed origins only).
            requires_access_token=requires if isinstance(requires, bool) else True,
            output=lists["output"],
            error=lists["error"],
            deleted=lists["deleted"],
            raw=dict(body),
            next_url=_next_link(body.get("link")),
            organized_by=_str_or_none(body.get("outputOrganizedBy")),
            expires=expires,
        )

    @property
    def entries(self) -> tuple[ManifestEntry, ...]:
        return self.output + self.error + self.deleted


def _next_link(links: Any) -> str | None:
    """The ``url`` of the ``link`` entry whose ``relation`` is ``next``. A malformed ``link``
    is refused: skipping it silently would truncate the export."""
    if links is None:
        return None
    if not isinstance(links, list):
        raise BulkExportError("The export manifest's 'link' is not a list.")
    for position, link in enumerate(links):
        if not isinstance(link, Mapping):
            raise BulkExportError(f"The export manifest's link[{position}] is not an object.")
        if link.get("relation") == "next":
            url = link.get("url")
            if not isinstance(url, str) or not url.strip():
                raise BulkExportError("The export manifest's 'next' link has no 'url' string.")
            return url.strip()
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
