"""``backendauth flatten``: a view over NDJSON files into a table, incremental merges with
deleted files, and one-line errors with nothing written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from airflow_provider_backendauth.cli.main import main
from airflow_provider_backendauth.core.tables import read_snapshot

VIEW = {
    "resourceType": "ViewDefinition",
    "name": "patients",
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id"},
                {"name": "born", "path": "birthDate", "type": "date"},
            ]
        }
    ],
}


def _files(tmp_path: Path) -> tuple[Path, Path]:
    view = tmp_path / "view.json"
    view.write_text(json.dumps(VIEW))
    data = tmp_path / "Patient.000.ndjson.gz"
    lines = [
        {"resourceType": "Patient", "id": f"p{i}", "birthDate": "1970-01-0" + str(i)}
        for i in range(1, 4)
    ]
    data.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    return view, data


def test_flatten_writes_a_table_and_merges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view, data = _files(tmp_path)
    out = tmp_path / "tables" / "patients"
    assert (
        main(["flatten", str(view), str(data), "--out", str(out), "--temporal", "timestamp"]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    deleted = tmp_path / "deleted.ndjson"
    deleted.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "entry": [{"request": {"method": "DELETE", "url": "Patient/p2"}}],
            }
        )
        + "\n"
    )
    empty = tmp_path / "since.ndjson"
    empty.write_text("")
    argv = [
        "flatten",
        str(view),
        str(empty),
        "--out",
        str(out),
        "--incremental",
        "--deleted",
        str(deleted),
        "--json",
        "--temporal",
        "timestamp",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["version"], summary["rows_removed"], summary["rows"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("view-not-json", "view.json: not JSON"),
        ("bad-path", "path 'birthDate.('"),
        ("missing-input", "nothere.ndjson: no such file"),
        ("malformed", "bad.ndjson: line 2 is not valid JSON"),
    ],
)
def test_errors_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, message: str
) -> None:
    view, data = _files(tmp_path)
    inputs = [str(data)]
    if change == "view-not-json":
        view.write_text("{")
    elif change == "bad-path":
        view.write_text(
            json.dumps({**VIEW, "select": [{"column": [{"name": "x", "path": "birthDate.("}]}]})
        )
    elif change == "missing-input":
        inputs = [str(tmp_path / "nothere.ndjson")]
    else:
        bad = tmp_path / "bad.ndjson"
        bad.write_text('{"resourceType": "Patient", "id": "a"}\n{"resourceType": \n')
        inputs = [str(bad)]
    out = tmp_path / "t"
    assert main(["flatten", str(view), *inputs, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("backendauth: error: ") and message in err and err.count("\n") == 1
    assert read_snapshot(out) is None
