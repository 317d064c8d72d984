"""``FastestInstalled``: the first implementation that imports wins, a missing one is named
in the error, and a chosen one is not rebuilt just to check it again."""

from __future__ import annotations

import pytest

from airflow_provider_backendauth.core.backends import FastestInstalled


def test_choice_probe_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def missing() -> str:
        raise ImportError("no module named 'fastlib'")

    def slow() -> str:
        built.append("slow")
        return "slow"

    backends = FastestInstalled("thing", "BACKENDAUTH_TEST_THING", {"fast": missing, "slow": slow})
    monkeypatch.delenv("BACKENDAUTH_TEST_THING", raising=False)
    assert backends.names() == ["slow"]
    for _ in range(5):
        assert backends.choose()[0] == "slow"
        assert backends.choose("slow")[1] is slow
    assert built == ["slow"]  # probed once, by names()
    with pytest.raises(ValueError, match=r"the 'fast' thing is not installed \(no module"):
        backends.choose("fast")
    with pytest.raises(ValueError, match="thing must be one of"):
        backends.choose("other")
    monkeypatch.setenv("BACKENDAUTH_TEST_THING", "fast")
    monkeypatch.setattr(backends, "_auto", None)
    with pytest.raises(ValueError, match="not installed"):
        backends.choose()
