"""``PollSettings``: how an export's status is polled and when its wait ends, defined once.

The operator, the blocking client, the sans-IO ``StatusPoller`` and the trigger all take one
``PollSettings``: its defaults are the only copy, it is validated when it is made (a DAG
with ``poll_interval_max=1e12`` fails at parse time, not after a week), and it crosses to
the triggerer as a plain dict (``as_dict``/``from_dict``), so a deferred wait uses exactly
what the worker would have.

Bounds (each is far beyond any real export and only stops absurd or non-finite values):
poll intervals up to a day, ``max_wait`` up to ``MAX_WAIT_LIMIT`` (90 days), a kick-off busy
budget up to a day, error counts up to ``MAX_ERRORS_LIMIT``.

What the values mean (the waiting rules themselves are in ``core/bulk/poller.py``):

- ``poll_interval_min``: the first and shortest wait when the server sends no
  ``Retry-After``; ``poll_interval_max``: the longest wait (it also caps a 202's
  ``Retry-After``).
- ``max_wait``: seconds after the kick-off to give up (None: ``DEFAULT_MAX_WAIT``, 7 days:
  polling is always bounded).
- ``kickoff_busy_budget``: seconds to keep retrying a kick-off answered 429 (the server runs
  another export of this client) before failing.
- ``max_transient_errors``: 5xx / ``transient`` / network errors tolerated in a row.
- ``max_poll_errors``: such errors tolerated in all while one wait lasts, whatever answers
  lie between them: a status URL flapping 500/202 is given up on after this many errors
  (100 by default), not polled until the deadline. The count starts again when a wait
  starts again (a task retry, a triggerer restart).

This module imports no Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from airflow_provider_backendauth.core.errors import ConfigurationError

# Polling is bounded even when max_wait is not set: a week covers the multi-day exports
# real servers run (Epic), and a server that flaps or never finishes ends the task.
DEFAULT_MAX_WAIT = 7 * 86_400.0
MAX_WAIT_LIMIT = 90 * 86_400.0
MAX_INTERVAL = 86_400.0
MAX_ERRORS_LIMIT = 10_000


@dataclass(frozen=True)
class PollSettings:
    """How an export's status is polled (see the module docstring for each value).

    Raises:
        ConfigurationError: a value is not a finite number within its bounds.
    """

    poll_interval_min: float = 2.0
    poll_interval_max: float = 3600.0
    max_wait: float | None = None
    kickoff_busy_budget: float = 300.0
    max_transient_errors: int = 10
    max_poll_errors: int = 100

    def __post_init__(self) -> None:
        for name in ("poll_interval_min", "poll_interval_max", "kickoff_busy_budget"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))
        if self.max_wait is not None:
            object.__setattr__(self, "max_wait", _seconds("max_wait", self.max_wait))
        _count("max_transient_errors", self.max_transient_errors)
        _count("max_poll_errors", self.max_poll_errors)
        if not 0 < self.poll_interval_min <= self.poll_interval_max <= MAX_INTERVAL:
            raise ConfigurationError(
                "need 0 < poll_interval_min <= poll_interval_max <= "
                f"{MAX_INTERVAL:g} s, not {self.poll_interval_min:g} and "
                f"{self.poll_interval_max:g}"
            )
        if self.max_wait is not None and not 0 < self.max_wait <= MAX_WAIT_LIMIT:
            raise ConfigurationError(
                f"max_wait must be more than 0 and at most {MAX_WAIT_LIMIT:g} s (90 days), "
                f"not {self.max_wait:g}"
            )
        if self.kickoff_busy_budget > MAX_INTERVAL:
            raise ConfigurationError(
                f"kickoff_busy_budget must be at most {MAX_INTERVAL:g} s, "
                f"not {self.kickoff_busy_budget:g}"
            )

    @property
    def wait_seconds(self) -> float:
        """How long a wait may last after the kick-off (``max_wait`` or the default)."""
        return DEFAULT_MAX_WAIT if self.max_wait is None else self.max_wait

    def deadline_after(self, started: float) -> float:
        """The ``time.time()`` at which a wait that started at ``started`` gives up."""
        return started + self.wait_seconds

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (the trigger's serialised form)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PollSettings:
        """The settings ``as_dict`` gave; unknown names are refused (a typo would otherwise
        fall back to a default silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"unknown poll settings: {', '.join(unknown)}")
        return cls(**dict(values))


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0, not {value!r}")
    return seconds


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ERRORS_LIMIT:
        raise ConfigurationError(
            f"{name} must be a whole number from 0 to {MAX_ERRORS_LIMIT}, not {value!r}"
        )
    return value
