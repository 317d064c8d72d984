"""NDJSON -> view table through the real runner: sandbox data, gzip, deleted Bundles, clear
errors before anything is written, and incremental == full on changed, new and deleted
resources."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.errors import (
    MalformedResourceError,
    TableError,
    ViewDefinitionError,
)
from airflow_provider_backendauth.core.tables import KEY_COLUMN, read_snapshot
from airflow_provider_backendauth.core.tables.flatten import deleted_ids, flatten, read_resources
from backendauth_sandbox.fhir_store import FhirStore

OBSERVATIONS = {
    "resourceType": "ViewDefinition",
    "name": "vitals",
    "resource": "Observation",
    "status": "active",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).unit"},
            ]
        },
        {"forEach": "code.coding", "column": [{"name": "code", "path": "code"}]},
    ],
}


def _write_ndjson(path: Path, resources: list[dict[str, Any]]) -> Path:
    lines = "".join(json.dumps(r) + "\n" for r in resources).encode()
    path.write_bytes(gzip.compress(lines) if path.name.endswith(".gz") else lines)
    return path


def _deleted_bundle(path: Path, refs: list[str]) -> Path:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in refs],
    }
    return _write_ndjson(path, [bundle])


def _rows(table: Path) -> list[tuple[Any, ...]]:
    import deltalake

    rows = deltalake.DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    return sorted(tuple(r.values()) for r in rows)


@pytest.fixture(scope="module")
def observations() -> list[dict[str, Any]]:
    store = FhirStore(patients=40, seed=7)
    return [r.resource for r in store.by_type["Observation"]]


def test_a_view_over_sandbox_data(tmp_path: Path, observations: list[dict[str, Any]]) -> None:
    source = _write_ndjson(tmp_path / "Observation.000.ndjson.gz", observations)
    result = flatten(OBSERVATIONS, [source], tmp_path / "vitals")
    assert result.rows == result.rows_written == len(observations)  # one coding each
    assert result.columns == ["id", "patient", "value", "unit", "code", KEY_COLUMN]
    rows = _rows(tmp_path / "vitals")
    first = observations[0]
    match = [r for r in rows if r[0] == first["id"]]
    assert match == [
        (
            first["id"],
            first["subject"]["reference"].split("/")[1],
            str(first["valueQuantity"]["value"]),  # exact text, e.g. "98.6"
            first["valueQuantity"]["unit"],
            first["code"]["coding"][0]["code"],
            first["id"],
        )
    ]


def test_incremental_equals_full(tmp_path: Path, observations: list[dict[str, Any]]) -> None:
    t1 = observations
    changed = copy.deepcopy(t1[3])
    changed["valueQuantity"]["value"] = 123.45
    changed["code"]["coding"].append({"system": "urn:x", "code": "extra"})  # two rows now
    vanished = copy.deepcopy(t1[5])  # updated so that it yields no row: a code-less coding list
    vanished["code"]["coding"] = []
    new = copy.deepcopy(t1[0])
    new["id"] = "obs-new"
    deleted = t1[7]["id"]
    t2 = [
        changed if r is t1[3] else vanished if r is t1[5] else r for r in t1 if r["id"] != deleted
    ]
    t2.append(new)

    full_t1 = _write_ndjson(tmp_path / "t1.ndjson", t1)
    since = _write_ndjson(tmp_path / "since.ndjson", [changed, vanished, new])
    gone = _deleted_bundle(tmp_path / "deleted.ndjson", [f"Observation/{deleted}", "Patient/x"])
    full_t2 = _write_ndjson(tmp_path / "t2.ndjson", t2)

    flatten(OBSERVATIONS, [full_t1], tmp_path / "incremental")
    result = flatten(
        OBSERVATIONS, [since], tmp_path / "incremental", incremental=True, deleted=[gone]
    )
    flatten(OBSERVATIONS, [full_t2], tmp_path / "full")
    assert _rows(tmp_path / "incremental") == _rows(tmp_path / "full")
    assert (result.mode, result.rows_written, result.rows_removed) == ("merge", 3, 3)
    assert result.rows == len(_rows(tmp_path / "full"))


def test_an_invalid_view_fails_before_any_file_is_read(tmp_path: Path) -> None:
    bad = {**OBSERVATIONS, "select": [{"column": [{"name": "x", "path": "code.("}]}]}
    with pytest.raises(ViewDefinitionError):
        flatten(bad, [tmp_path / "missing.ndjson"], tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_a_malformed_line_writes_nothing(
    tmp_path: Path, observations: list[dict[str, Any]]
) -> None:
    source = _write_ndjson(tmp_path / "Observation.ndjson", observations[:30])
    with source.open("ab") as handle:
        handle.write(b'{"resourceType": "Observation", "id": "cut-of\n')
    with pytest.raises(
        MalformedResourceError,
        match="Observation.ndjson: line 31 is not valid JSON",
    ) as caught:
        flatten(OBSERVATIONS, [source], tmp_path / "t", row_group_rows=7, target_file_bytes=1)
    assert "cut-of" not in str(caught.value)
    assert read_snapshot(tmp_path / "t") is None
    assert not [p for p in (tmp_path / "t").iterdir() if p.suffix == ".parquet"]


def test_an_incremental_run_needs_the_full_table_first(tmp_path: Path) -> None:
    source = _write_ndjson(tmp_path / "x.ndjson", [])
    with pytest.raises(TableError, match="write the full export first"):
        flatten(OBSERVATIONS, [source], tmp_path / "t", incremental=True)


def test_deleted_ids_read_delete_requests_only(tmp_path: Path) -> None:
    path = _deleted_bundle(
        tmp_path / "d.ndjson",
        ["Observation/a", "Observation/b/_history/2", "https://x/fhir/Observation/c", "Patient/p"],
    )
    with path.open("ab") as handle:
        bundle = {
            "resourceType": "Bundle",
            "entry": [{"request": {"method": "PUT", "url": "Observation/z"}}],
        }
        handle.write(json.dumps(bundle).encode() + b"\n")
    assert list(deleted_ids([path], "Observation")) == ["a", "b", "c"]
    _write_ndjson(tmp_path / "p.ndjson", [{"resourceType": "Patient", "id": "p"}])
    with pytest.raises(MalformedResourceError, match="non-Bundle"):
        list(deleted_ids([tmp_path / "p.ndjson"], "Observation"))


def test_decimals_are_read_exactly(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_bytes(b'{"resourceType":"Observation","valueQuantity":{"value":1.50}}\n\n')
    (resource,) = read_resources([path])
    assert str(resource["valueQuantity"]["value"]) == "1.50"
