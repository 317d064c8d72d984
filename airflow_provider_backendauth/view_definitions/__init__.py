"""Ready SQL-on-FHIR ViewDefinitions for the resources every team starts with, following
US Core's must-support elements, shipped as JSON with the package:

``patient_demographics``, ``observation`` (quantities, and one row per component, e.g.
systolic and diastolic), ``condition``, ``encounter``, ``medication_request``, ``procedure``.

Every view has an ``id`` column (``getResourceKey()``) and, except Patient's, a ``patient``
column (``subject.getReferenceKey(Patient)``) that joins to it. Columns that may hold more
than one value take the first (``.first()``), so each resource gives one row (Observation:
one per component). Use them as they are, or copy one as the start of your own::

    from airflow_provider_backendauth.view_definitions import load, names

    assert "observation" in names()
    view = load("observation")   # a fresh dict each call
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def names() -> list[str]:
    """The names of the ready views, sorted."""
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict[str, Any]:
    """The ready view ``name`` (a new dict each call)."""
    if name not in names():
        raise KeyError(f"no ready view {name!r}; there are {', '.join(names())}")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    view: dict[str, Any] = json.loads(text)
    return view
