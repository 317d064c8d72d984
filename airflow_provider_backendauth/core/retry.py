"""Retry policy shared by the token client, the REST/FHIR client and bulk downloads.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff and jitter; a server's ``Retry-After`` (seconds, HTTP-date or a Unix time) wins,
within a cap.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import Any

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


# A delta-seconds value this large is not a delay (it would be decades) but a Unix time some
# servers send instead of an HTTP-date (e.g. ``Retry-After: 1796160426``). It is read as one
# when it lands within this window around now; outside it, it stays a (huge) delay, which
# callers refuse rather than sleep through.
EPOCH_PAST_WINDOW = 86_400.0  # a moment up to a day ago: the wait is over
EPOCH_FUTURE_WINDOW = 366 * 86_400.0
# Larger values are clamped so arithmetic with them stays finite (about 317 years).
RETRY_AFTER_CEILING = 1e10


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when there is no usable value.

    Accepted forms: delta-seconds (``120``, also ``1.5``), an HTTP-date, and a Unix time in
    seconds or milliseconds (``1796160426``) when it falls between a day ago and a year ahead.
    A moment in the past means 0 (retry now). Negative, NaN, infinite and unparseable values
    give None, so the caller backs off as if the header were absent. A huge delay is
    returned as is (at most ``RETRY_AFTER_CEILING``): the caller compares it with its budget.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    current = time.time() if now is None else now
    try:
        number = float(value)
    except ValueError:
        return _http_date_delay(value, current)
    if not math.isfinite(number) or number < 0:
        return None
    for scale in (1.0, 1000.0):  # Unix seconds, then milliseconds
        moment = number / scale
        # (The size check keeps a delay of hours a delay even with a clock near zero.)
        in_window = current - EPOCH_PAST_WINDOW <= moment <= current + EPOCH_FUTURE_WINDOW
        if in_window and number >= EPOCH_PAST_WINDOW:
            return max(0.0, moment - current)
    return min(number, RETRY_AFTER_CEILING)


def _http_date_delay(value: str, current: float) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        delay = moment.timestamp() - current
    except (OverflowError, OSError, ValueError):
        return None
    return min(max(0.0, delay), RETRY_AFTER_CEILING)


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
