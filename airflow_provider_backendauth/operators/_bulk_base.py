"""What the bulk operators share: connection, destination, durable state, how a failure ends.

Not public API: import the operators from ``airflow_provider_backendauth.operators.bulk``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth._compat import BaseOperator
from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.operators._common import (
    storage_path,
)

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_backendauth.core.bulk.job import BulkExportJob
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

AUTO = "auto"
DEFAULT_CONN_ID = "backendauth_default"


def _seconds(value: timedelta | float | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _fails_for_good(context: Context, exc: BaseException, retries: int | None) -> bool:
    """Whether this failure ends the task (no retry will follow): the state of a job is
    kept for the next try otherwise."""
    from airflow_provider_backendauth._compat import AirflowFailException

    if isinstance(exc, AirflowFailException):
        return True
    ti = context.get("ti")
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    if isinstance(try_number, int) and isinstance(max_tries, int):
        return try_number > max_tries
    return not retries


class _BulkBase(BaseOperator):
    """What the three operators share: the connection, the destination and the state."""

    def __init__(
        self,
        *,
        destination: str | ObjectStoragePath,
        backendauth_conn_id: str = DEFAULT_CONN_ID,
        state_dir: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backendauth_conn_id = backendauth_conn_id
        self.destination = destination
        self.state_dir = state_dir
        self._stop = threading.Event()
        self._job: BulkExportJob | None = None
        # What OpenLineage reports: the finished export (base URL, destination, file
        # results, group) and the error a failed try ended with.
        self._lineage_run: tuple[str, str, list[Any], str | None] | None = None
        self._task_error: BaseException | None = None

    def _hook(self) -> BackendAuthHook:
        from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

        return BackendAuthHook(self.backendauth_conn_id)

    def _base_url(self, hook: BackendAuthHook) -> str:

        if not hook.base_url:
            raise ConfigurationError(
                f"Connection {self.backendauth_conn_id!r} has no base URL (host): set it to the "
                "FHIR server's base URL."
            )
        return hook.base_url

    def _build_job(
        self,
        key: str,
        *,
        client_options: Mapping[str, Any] | None = None,
        downloader_options: Mapping[str, Any] | None = None,
        compression: str | None = None,
    ) -> BulkExportJob:
        from airflow_provider_backendauth.core.bulk.client import BulkExportClient
        from airflow_provider_backendauth.core.bulk.download import BulkDownloader
        from airflow_provider_backendauth.core.bulk.job import BulkExportJob
        from airflow_provider_backendauth.core.bulk.state import BulkStateStore

        hook = self._hook()
        http = hook.client.authorized_sessions()
        client = BulkExportClient(
            http, self._base_url(hook), stop=self._stop, **dict(client_options or {})
        )
        downloader = (
            BulkDownloader(http, stop=self._stop, **dict(downloader_options))
            if downloader_options is not None
            else None
        )
        destination = storage_path(self.destination)
        state_root = storage_path(self.state_dir) if self.state_dir else destination
        self._job = BulkExportJob(
            client=client,
            store=BulkStateStore(state_root),
            key=key,
            destination=destination,
            downloader=downloader,
            compression=compression,
        )
        return self._job

    @staticmethod
    def _job_key(context: Context, task_id: str) -> str:
        from airflow_provider_backendauth.core.bulk.state import job_key

        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return job_key(
            dag_id=ti.dag_id,
            task_id=task_id,
            run_id=ti.run_id,
            map_index=map_index if isinstance(map_index, int) else -1,
        )

    def _record_lineage(self, job: BulkExportJob, results: list[Any]) -> None:
        request = (job.record.request if job.record is not None else None) or {}
        group_id = request.get("group_id") if request.get("level") == "group" else None
        self._lineage_run = (job.client.base_url, str(job.destination), results, group_id)

    def _requested_inputs(self) -> list[Any]:
        """The FHIR datasets a run will read, when known before it runs (export ``types``)."""
        return []

    # -- OpenLineage (called by the OpenLineage provider when it is installed) ----------

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_provider_backendauth.operators._lineage import operator_lineage

        return operator_lineage(self._requested_inputs())

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_backendauth.operators._lineage import (
            export_lineage,
            operator_lineage,
        )

        if self._lineage_run is None:  # the files are not downloaded yet (download=False)
            return operator_lineage(self._requested_inputs())
        return operator_lineage(*export_lineage(*self._lineage_run))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_backendauth.operators._lineage import operator_lineage

        return operator_lineage(self._requested_inputs(), error=self._task_error)

    def on_kill(self) -> None:
        self._stop.set()
