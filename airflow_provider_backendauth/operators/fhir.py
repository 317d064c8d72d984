"""``FhirSearchOperator``: a FHIR search, page by page, into NDJSON files or a small XCom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth._compat import BaseOperator
from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.operators._common import fails_fast, storage_path
from airflow_provider_backendauth.operators._lineage import declare_outlet, emit_search_event

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_backendauth.core.fhir.search import FhirSearch, SearchParams
    from airflow_provider_backendauth.core.storage.ndjson import NdjsonFileSet

INCLUDE_MODES = ("separate", "per_type", "inline", "drop")
_INCLUDE_PARAMS = ("_include", "_revinclude")


def empty_last_updated(params: Sequence[tuple[str, str]]) -> str | None:
    """Describe the ``_lastUpdated`` bounds when no instant can satisfy them, else None.

    The common cause: ``ge{{ data_interval_start }}`` / ``lt{{ data_interval_end }}`` in a
    DAG whose runs have a zero-length interval (``schedule=None``, manual runs, Airflow 3's
    plain cron schedules): the search then succeeds with 0 resources, every time.
    """
    import datetime

    lower: tuple[datetime.datetime, bool] | None = None  # (instant, inclusive)
    upper: tuple[datetime.datetime, bool] | None = None
    for name, value in params:
        if name != "_lastUpdated" or len(value) < 3 or value[:2] not in ("ge", "gt", "le", "lt"):
            continue
        text = value[2:].strip().replace("Z", "+00:00")
        try:
            instant = datetime.datetime.fromisoformat(text)
        except ValueError:
            continue  # partial dates and the like: let the server judge them
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=datetime.timezone.utc)
        prefix = value[:2]
        if prefix in ("ge", "gt") and (lower is None or instant > lower[0]):
            lower = (instant, prefix == "ge")
        elif prefix in ("le", "lt") and (upper is None or instant < upper[0]):
            upper = (instant, prefix == "le")
    if lower is None or upper is None:
        return None
    empty = lower[0] > upper[0] or (lower[0] == upper[0] and not (lower[1] and upper[1]))
    if not empty:
        return None
    return (
        f"_lastUpdated from {lower[0].isoformat()} to {upper[0].isoformat()} is an empty "
        "interval: the search cannot match anything. If the bounds come from "
        "data_interval_start/end, this run's data interval has zero length (schedule=None, "
        "a manual run or a plain cron schedule): use a data-interval timetable such as "
        "CronDataIntervalTimetable, or pass the bounds as params."
    )


class FhirSearchOperator(BaseOperator):
    """Run a FHIR search and write the results as NDJSON (or return them, when few).

    Pages are fetched one at a time following the Bundle's ``next`` links and streamed to
    the output, so memory does not grow with the number of pages. Transient failures (429
    with ``Retry-After``, 5xx, dropped connections) are retried; an expired token is renewed
    by the connection's auth; an OperationOutcome error fails the task quoting its
    diagnostics. Output files appear under their final names only when the whole search
    succeeded (see ``core.storage.atomic``).

    Args:
        resource_type: e.g. ``"Observation"``. Templated.
        search_params: search parameters; list values repeat a parameter, e.g.
            ``{"_lastUpdated": ["ge{{ data_interval_start | ts }}",
            "lt{{ data_interval_end | ts }}"]}``. Templated.
        count: page size (``_count``).
        max_pages: stop after this many pages.
        max_resources: stop after this many matched resources.
        include_mode: what to do with ``_include``/``_revinclude``d resources:
            ``separate`` (default) writes them to ``{ResourceType}.included.ndjson``;
            ``per_type`` to ``{ResourceType}.included.{IncludedType}.ndjson``; ``inline``
            writes them into the main file after each page's matches; ``drop`` discards them.
            Without a destination, ``separate``/``per_type`` return them under ``included``.
            Included resources are kept as the server sends them, page by page: one referred
            to from several pages appears several times (de-duplicating would need memory
            growing with the result).
        destination: a directory (files are named ``{ResourceType}.ndjson``...) or a file path
            ending in ``.ndjson``; a local path, a URL (``file://``, ``s3://conn@bucket/...``)
            or an ``ObjectStoragePath``. Templated. None: return the resources to XCom.
        max_xcom_resources: without a destination, fail with ``XComResultTooLargeError`` once more
            than this many resources (matches plus returned includes) are found.
        backendauth_conn_id: the ``backendauth`` connection (its host is the FHIR base URL).
        retry_args: ``tenacity.Retrying`` arguments replacing the default retry behaviour.
        max_page_bytes: the largest decoded search page accepted (default 128 MiB; see
            ``core/fhir/search.py``): raise it for unusually large pages.
        max_page_entries: the most Bundle entries on one page (default 100,000).

    Returns:
        With a destination: a summary ``{"resource_type", "files": [{"path", "records",
        "bytes"}], "resources", "included", "pages", "bytes", "total", "truncated",
        "elapsed_seconds"}``. Without: ``{"resource_type", "resources": [...], "included":
        [...], "pages", "truncated", ...}``.
    """

    conn_id_field = "backendauth_conn_id"
    template_fields: Sequence[str] = ("resource_type", "search_params", "destination")
    template_fields_renderers = {"search_params": "json"}
    ui_color = "#e8f4d9"

    def __init__(
        self,
        *,
        resource_type: str,
        search_params: SearchParams | None = None,
        count: int | None = None,
        max_pages: int | None = None,
        max_resources: int | None = None,
        include_mode: str = "separate",
        destination: Any = None,
        max_xcom_resources: int = 1000,
        backendauth_conn_id: str = "backendauth_default",
        retry_args: dict[str, Any] | None = None,
        max_page_bytes: int | None = None,
        max_page_entries: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if include_mode not in INCLUDE_MODES:
            raise ConfigurationError(
                f"include_mode must be one of {', '.join(INCLUDE_MODES)}, not {include_mode!r}"
            )
        if max_xcom_resources < 0:
            raise ConfigurationError("max_xcom_resources must be >= 0")
        self.resource_type = resource_type
        self.search_params = search_params
        self.count = count
        self.max_pages = max_pages
        self.max_resources = max_resources
        self.include_mode = include_mode
        self.destination = destination
        self.max_xcom_resources = max_xcom_resources
        self.backendauth_conn_id = backendauth_conn_id
        self.retry_args = retry_args
        self.max_page_bytes = max_page_bytes
        self.max_page_entries = max_page_entries
        if destination is not None:  # results returned to XCom are not an Asset
            declare_outlet(self, backendauth_conn_id)
        self._lineage_files: list[dict[str, Any]] = []  # written files, for OpenLineage
        self._task_error: BaseException | None = None

    # -- execution -----------------------------------------------------------------------

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        search = self._start_search()
        self.log.info(
            "Searching %s/%s with %s",
            search.base_url,
            search.resource_type,
            "&".join(f"{k}={v}" for k, v in search.params) or "no parameters",
        )
        problem = empty_last_updated(search.params)
        if problem:
            self.log.warning("%s", problem)
        if self.destination is None or self.destination == "":
            return self._to_xcom(search)
        summary = self._to_files(search)
        emit_search_event(context, self.backendauth_conn_id, search, summary, str(self.destination))
        self._lineage_files = list(summary["files"])
        return summary

    # -- OpenLineage (called by the OpenLineage provider when it is installed) ----------

    def _input(self) -> list[Any]:
        from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook
        from airflow_provider_backendauth.operators._lineage import fhir_input

        try:
            base_url = BackendAuthHook(self.backendauth_conn_id).base_url
        except Exception:
            return []  # lineage never fails a task; the task itself reports the connection
        return [fhir_input(base_url, self.resource_type)] if base_url else []

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_provider_backendauth.operators._lineage import operator_lineage

        return operator_lineage(self._input())

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_backendauth.operators._lineage import (
            operator_lineage,
            storage_output,
        )

        outputs = [
            storage_output(str(f["path"]), int(f["records"]), int(f["bytes"]))
            for f in self._lineage_files
        ]
        return operator_lineage(self._input(), outputs)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_backendauth.operators._lineage import operator_lineage

        return operator_lineage(self._input(), error=self._task_error)

    def _start_search(self) -> FhirSearch:
        from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

        hook = BackendAuthHook(self.backendauth_conn_id)
        if hook.base_url is None:
            from airflow_provider_backendauth.core.errors import ConfigurationError

            raise ConfigurationError(
                f"Connection {self.backendauth_conn_id!r} has no host: set it to the FHIR base "
                "URL (e.g. https://fhir.example.org/api/FHIR/R4)."
            )
        client = hook.client.fhir_client(
            retry_args=self.retry_args,
            **{
                name: value
                for name, value in (
                    ("max_page_bytes", self.max_page_bytes),
                    ("max_page_entries", self.max_page_entries),
                )
                if value is not None
            },
        )
        return client.search(
            self.resource_type,
            self.search_params,
            count=self.count,
            max_pages=self.max_pages,
            max_resources=self.max_resources,
        )

    def _wants_includes(self, search: FhirSearch) -> bool:
        return any(name.split(":")[0] in _INCLUDE_PARAMS for name, _ in search.params)

    def _to_files(self, search: FhirSearch) -> dict[str, Any]:
        from airflow_provider_backendauth.core.storage.ndjson import NdjsonFileSet

        target = storage_path(self.destination)
        rt = search.resource_type
        if target.name.endswith(".ndjson"):
            directory, main = target.parent, target.name
            stem = main[: -len(".ndjson")]
        else:
            directory, main, stem = target, f"{rt}.ndjson", rt
        separate = f"{stem}.included.ndjson"
        create = [main]
        if self.include_mode == "separate" and self._wants_includes(search):
            create.append(separate)
        self.log.info("Writing %s to %s", rt, directory)
        with NdjsonFileSet(directory, create=create) as files:
            for page in search:
                files.writer(main).write_many(page.matches)
                self._write_included(files, page.included, main, stem, separate)
        written = files.written or []
        summary = search.summary()
        summary["files"] = [w.as_dict() for w in written]
        summary["bytes"] = sum(w.bytes for w in written)
        if self.include_mode == "drop":
            summary["included_dropped"] = summary.pop("included")
        for w in written:
            self.log.info("Wrote %s: %d resources, %d bytes", w.path, w.records, w.bytes)
        return summary

    def _write_included(
        self,
        files: NdjsonFileSet,
        included: list[dict[str, Any]],
        main: str,
        stem: str,
        separate: str,
    ) -> None:
        if not included or self.include_mode == "drop":
            return
        if self.include_mode == "inline":
            files.writer(main).write_many(included)
        elif self.include_mode == "separate":
            files.writer(separate).write_many(included)
        else:
            from airflow_provider_backendauth.core.names import safe_type_name

            for resource in included:
                # resourceType is server data: the bulk path's sanitiser keeps it a plain name.
                kind = safe_type_name(str(resource.get("resourceType") or "Unknown"))
                files.writer(f"{stem}.included.{kind}.ndjson").write(resource)

    def _to_xcom(self, search: FhirSearch) -> dict[str, Any]:
        from airflow_provider_backendauth.core.errors import XComResultTooLargeError

        resources: list[dict[str, Any]] = []
        included: list[dict[str, Any]] = []
        cap = self.max_xcom_resources
        for page in search:
            resources.extend(page.matches)
            if self.include_mode == "inline":
                resources.extend(page.included)
            elif self.include_mode != "drop":
                included.extend(page.included)
            if len(resources) + len(included) > cap:
                # Stop now: holding the rest in memory to report an exact count is pointless.
                raise XComResultTooLargeError(
                    f"The {search.resource_type} search returned more than "
                    f"max_xcom_resources={cap} resources (after {search.pages} pages). XCom is "
                    "for small results: set 'destination' to write NDJSON files instead, narrow "
                    "the search, or set max_resources."
                )
        summary = search.summary()
        summary["resources"] = resources
        if self.include_mode in ("separate", "per_type"):
            summary["included"] = included
        else:
            summary.pop("included")
        summary["resource_count"] = len(resources)
        return summary
