"""Fault helpers on top of the sandbox's ``faults.add``."""

from __future__ import annotations

from typing import Any


def after_requests(sb: Any, path: str, passing: int, **fault: Any) -> None:
    """Let ``passing`` requests under ``path`` through, then apply ``fault``.

    Rules are tried in order and the first with uses left wins: a do-nothing rule used up by
    the first ``passing`` requests puts the real fault on request ``passing + 1`` (e.g. the
    second page of a search, whose path is the same as the first's).
    """
    sb.faults.add(path, times=passing)
    sb.faults.add(path, **fault)
