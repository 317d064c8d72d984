"""The benchmarks' load check: a busy machine is warned about loudly, or refused with
``--require-idle``; an idle one passes silently. The load is the input under test, so it is
set through ``os.getloadavg``, the one place the check reads it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

LOAD_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"


@pytest.fixture
def load() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_load", LOAD_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_load"]


def _machine(monkeypatch: pytest.MonkeyPatch, one: float, cores: int = 2) -> None:
    monkeypatch.setattr("os.getloadavg", lambda: (one, 0.5, 0.25))
    monkeypatch.setattr("os.cpu_count", lambda: cores)


def test_an_idle_machine_passes_silently(
    load: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _machine(monkeypatch, 1.0)  # half of 2 cores: still idle
    assert load.check(require_idle=True).idle
    assert capsys.readouterr().err == ""


def test_a_busy_machine_is_warned_about_with_its_load(
    load: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _machine(monkeypatch, 3.5)
    measured = load.check(require_idle=False)
    assert not measured.idle and str(measured) == "3.50 0.50 0.25"
    err = capsys.readouterr().err
    assert "WARNING: the machine is NOT idle: load average 3.50 0.50 0.25 on 2 cores" in err


def test_require_idle_refuses_a_busy_machine(
    load: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, 2.1, cores=4)
    naps: list[float] = []
    clock = iter(range(0, 10_000, 5))  # each reading 5 s after the last
    monkeypatch.setattr(load.time, "sleep", naps.append)
    monkeypatch.setattr(load.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(SystemExit, match=r"s3\.py: refusing to run \(--require-idle\)"):
        load.check(require_idle=True, what="s3.py")
    # It gave the load SETTLE_SECONDS to fall first, then refused.
    assert sum(naps) == pytest.approx(load.SETTLE_SECONDS, abs=5)


def test_require_idle_waits_for_its_own_last_load_to_settle(
    load: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load a benchmark's own last case leaves decays within a minute: the harness waits
    for it instead of refusing its own next case."""
    readings = iter([1.8, 1.5, 1.2, 0.9])
    monkeypatch.setattr("os.getloadavg", lambda: (next(readings), 0.5, 0.25))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(load.time, "sleep", lambda seconds: None)
    measured = load.check(require_idle=True, what="the next case")
    assert measured.idle and measured.one == 0.9
