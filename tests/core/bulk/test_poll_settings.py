"""PollSettings: one copy of the poll defaults, validated once, serialised for the trigger."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.poll_settings import (
    DEFAULT_MAX_WAIT,
    MAX_WAIT_LIMIT,
    PollSettings,
)
from airflow_provider_backendauth.core.errors import ConfigurationError


def test_defaults_and_deadline() -> None:
    settings = PollSettings()
    assert (settings.poll_interval_min, settings.poll_interval_max) == (2.0, 3600.0)
    assert settings.deadline_after(1000.0) == 1000.0 + DEFAULT_MAX_WAIT
    assert PollSettings(max_wait=60).deadline_after(1000.0) == 1060.0


def test_round_trip_through_json() -> None:
    settings = PollSettings(poll_interval_min=0.5, max_wait=3600, max_transient_errors=3)
    assert PollSettings.from_dict(json.loads(json.dumps(settings.as_dict()))) == settings


@pytest.mark.parametrize(
    "values",
    [
        {"poll_interval_min": 0},
        {"poll_interval_min": 5, "poll_interval_max": 4},
        {"poll_interval_max": 1e9},
        {"poll_interval_min": float("nan")},
        {"poll_interval_max": float("inf")},
        {"poll_interval_min": "2"},
        {"poll_interval_min": True},
        {"max_wait": 0},
        {"max_wait": MAX_WAIT_LIMIT + 1},
        {"max_wait": float("inf")},
        {"kickoff_busy_budget": -1},
        {"kickoff_busy_budget": 1e9},
        {"max_transient_errors": -1},
        {"max_transient_errors": 10**9},
        {"max_transient_errors": 2.5},
    ],
)
def test_absurd_values_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        PollSettings(**values)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="poll_intervall_min"):
        PollSettings.from_dict({"poll_intervall_min": 1})
