"""MyDataHelps participants: a paginated REST API behind a signed-JWT service account.

Two ways to page through ``GET participants?pageSize=&pageID=`` (answers
``{"participants": [...], "nextPageID": "..."}``):

1. ``count_participants``: ``BackendAuthHttpOperator`` with a ``pagination_function``; its
   ``response_filter`` keeps only a small summary for XCom (never push personal data or
   whole pages to XCom).
2. ``export_participants``: a ``@task`` using the hook's session with ``RestClient`` and
   ``atomic_writer``: pages are streamed into
   ``{output}/mydatahelps/{data_interval_start | ds}/participants.ndjson``, which appears
   only when every page was written.

Connection ``backendauth_mydatahelps`` (profile ``mydatahelps``: RS256, scope ``api``, the
MyDataHelps token URL). The host is the project's administration API base::

    export AIRFLOW_CONN_BACKENDAUTH_MYDATAHELPS='{"conn_type": "backendauth",
      "host": "https://designer.mydatahelps.org/api/v1/administration/projects/<project id>",
      "login": "MyDataHelps.<org>.<name>",
      "password": "-----BEGIN PRIVATE KEY-----\\n...",
      "extra": {"profile": "mydatahelps"}}'

Against the sandbox: host ``{sb.url}/api/v1/administration`` and extra ``token_url`` =
``sb.token_url``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_backendauth.operators.http import BackendAuthHttpOperator

if TYPE_CHECKING:
    import requests

CONN_ID = "backendauth_mydatahelps"


def _default_output() -> str:
    configured = os.environ.get("BACKENDAUTH_OUTPUT", "").strip()
    if configured:
        return configured.rstrip("/")
    home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser().resolve()
    return (home / "backendauth-output").as_uri()


def next_page(response: requests.Response) -> dict[str, Any] | None:
    """The next request's overrides: the same query with ``pageID``, or None at the end."""
    next_id = response.json().get("nextPageID")
    return {"data": {"pageID": next_id}} if next_id else None


def summarise(responses: list[requests.Response]) -> dict[str, Any]:
    """A small XCom value: page and participant counts."""
    participants = [p for r in responses for p in r.json().get("participants") or []]
    return {"pages": len(responses), "participants": len(participants)}


with DAG(
    dag_id="backendauth_mydatahelps_participants",
    description="MyDataHelps participants, paginated, with a signed-JWT service account",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "output": Param(
            _default_output(),
            type="string",
            description="Output root: a local path or URL (file://, s3://conn@bucket/...).",
        ),
        "page_size": Param(100, type="integer", minimum=1, maximum=1000),
    },
    tags=["backendauth", "mydatahelps", "example"],
    doc_md=__doc__,
):
    count_participants = BackendAuthHttpOperator(
        task_id="count_participants",
        backendauth_conn_id=CONN_ID,
        method="GET",
        endpoint="participants",
        data={"pageSize": "{{ params.page_size }}"},
        pagination_function=next_page,
        response_filter=summarise,
    )

    @task
    def export_participants(output: str, day: str, page_size: str) -> dict[str, Any]:
        """Stream every page of participants into one NDJSON file."""
        from airflow.sdk import ObjectStoragePath

        from airflow_provider_backendauth.core.fhir.rest import RestClient
        from airflow_provider_backendauth.core.storage.atomic import atomic_writer
        from airflow_provider_backendauth.core.storage.ndjson import NdjsonWriter
        from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

        hook = BackendAuthHook(CONN_ID)
        rest = RestClient(hook.get_session(), hook.base_url)
        target = ObjectStoragePath(f"{output}/mydatahelps/{day}/participants.ndjson")
        params: dict[str, Any] = {"pageSize": page_size}
        pages = 0
        with atomic_writer(target) as handle:
            writer = NdjsonWriter(handle)
            while True:
                body, _ = rest.get_json("participants", params=params)
                pages += 1
                writer.write_many(body.get("participants") or [])
                if not body.get("nextPageID"):
                    break
                params["pageID"] = body["nextPageID"]
        return {"path": str(target), "pages": pages, "records": writer.records}

    count_participants >> export_participants(
        output="{{ params.output }}",
        day="{{ data_interval_start | ds }}",
        page_size="{{ params.page_size }}",
    )
