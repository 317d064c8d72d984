"""The benchmark harness itself keeps working: a ``--quick`` run with tiny sizes, one round,
every server, mode and contender. Figures are not asserted (a shared machine's timings are
noise); what is asserted is that every contender ran and wrote exactly the expected bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "run.py"


@pytest.mark.e2e
def test_quick_run_measures_every_contender(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--sizes", "1", "--files", "3", "--repeat", "1",
         "--patients", "10", "--search-patients", "30", "--search-counts", "20",
         "--json", str(figures), "--no-readme"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| server | files | size | client | MB/s median" in result.stdout
    assert "| vs fastest baseline | load (1 min) |" in result.stdout
    cases = {case["case"]: case for case in json.loads(figures.read_text())["cases"]}
    assert set(cases) == {
        "nginx plain NDJSON 1 MB",
        "nginx gzip (Content-Encoding) 1 MB",
        "nginx gzip files (.ndjson.gz) 1 MB",
        "sandbox plain NDJSON 1 MB",
        "sandbox FHIR search: Observation, 20 per page",
    }
    search = cases.pop("sandbox FHIR search: Observation, 20 per page")
    assert set(search["samples"]) == {"FhirSearch", "requests paging loop"}
    matched = [run["bytes"] for runs in search["samples"].values() for run in runs]
    assert len(set(matched)) == 1 and matched[0] > 20  # the same resources, several pages
    for label, case in cases.items():
        assert " -> " in case["load_1min"], label  # the load before and after its rounds
        contenders = set(case["samples"])
        assert {"BulkDownloader, fresh process", "BulkDownloader, in-process"} <= contenders
        assert "4 curl processes" in contenders
        assert ("curl --parallel" in contenders) == ("gzip files" not in label)
        for runs in case["samples"].values():
            assert [run["bytes"] for run in runs] == [case["bytes"]], label
