"""Retry policy shared by the token client, the REST/FHIR client and bulk downloads.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff and jitter; a server's ``Retry-After`` (seconds or HTTP-date) wins, within a cap.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    current = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return max(0.0, (moment - current).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try.

    Attributes:
        attempts: total attempts including the first (1 = no retry).
        initial_wait: first backoff in seconds; doubles each attempt, with full jitter.
        max_wait: cap on one backoff computed by us.
        max_retry_after: cap on a server's Retry-After; a longer request fails instead of
            sleeping for hours inside a worker.
    """

    attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 30.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (``attempt`` starts at 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_wait, self.initial_wait * (2 ** (attempt - 1)))
        # Half fixed, half random: spreads out many workers retrying the same server.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def tenacity_kwargs(
        self,
        is_retryable: Callable[[BaseException], bool],
        retry_after_of: Callable[[BaseException], float | None],
        before_sleep: Callable[[Any], None] | None = None,
    ) -> dict[str, Any]:
        """Arguments for ``tenacity.Retrying`` implementing this policy."""
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = retry_after_of(exc) if exc is not None else None
            return self.backoff(state.attempt_number, after)

        kwargs: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(max(1, self.attempts)),
            "wait": wait,
            "retry": tenacity.retry_if_exception(is_retryable),
            "reraise": True,
        }
        if before_sleep is not None:
            kwargs["before_sleep"] = before_sleep
        return kwargs
