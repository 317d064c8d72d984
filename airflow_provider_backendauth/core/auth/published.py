"""The JWKS a client publishes at a URL (its ``jku``; Epic, Redox, NHS England fetch it there):
writing it to an object store or a file, and reading it back to check a kid is in it.

Guarantees:
- only public keys are ever written: a document holding a secret member (``d``, ``k``, the
  RSA CRT parts, ...) is refused, whether it is the one already published or the new key;
- publishing merges: the keys already published stay (rotation needs old and new side by
  side), a kid taken by a different key is refused (``keygen.merge_jwks``);
- the object is written whole (``fs.pipe_file``: one PUT on object stores, so a vendor never
  fetches half a document) with ``Content-Type: application/json`` where the store keeps one
  (S3, GCS, Azure Blob); local files get none;
- every read is bounded (``MAX_JWKS_BYTES``), from the store and from the ``jku`` URL (the
  latter through the transport: ``core/http``, no redirect to another origin).

Limits: the store's own access rules decide who may read the document; making it public (a
bucket policy, a CDN in front) is the user's step, as the rotation guide says.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_backendauth.core.auth.keygen import merge_jwks, refuse_secret_members
from airflow_provider_backendauth.core.errors import BackendAuthError, KeyLoadError

MAX_JWKS_BYTES = 1024 * 1024
JWKS_CONTENT_TYPE = "application/json"


def _filesystem(path: Any) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for an ObjectStoragePath/UPath or a local path."""
    fs = getattr(path, "fs", None)
    if fs is not None:
        return fs, str(path.path)
    import fsspec

    return fsspec.filesystem("file"), str(path)


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


def content_type_options(fs: Any, content_type: str) -> dict[str, Any]:
    """How each store's ``pipe_file`` is told the object's Content-Type."""
    protocols = _protocols(fs)
    if protocols & {"s3", "s3a"}:
        return {"ContentType": content_type}
    if protocols & {"gs", "gcs"}:
        return {"content_type": content_type}
    if protocols & {"abfs", "abfss", "az"}:
        from azure.storage.blob import ContentSettings

        return {"content_settings": ContentSettings(content_type=content_type)}
    return {}


def read_published(path: Any) -> dict[str, Any] | None:
    """The JWKS at ``path``, or None when there is none yet.

    Raises:
        KeyLoadError: larger than ``MAX_JWKS_BYTES``, not JSON, or not a JWKS.
    """
    fs, where = _filesystem(path)
    if not fs.exists(where):
        return None
    size = fs.size(where)
    if size is not None and size > MAX_JWKS_BYTES:
        raise KeyLoadError(f"The published JWKS {path} is {size} bytes; a JWKS is far smaller.")
    data = fs.cat_file(where, start=0, end=MAX_JWKS_BYTES + 1)
    return _jwks_document(data, str(path))


def _jwks_document(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_JWKS_BYTES:
        raise KeyLoadError(f"The JWKS at {where} is larger than {MAX_JWKS_BYTES} bytes.")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyLoadError(f"The JWKS at {where} is not JSON.") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyLoadError(f'The JWKS at {where} is not a JWKS (a JSON object with "keys").')
    return document


def publish_jwks(
    path: Any,
    new: dict[str, Any],
    *,
    replace: bool = False,
    content_type: str = JWKS_CONTENT_TYPE,
) -> dict[str, Any]:
    """Write ``new``'s public keys to ``path``, merged into what is published there (unless
    ``replace``: then exactly ``new``, e.g. to retire an old key). Returns what was written.

    Raises:
        KeyLoadError: a secret member anywhere, a kid clash, an unreadable existing document.
    """
    refuse_secret_members(new.get("keys", []), "The key set to publish")
    existing = None if replace else read_published(path)
    document = new if existing is None else merge_jwks(existing, new)
    fs, where = _filesystem(path)
    data = (json.dumps(document, indent=2) + "\n").encode()
    fs.pipe_file(where, data, **content_type_options(fs, content_type))
    return document


def fetch_jwks(url: str, *, session: Any, timeout: float) -> dict[str, Any]:
    """The JWKS a vendor would fetch from ``url`` (a connection's ``jku``), read bounded,
    redirects only within the URL's origin.

    Raises:
        BackendAuthError: unreachable, not 200, too large, or not a JWKS.
    """
    import requests

    from airflow_provider_backendauth.core.http.requests_auth import get_confined
    from airflow_provider_backendauth.core.network import describe_network_error

    try:
        response, body = get_confined(
            session,
            url,
            [url],
            timeout=timeout,
            max_bytes=MAX_JWKS_BYTES,
            what="The JWKS at jku",
        )
    except requests.RequestException as exc:
        raise BackendAuthError(
            f"Could not fetch the JWKS at {url}: {describe_network_error(exc)}."
        ) from None
    if response.status_code != 200:
        raise BackendAuthError(f"The JWKS URL {url} answered HTTP {response.status_code}.")
    return _jwks_document(body, url)


def kids(document: dict[str, Any]) -> list[str]:
    """The kids of a JWKS's keys, in order (keys without one are skipped)."""
    return [str(k["kid"]) for k in document.get("keys", []) if isinstance(k, dict) and "kid" in k]
