"""The README's object-storage examples, taken from the README itself and run as written
against the sandbox and a real S3 endpoint (moto's server) holding a bucket named ``bucket``.

The operators' python block is executed inside a DAG, so what runs is exactly what a reader
copies; only the connections (``backendauth_fhir``, ``aws_default``) point at 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pendulum
import pytest

from airflow_provider_backendauth._compat import TaskDeferred
from tests.conftest import REPO
from tests.support.bulkkit import BulkEnv, fast_poll, task_context
from tests.support.s3 import S3Server

pytest_plugins = ("tests.support.bulk_fixtures",)

README_BUCKET = "bucket"  # the README's own bucket name


def readme_operators() -> Any:
    from airflow.sdk import DAG

    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "FhirSearchOperator(" in b and "s3://" in b]
    with DAG("readme_examples", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 (our own README)
    return dag


@pytest.fixture
def readme_world(
    bulk_env: BulkEnv, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> tuple[BulkEnv, S3Server]:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3_server.connection_json())
    bulk_env.conn_id = "backendauth_fhir"
    bulk_env.set_connection()
    client = s3_server.client()
    if README_BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=README_BUCKET)
    for key in s3_server.objects(README_BUCKET):  # earlier tests' runs
        client.delete_object(Bucket=README_BUCKET, Key=key)
    s3_server.reset()
    return bulk_env, s3_server


def context(day: str) -> dict[str, Any]:
    start = pendulum.parse(day)
    return {
        **task_context(f"scheduled__{day}"),
        "ds": day,
        "data_interval_start": start,
        "data_interval_end": start.add(days=1),
    }


def test_readme_fhir_search_example(readme_world: tuple[BulkEnv, S3Server]) -> None:
    env, s3 = readme_world
    op = readme_operators().get_task("observations")
    ctx = context("2024-06-01")
    op.render_template_fields(ctx)
    assert op.destination == "s3://aws_default@bucket/fhir/2024-06-01"
    result = op.execute(ctx)
    day = [
        r
        for r in env.sb.store.by_type["Observation"]
        if pendulum.datetime(2024, 6, 1).timestamp()
        <= r.last_updated
        < pendulum.datetime(2024, 6, 2).timestamp()
    ]
    assert result["resources"] == len(day)
    objects = s3.objects(README_BUCKET, "fhir/2024-06-01/")
    assert "fhir/2024-06-01/Observation.ndjson" in objects
    assert all(ops == {"PutObject": 1} for ops in s3.by_key(README_BUCKET).values())


def test_readme_bulk_export_example(readme_world: tuple[BulkEnv, S3Server]) -> None:
    _, s3 = readme_world
    dag = readme_operators()
    ctx = context("2024-06-01")
    op = dag.get_task("export")
    op.render_template_fields(ctx)
    op.poll_settings = fast_poll()  # the sandbox is fast
    with pytest.raises(TaskDeferred) as info:
        op.execute(ctx)

    async def first_event() -> dict[str, Any]:
        async for event in info.value.trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first_event(), 60))
    resumed = readme_operators().get_task("export")  # a new worker process resumes
    resumed.render_template_fields(ctx)
    summary = resumed.execute_complete(ctx, event)
    assert summary["files"] == 4
    objects = s3.objects(README_BUCKET, "bulk/")
    assert "bulk/2024-06-01/manifest.json" in objects
    assert (
        len([k for k in objects if k.startswith("bulk/2024-06-01/") and k.endswith("0.ndjson")])
        == 4
    )
    assert any("/_bulk_state/since/" in k for k in objects)  # the watermark, next to the data
    ops = s3.operations(README_BUCKET)
    assert ops["CopyObject"] == 0 and s3.incomplete_uploads(README_BUCKET) == []
