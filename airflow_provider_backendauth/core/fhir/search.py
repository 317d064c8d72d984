"""FHIR search: page by page through a searchset Bundle's ``next`` links.

``FhirClient(session, base_url).search("Observation", {"patient": "123"}, count=100)``
returns a ``FhirSearch``: iterate it to get one ``SearchPage`` per Bundle, with the matched
resources apart from the ``_include``d ones. Only the current page is held in memory.

A ``next`` link may be absolute or relative to the base URL. A link to another origin than
the ones the session's token is meant for is refused (``FhirError``): following it would
either leak the token (it does not: ``BackendAuth`` strips it) or silently read another
server's data unauthenticated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from airflow_provider_backendauth.core.counting import byte_counter
from airflow_provider_backendauth.core.errors import (
    ConfigurationError,
    FhirError,
    ResponseTooLargeError,
)
from airflow_provider_backendauth.core.fhir.outcome import operation_outcome_text
from airflow_provider_backendauth.core.fhir.rest import RestClient
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.retry import RetryPolicy
from airflow_provider_backendauth.core.urls import display_url, join_url, origin_of

log = get_logger(__name__)

#: Search parameters: a mapping (list/tuple values repeat the parameter) or (name, value) pairs.
SearchParams = Mapping[str, Any] | Sequence[tuple[str, Any]]

FHIR_JSON = "application/fhir+json"
#: Generous: a page of 1,000 large resources is a few MB. Raise with ``max_page_bytes``.
DEFAULT_MAX_PAGE_BYTES = 128 * 1024 * 1024
#: A 1e6-entry Bundle took 656 MB; servers cap _count far below this.
DEFAULT_MAX_PAGE_ENTRIES = 100_000
#: Seconds between two progress lines of one search (at INFO; DEBUG logs every page).
PROGRESS_LOG_SECONDS = 10.0


@dataclass
class SearchPage:
    """One page (Bundle) of search results.

    Attributes:
        number: 1 for the first page.
        url: the URL the page was fetched from.
        matches: entries with ``search.mode`` ``match`` (or no mode): what was searched for.
        included: entries added by ``_include``/``_revinclude`` (``search.mode`` ``include``).
        outcomes: OperationOutcome entries (``search.mode`` ``outcome``): server warnings.
        total: the Bundle's ``total`` when the server sent it.
        next_url: the absolute URL of the next page, or None on the last page (also None
            when ``max_pages``/``max_resources`` stopped the search here).
        bundle: the Bundle as received (its entries are the same objects as above; the
            matches of a page cut by ``max_resources`` are still all in it).
    """

    number: int
    url: str
    matches: list[dict[str, Any]]
    included: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    total: int | None = None
    next_url: str | None = None
    bundle: dict[str, Any] = field(default_factory=dict, repr=False)


def normalise_params(params: SearchParams | None) -> list[tuple[str, str]]:
    """Search parameters as ``(name, value)`` pairs, in order.

    List/tuple values repeat the parameter (``{"_id": ["a", "b"]}`` → ``_id=a&_id=b``; use
    ``"a,b"`` for FHIR's OR); None values are dropped; booleans become ``true``/``false``.
    """
    if params is None:
        return []
    items: Iterable[tuple[str, Any]] = (
        params.items() if isinstance(params, Mapping) else list(params)
    )
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None:
                continue
            pairs.append((str(name), ("true" if v else "false") if isinstance(v, bool) else str(v)))
    return pairs


def resolve_link(link: str, *, base_url: str, current_url: str) -> str:
    """The absolute URL of a Bundle link.

    Absolute links are kept; ``/path`` is relative to the server's origin, ``?query`` to the
    current page, anything else to the FHIR base URL (as FHIR defines relative references).
    """
    link = link.strip()
    if urlsplit(link).scheme:
        return link
    if link.startswith(("/", "?")):
        return urljoin(current_url if link.startswith("?") else base_url, link)
    return join_url(base_url, link)


def _bundle_loader(max_entries: int, what: str, url: str) -> Callable[[bytes], Any]:
    """``json.loads`` that stops once more than ``max_entries`` Bundle entries (objects with a
    ``resource``) were decoded: memory stays bounded by the limit, not by the page.

    Every JSON object starts with a ``{`` byte (JSON has no escape for structure), so a page
    with no more ``{`` than the limit cannot exceed it and is parsed without the per-object
    hook, which made a page of 100 Observations cost a third more CPU than ``json.loads``.
    Only a page that might exceed the limit pays for counting its entries as they decode.
    """

    def loads(data: bytes) -> Any:
        if byte_counter()[1](data, b"{", len(data)) <= max_entries:
            return json.loads(data)
        count = 0

        def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            nonlocal count
            obj = dict(pairs)
            if "resource" in obj:
                count += 1
                if count > max_entries:
                    raise ResponseTooLargeError(
                        f"{what}: the page from {display_url(url)} holds more than "
                        f"{max_entries} Bundle entries. If that is legitimate, raise "
                        "'max_page_entries' (or ask for smaller pages with 'count')."
                    )
            return obj

        return json.loads(data, object_pairs_hook=hook)

    return loads


def _split_entries(
    bundle: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    matches: list[dict[str, Any]] = []
    included: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, dict):
            continue
        mode = (entry.get("search") or {}).get("mode")
        if mode == "include":
            included.append(resource)
        elif mode == "outcome" or (
            mode is None and resource.get("resourceType") == "OperationOutcome"
        ):
            outcomes.append(resource)
        else:
            matches.append(resource)
    return matches, included, outcomes


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, Mapping) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


class FhirSearch:
    """One run of a search; iterate it (once) for its pages.

    The counters are updated as pages arrive, so after (or during) iteration they describe
    the run: ``pages``, ``resources`` (matches kept), ``included``, ``elapsed`` seconds,
    ``truncated`` (stopped by ``max_pages``/``max_resources`` while more results existed),
    ``total`` (the server's ``Bundle.total`` from the first page, if any).
    """

    def __init__(
        self,
        rest: RestClient,
        base_url: str,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        max_pages: int | None,
        max_resources: int | None,
        allowed_origins: frozenset[str],
        limits: tuple[int, int] = (DEFAULT_MAX_PAGE_BYTES, DEFAULT_MAX_PAGE_ENTRIES),
    ) -> None:
        self.max_page_bytes, self.max_page_entries = limits
        self._rest = rest
        self.base_url = base_url
        self.resource_type = resource_type
        self.params = params
        self.max_pages = max_pages
        self.max_resources = max_resources
        self.allowed_origins = allowed_origins
        self.pages = 0
        self.resources = 0
        self.included = 0
        self.total: int | None = None
        self.truncated = False
        self.elapsed = 0.0
        self._started = False

    def __repr__(self) -> str:
        return (
            f"FhirSearch({self.resource_type!r}, pages={self.pages}, resources={self.resources},"
            f" included={self.included})"
        )

    def summary(self) -> dict[str, Any]:
        """The counters as a small JSON-serialisable dict."""
        return {
            "resource_type": self.resource_type,
            "pages": self.pages,
            "resources": self.resources,
            "included": self.included,
            "total": self.total,
            "truncated": self.truncated,
            "elapsed_seconds": round(self.elapsed, 3),
        }

    def resources_iter(self) -> Iterator[dict[str, Any]]:
        """The matched resources one by one, across pages (includes dropped)."""
        for page in self:
            yield from page.matches

    def __iter__(self) -> Iterator[SearchPage]:
        if self._started:
            raise RuntimeError("a FhirSearch can be iterated only once; call search() again")
        self._started = True
        started = next_log = time.monotonic()
        url: str | None = join_url(self.base_url, self.resource_type)
        params: list[tuple[str, str]] | None = self.params
        previous: str | None = None
        while url is not None:
            page = self._fetch(url, params, number=self.pages + 1)
            params = None  # next links carry the whole query
            self.pages = page.number
            if self.total is None:
                self.total = page.total
            if self.max_resources is not None:
                room = max(0, self.max_resources - self.resources)
                more = len(page.matches) > room or (
                    len(page.matches) == room and page.next_url is not None
                )
                if more:
                    # The page's included resources are kept whole, even those only the
                    # dropped matches referred to.
                    self.truncated = True
                    del page.matches[room:]
                    page.next_url = None
            if self.max_pages is not None and page.number >= self.max_pages and page.next_url:
                self.truncated = True
                page.next_url = None
            self.resources += len(page.matches)
            self.included += len(page.included)
            now = time.monotonic()
            self.elapsed = now - started
            # The first page, then one line per PROGRESS_LOG_SECONDS: a line per page costs
            # ~0.26 ms in a task's log handler, a tenth of a fast server's page.
            if now >= next_log or log.isEnabledFor(logging.DEBUG):
                next_log = now + PROGRESS_LOG_SECONDS
                self._log_progress(page.number)
            previous, url = url, page.next_url
            if url is not None and url == previous:
                raise FhirError(
                    f"{self.resource_type} search: the server's next link on page {page.number} "
                    "points back to the same page; stopping to avoid an endless loop."
                )
            yield page
        if self.pages > 1:
            self._log_progress(self.pages, "done: ")
        if self.truncated:
            log.info(
                "%s search stopped early (max_pages=%s, max_resources=%s): more results exist",
                self.resource_type,
                self.max_pages,
                self.max_resources,
            )

    def _log_progress(self, number: int, prefix: str = "") -> None:
        log.info(
            "%s search: %spage %d, %s resources so far (+%d included), %.1f s elapsed",
            self.resource_type,
            prefix,
            number,
            self.resources if self.total is None else f"{self.resources} of {self.total}",
            self.included,
            self.elapsed,
        )

    def _fetch(self, url: str, params: list[tuple[str, str]] | None, *, number: int) -> SearchPage:
        what = f"{self.resource_type} search (page {number})"
        body, response = self._rest.get_json(
            url,
            params=params,
            headers={"Accept": FHIR_JSON},
            what=what,
            max_bytes=self.max_page_bytes,
            max_bytes_setting="max_page_bytes",
            loads=_bundle_loader(self.max_page_entries, what, url),
        )
        if not isinstance(body, Mapping) or body.get("resourceType") != "Bundle":
            kind = body.get("resourceType") if isinstance(body, Mapping) else type(body).__name__
            raise FhirError(
                f"{what}: expected a Bundle from {response.url}, got {kind!r}. Check the base "
                "URL: it must be the FHIR base (the URL that serves /metadata).",
                status_code=response.status_code,
            )
        matches, included, outcomes = _split_entries(body)
        for outcome in outcomes:
            text, _ = operation_outcome_text(outcome)
            if text:
                log.warning("%s: the server says: %s", what, text)
        next_url = _next_link(body)
        if next_url is not None:
            next_url = resolve_link(next_url, base_url=self.base_url, current_url=response.url)
            if origin_of(next_url) not in self.allowed_origins:
                raise FhirError(
                    f"{what}: the next link points to {origin_of(next_url)}, not to the FHIR "
                    f"server ({', '.join(sorted(self.allowed_origins))}); refusing to follow it. "
                    "If that server is legitimately part of this API, add it to the "
                    "connection's 'allowed_hosts' extra."
                )
        total = body.get("total")
        return SearchPage(
            number=number,
            url=response.url,
            matches=matches,
            included=included,
            outcomes=outcomes,
            total=total if isinstance(total, int) else None,
            next_url=next_url,
            bundle=dict(body),
        )


class FhirClient:
    """A FHIR R4 REST client over an authenticated ``requests.Session``.

    Args:
        session: usually ``BackendAuthHook.get_session()`` (token attached and renewed).
        base_url: the FHIR base URL (serves ``/metadata``).
        retry: retry policy for transient failures (429, 5xx, dropped connections).
        timeout: per-request timeout in seconds.
        allowed_origins: origins a ``next`` link may point to; default: those the session's
            ``BackendAuth`` sends the token to, or else the base URL's origin.
        retry_args: ``tenacity`` arguments overriding the policy (see ``RestClient``).
        max_page_bytes: the largest decoded search page read (a gzip bomb or a runaway page
            ends in a clear ``ResponseTooLargeError``, not a ``MemoryError``).
        max_page_entries: the most Bundle entries one page may hold (counted while parsing,
            so memory stays bounded by it).
    """

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        allowed_origins: Iterable[str] | None = None,
        retry_args: Mapping[str, Any] | None = None,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        max_page_entries: int = DEFAULT_MAX_PAGE_ENTRIES,
    ) -> None:
        self.max_page_bytes = max_page_bytes
        self.max_page_entries = max_page_entries
        if not base_url:
            raise ConfigurationError("A FHIR base URL is needed (the connection's host).")
        self.base_url = base_url.rstrip("/")
        self.rest = RestClient(
            session, self.base_url, retry=retry, timeout=timeout, retry_args=retry_args
        )
        if allowed_origins is None:
            allowed_origins = getattr(session.auth, "allowed_origins", None) or ()
        origins = {origin_of(o) for o in allowed_origins}
        origins.add(origin_of(self.base_url))
        self.allowed_origins = frozenset(origins)

    def search(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        count: int | None = None,
        max_pages: int | None = None,
        max_resources: int | None = None,
    ) -> FhirSearch:
        """Start a search (no request is sent until the result is iterated).

        Args:
            resource_type: e.g. ``"Patient"``.
            params: search parameters (see ``normalise_params``).
            count: page size (``_count``), overriding one in ``params``.
            max_pages: stop after this many pages.
            max_resources: stop once this many matched resources were returned (the last page
                is cut to fit).

        Raises:
            ConfigurationError: a bad resource type or limit.
        """
        resource_type = resource_type.strip()
        if not resource_type or not resource_type[0].isupper() or not resource_type.isalnum():
            raise ConfigurationError(
                f"{resource_type!r} is not a FHIR resource type (e.g. 'Patient', 'Observation')."
            )
        for name, value in (("count", count), ("max_pages", max_pages)):
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be at least 1, not {value}.")
        if max_resources is not None and max_resources < 0:
            raise ConfigurationError(f"max_resources must be at least 0, not {max_resources}.")
        pairs = normalise_params(params)
        if count is not None:
            pairs = [(k, v) for k, v in pairs if k != "_count"] + [("_count", str(count))]
        return FhirSearch(
            self.rest,
            self.base_url,
            resource_type,
            pairs,
            max_pages=max_pages,
            max_resources=max_resources,
            allowed_origins=self.allowed_origins,
            limits=(self.max_page_bytes, self.max_page_entries),
        )

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """GET one resource by id."""
        body, _ = self.rest.get_json(
            f"{resource_type}/{resource_id}", headers={"Accept": FHIR_JSON}
        )
        if not isinstance(body, dict):
            raise FhirError(f"GET {resource_type}/{resource_id} did not return a JSON object.")
        return body
