"""Retry policy shared by the token client, the REST/FHIR client and bulk downloads.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff and jitter; a server's ``Retry-After`` (seconds, HTTP-date or a Unix time) wins,
within a cap.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
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


class _StopWhenAskedToWaitLonger:
    """tenacity stop condition: the server's Retry-After is beyond what we agree to sleep."""

    def __init__(self, cap: float, retry_after: Callable[[Any], float | None]) -> None:
        self.cap = cap
        self.retry_after = retry_after

    def __call__(self, state: Any) -> bool:
        after = self.retry_after(state)
        return after is not None and after > self.cap

    def __or__(self, other: Any) -> Any:
        import tenacity

        return tenacity.stop_any(self, other)  # type: ignore[arg-type]

    def __ror__(self, other: Any) -> Any:
        import tenacity

        return tenacity.stop_any(other, self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try, expressed once and executed by tenacity everywhere.

    Built once per connection (``BackendAuthClient.retry``) and shared by the token exchange,
    REST/FHIR calls, the hook's ``run()`` and bulk downloads, all in workers through
    ``tenacity.Retrying``.

    Attributes:
        attempts: total attempts including the first (1 = no retry).
        initial_wait: first backoff in seconds; doubles each attempt, half of it jittered.
        max_wait: cap on one backoff computed by us.
        max_retry_after: cap on a server's Retry-After. A server asking for longer makes the
            call fail at once with its own answer instead of sleeping for hours in a worker.
    """

    attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 30.0
    max_retry_after: float = 120.0

    @classmethod
    def from_retries(cls, retries: int, **overrides: Any) -> RetryPolicy:
        """The policy for a connection's ``retries`` extra (retries after the first try)."""
        return cls(attempts=max(0, int(retries)) + 1, **overrides)

    def _exponential(self) -> Any:
        import tenacity

        # Half fixed, half random: spreads out many workers retrying the same server while
        # keeping a floor, so a retry never comes back at once.
        half_initial, half_cap = self.initial_wait / 2, self.max_wait / 2
        return tenacity.wait_exponential(
            multiplier=half_initial, max=half_cap, min=0
        ) + tenacity.wait_random_exponential(multiplier=half_initial, max=half_cap)

    def tenacity_kwargs(
        self,
        is_retryable: Callable[[BaseException], bool],
        retry_after_of: Callable[[BaseException], float | None],
        before_sleep: Callable[[Any], Any] | None = None,
    ) -> dict[str, Any]:
        """Arguments for ``tenacity.Retrying`` implementing this policy.

        A failure whose Retry-After exceeds ``max_retry_after`` stops the retries (the caller
        sees that failure) rather than sleeping at the cap and asking again.
        """
        import tenacity

        exponential = self._exponential()

        def retry_after(state: tenacity.RetryCallState) -> float | None:
            exc = state.outcome.exception() if state.outcome else None
            return retry_after_of(exc) if exc is not None else None

        def wait(state: tenacity.RetryCallState) -> float:
            after = retry_after(state)
            if after is not None:
                return min(max(0.0, after), self.max_retry_after)
            return float(exponential(state))

        kwargs: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(max(1, self.attempts))
            | _StopWhenAskedToWaitLonger(self.max_retry_after, retry_after),
            "wait": wait,
            "retry": tenacity.retry_if_exception(is_retryable),
            "reraise": True,
        }
        if before_sleep is not None:
            kwargs["before_sleep"] = before_sleep
        return kwargs

    def retrying(
        self,
        is_retryable: Callable[[BaseException], bool],
        retry_after_of: Callable[[BaseException], float | None] = lambda exc: None,
        *,
        before_sleep: Callable[[Any], Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Any:
        """A ``tenacity.Retrying`` for this policy; ``overrides`` are the HTTP provider's
        ``retry_args`` convention (``stop``, ``wait``, ``retry``... replace ours)."""
        import tenacity

        return tenacity.Retrying(
            **self._final_kwargs(is_retryable, retry_after_of, before_sleep, overrides)
        )

    def _final_kwargs(
        self,
        is_retryable: Callable[[BaseException], bool],
        retry_after_of: Callable[[BaseException], float | None],
        before_sleep: Callable[[Any], Any] | None,
        overrides: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        kwargs = self.tenacity_kwargs(is_retryable, retry_after_of, before_sleep)
        kwargs.update(overrides or {})
        kwargs["reraise"] = True  # callers see the real error, not tenacity's RetryError
        return kwargs
