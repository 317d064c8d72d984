"""benchmarks/views.py keeps measuring like against like: on its generated data, the
fhirpathpy contender yields the same rows as ``core.views`` (but for the two key columns it
reads as plain elements), and a ``--quick`` run prints every contender."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backendauth.core.views import compile_view

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import views as bench  # noqa: E402


@pytest.mark.parametrize("name", ["OBSERVATION_VIEW", "PATIENT_VIEW"])
def test_contenders_agree_row_for_row(name: str) -> None:
    pytest.importorskip("fhirpathpy")
    view: dict[str, Any] = getattr(bench, name)
    observations, patients = bench.generate(200)
    lines = observations if view["resource"] == "Observation" else patients
    resources = [json.loads(line, parse_float=Decimal) for line in lines]
    ours = list(compile_view(view).run(resources))
    theirs = list(bench._fhirpathpy_runner(view)(json.loads(x, parse_float=Decimal) for x in lines))
    assert len(ours) == len(theirs) > len(resources) * 0.9
    for mine, other in zip(ours, theirs, strict=True):
        other["id"] = mine["id"]  # fhirpathpy reads id / subject.reference for the keys
        if "patient_id" in mine:
            assert other["patient_id"] == f"Patient/{mine['patient_id']}"
            other["patient_id"] = mine["patient_id"]
        assert mine == other


def test_quick_run_prints_every_contender() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "views.py"), "--quick", "--resources", "400"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for contender in ("core.views, run", "core.views, parse (json) + run"):
        assert result.stdout.count(contender) == 4
    assert "load average at start" in result.stdout and "load average at end" in result.stdout
