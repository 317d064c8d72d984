"""``FhirSearchOperator`` warns when its rendered ``_lastUpdated`` bounds cannot match anything
(the zero-length data interval of ``schedule=None`` and manual runs), instead of quietly
reporting 0 resources."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_backendauth.operators.fhir import FhirSearchOperator, empty_last_updated


@pytest.mark.parametrize(
    ("values", "empty"),
    [
        (["ge2024-06-01T00:00:00+00:00", "lt2024-06-01T00:00:00+00:00"], True),
        (["ge2024-06-01T00:00:00Z", "le2024-06-01T00:00:00Z"], False),  # one instant matches
        (["gt2024-06-01T00:00:00+00:00", "le2024-06-01T00:00:00+00:00"], True),
        (["ge2024-07-01", "lt2024-06-01"], True),
        (["ge2024-05-01T00:00:00+00:00", "lt2024-06-01T00:00:00+00:00"], False),
        (["ge2024-06-01T00:00:00+00:00"], False),
        (["ge2024-06", "lt2024-06"], False),  # partial dates: the server's call
    ],
)
def test_empty_interval_detection(values: list[str], empty: bool) -> None:
    pairs = [("_lastUpdated", v) for v in values] + [("_count", "5")]
    assert (empty_last_updated(pairs) is not None) is empty


def _run(make_conn: Callable[..., str], tmp_path: Path, start: Any, end: Any) -> dict[str, Any]:
    make_conn("fhir_interval")
    operator = FhirSearchOperator(
        task_id="search",
        backendauth_conn_id="fhir_interval",
        resource_type="Patient",
        search_params={
            "_lastUpdated": ["ge{{ data_interval_start | ts }}", "lt{{ data_interval_end | ts }}"]
        },
        destination=str(tmp_path),
    )
    context: dict[str, Any] = {"data_interval_start": start, "data_interval_end": end}
    operator.render_template_fields(context)  # type: ignore[arg-type]
    result: dict[str, Any] = operator.execute(context)  # type: ignore[arg-type]
    return result


def _logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    # Airflow's structlog renders task logs to stdout outside a task runner; stdlib
    # logging (caplog) sees them when configured that way: accept either.
    return capsys.readouterr().out + "\n".join(r.getMessage() for r in caplog.records)


def test_zero_length_data_interval_warns(make_conn, tmp_path, caplog, capsys) -> None:
    moment = pendulum.datetime(2024, 6, 1, tz="UTC")
    with caplog.at_level(logging.WARNING):
        result = _run(make_conn, tmp_path, moment, moment)
    assert result["resources"] == 0
    logged = _logged(caplog, capsys)
    assert "is an empty interval" in logged and "CronDataIntervalTimetable" in logged


def test_a_real_interval_does_not_warn(make_conn, tmp_path, caplog, capsys) -> None:
    with caplog.at_level(logging.WARNING):
        result = _run(
            make_conn,
            tmp_path,
            pendulum.datetime(2020, 1, 1, tz="UTC"),
            pendulum.datetime(2030, 1, 1, tz="UTC"),
        )
    assert result["resources"] > 0
    assert "empty interval" not in _logged(caplog, capsys)
