"""Asset events of the operators, through Airflow's own outlet event accessors.

The operators run against the sandbox with the context a task run gets (``outlet_events`` is
the Task SDK's ``OutletEventAccessors``); what they add is read back as the task runner reads
it when the task succeeds. The events reaching the metadata database and a DAG scheduled on
the Assets: tests/dags/test_lineage_dags.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_provider_backendauth.core.lineage import fhir_asset_uri
from airflow_provider_backendauth.operators.bulk import (
    FhirBulkDownloadOperator,
    FhirBulkExportOperator,
    FhirBulkFinalizeOperator,
)
from airflow_provider_backendauth.operators.fhir import FhirSearchOperator
from tests.support.bulkkit import CONN_ID, FAST_POLL, BulkEnv, assert_no_token_in, task_context

pytest_plugins = ("tests.support.bulk_fixtures",)

TYPES = {"Patient", "Observation", "Condition", "Encounter"}
ALIAS = AssetAlias(name=f"backendauth:{CONN_ID}", group="backendauth")


def run_context(run_id: str = "run-1", **kwargs: Any) -> dict[str, Any]:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {**task_context(run_id, **kwargs), "outlet_events": OutletEventAccessors()}


def events_of(context: dict[str, Any], alias: AssetAlias = ALIAS) -> dict[str, dict[str, Any]]:
    """``{asset URI: extra}`` added through ``alias``, as the task runner sends them."""
    found = context["outlet_events"][alias].asset_alias_events
    assert all(e.source_alias_name == alias.name for e in found)
    events = {e.dest_asset_key.uri: dict(e.extra) for e in found}
    assert len(events) == len(found), "one event per Asset"
    json.dumps(events)  # what the task runner sends must be JSON
    return events


def export_op(destination: str, **kwargs: Any) -> FhirBulkExportOperator:
    return FhirBulkExportOperator(
        task_id="export",
        backendauth_conn_id=CONN_ID,
        destination=destination,
        deferrable=False,
        **{**FAST_POLL, **kwargs},
    )


def test_export_declares_the_connection_alias_after_the_authors_outlets() -> None:
    mine = Asset("s3://bucket/elsewhere")
    op = export_op("/tmp/x", outlets=[mine])
    assert op.outlets == [mine, ALIAS]
    assert export_op("/tmp/x", download=False).outlets == []  # finalize emits then
    download = FhirBulkDownloadOperator(
        task_id="d",
        file={"job": "j", "name": "n"},
        destination="/tmp/x",
        backendauth_conn_id=CONN_ID,
    )
    assert download.outlets == []
    finalize = FhirBulkFinalizeOperator(
        task_id="f", export_task_id="export", destination="/tmp/x", backendauth_conn_id=CONN_ID
    )
    assert finalize.outlets == [ALIAS]
    assert FhirSearchOperator(task_id="s", resource_type="Patient").outlets == []  # to XCom


def test_one_event_per_type_with_a_stable_identity_across_run_folders(bulk_env: BulkEnv) -> None:
    """Two nightly runs into per-run folders (``out/{{ ds }}``), the second with
    ``since="auto"``: the same Assets both times, each run's folder and ``_since`` in the
    event; counts and bytes are those of the files written (none the second time: nothing
    changed, and every requested type still says so)."""
    base = bulk_env.sb.fhir_base
    seen = []
    for day in ("2024-06-01", "2024-06-02"):
        folder = bulk_env.tmp / "out" / day
        context = run_context(f"run-{day}")
        summary = export_op(
            f"file://{folder}",
            level="group",
            group_id="g1",
            since="auto",
            types=sorted(TYPES),
            state_dir=str(bulk_env.tmp / "out"),
        ).execute(context)
        events = events_of(context)
        assert set(events) == {fhir_asset_uri(base, t, group_id="g1") for t in TYPES}
        for kind in TYPES:
            extra = events[f"{base.rstrip('/')}/Group/g1/{kind}"]
            written = summary["output"].get(kind, {}).get("files", [])
            files = [folder / name for name in written]
            assert extra["resources"] == sum(len(f.read_text().splitlines()) for f in files)
            assert extra["bytes"] == sum(f.stat().st_size for f in files)
            assert extra["files"] == len(files)
            assert extra["transactionTime"] == summary["transactionTime"]
            assert extra["path"] == f"file://{folder}"
            assert (extra["level"], extra["group"], extra["resourceType"]) == ("group", "g1", kind)
            assert_no_token_in(json.dumps(extra), bulk_env.sb, bulk_env.client_id)
        seen.append(events)
    first, second = seen
    assert all(e["resources"] > 0 and e["bytes"] > 0 for e in first.values())
    assert all(e["resources"] == e["files"] == 0 for e in second.values())
    assert set(first) == set(second)  # the Assets do not change with the run's folder
    assert {e["since"] for e in first.values()} == {None}  # the first run exported everything
    since = {e["since"] for e in second.values()}
    assert since == {next(iter(first.values()))["transactionTime"]}


def test_mapped_downloads_emit_from_finalize(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_lines_per_file=6)
    out = bulk_env.tmp / "out"
    context = run_context()
    files = export_op(str(out), download=False).execute(context)
    assert context["outlet_events"][ALIAS].asset_alias_events == []  # nothing written yet
    for spec in files:
        FhirBulkDownloadOperator(
            task_id="download", file=spec, destination=str(out), backendauth_conn_id=CONN_ID
        ).execute(run_context(task_id="download"))
    finalize_context = run_context(task_id="finalize")
    summary = FhirBulkFinalizeOperator(
        task_id="finalize",
        export_task_id="export",
        destination=str(out),
        backendauth_conn_id=CONN_ID,
    ).execute(finalize_context)
    events = events_of(finalize_context)
    base = bulk_env.sb.fhir_base
    assert set(events) == {fhir_asset_uri(base, t) for t in TYPES}
    patient = events[fhir_asset_uri(base, "Patient")]
    assert patient["resources"] == 20
    assert patient["files"] == len(summary["output"]["Patient"]["files"]) > 1
    assert patient["level"] == "system" and "group" not in patient
    assert patient["path"] == str(out)


def test_a_failed_export_emits_nothing(bulk_env: BulkEnv) -> None:
    bulk_env.sb.settings.update(bulk_error_file="error")  # fatal OperationOutcomes
    context = run_context()
    with pytest.raises(Exception, match="OperationOutcome"):
        export_op(str(bulk_env.tmp / "out")).execute(context)
    assert context["outlet_events"][ALIAS].asset_alias_events == []


def test_search_emits_one_event_for_its_type(
    make_conn: Callable[..., str], sb: Any, tmp_path: Path
) -> None:
    make_conn("fhir_search")
    context = {"outlet_events": run_context()["outlet_events"]}
    op = FhirSearchOperator(
        task_id="search",
        backendauth_conn_id="fhir_search",
        resource_type="Observation",
        search_params={"_include": "Observation:subject"},
        destination=str(tmp_path / "out"),
        count=7,
    )
    summary = op.execute(context)
    alias = AssetAlias(name="backendauth:fhir_search", group="backendauth")
    events = events_of(context, alias)
    assert list(events) == [fhir_asset_uri(sb.fhir_base, "Observation")]
    (extra,) = events.values()
    written = (tmp_path / "out" / "Observation.ndjson").read_text().splitlines()
    assert extra["resources"] == summary["resources"] == len(written) > 0
    assert extra["included"] == summary["included"] > 0  # counted, not an Asset of their own
    assert extra["bytes"] == summary["bytes"] and extra["files"] == 2
    assert extra["path"] == str(tmp_path / "out")
    assert extra["pages"] == summary["pages"]
