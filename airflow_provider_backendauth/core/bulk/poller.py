"""The export status poller, sans-IO: one state machine that decides when to poll, how long
to wait, and when to give up, fed the interpreted answers by a driver that does the I/O.

Two drivers execute it: ``BulkExportClient.wait`` (blocking, in a worker) and
``BulkExportTrigger`` (asyncio, in the triggerer). Neither keeps its own counters, delays or
deadline, so the two paths cannot drift apart::

    poller = StatusPoller(status_url, ...)
    action = poller.start(now)
    while True:
        if isinstance(action, Poll):  action = poller.feed(fetch(action.url), now)
        elif isinstance(action, Sleep): sleep(action.seconds); action = poller.start(now)
        else: break                    # Done (the manifest) or Fail (why, with numbers)

Waiting rules (``docs/bulk-export.md``, "Waiting"):

- ``202``: the server's ``Retry-After``, down to ``RETRY_AFTER_FLOOR`` (1 s; lower only
  when ``poll_interval_min`` is set lower) and up to ``poll_interval_max`` (a longer one is
  said in the log, not silently cut); without one, a delay starting at ``poll_interval_min``
  and growing by 1.5x up to ``poll_interval_max``. ``poll_interval_min`` (2 s by default)
  paces a server that says nothing; a server that says when to come back is followed (the
  SMART reference server answers ``Retry-After: 1``), but not more often than the floor.
- ``429`` (polled too often): the server's ``Retry-After`` (at least the floor) is honoured
  even beyond ``poll_interval_max`` (polling earlier only earns another 429); without a
  usable value the delay doubles on each 429 in a row.
- 5xx / ``transient`` / no answer: up to ``max_transient_errors`` in a row, backing off,
  and up to ``max_poll_errors`` in all (a status URL flapping 500/202 is given up on, not
  polled until the deadline).
- Jitter: every wait is stretched by a random 0 to ``JITTER`` (10%) of itself (a wait at
  ``poll_interval_max`` too), never shortened (a server's ``Retry-After`` means "not
  before"). Hundreds of exports deferred together would otherwise poll in lockstep, every
  one in the same instant, for their whole wait. Tests pass their own ``random`` source to
  make the waits exact.
- Every wait ends by the deadline (``max_wait`` after the kick-off, ``PollSettings``: 7 days
  when unset): the last poll happens at the deadline, and a server asking to wait beyond
  it fails at once, saying so.

This module imports no Airflow and does no I/O.
"""

from __future__ import annotations

import logging
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.bulk.protocol import (
    Complete,
    Failed,
    Pending,
    RetryLater,
    StatusResult,
)

GROWTH = 1.5  # 202 without Retry-After
THROTTLE_GROWTH = 2.0  # 429 or errors without a usable Retry-After
# The shortest wait a server's Retry-After can ask for: a zero or sub-second value (seen from
# servers that compute it) must not turn the poll into a busy loop.
RETRY_AFTER_FLOOR = 1.0
JITTER = 0.1  # each wait is stretched by up to this fraction of itself, at random


@dataclass(frozen=True)
class Note:
    """A line for the driver's log (the poller has no logger of its own to stay sans-IO)."""

    level: int
    message: str


@dataclass(frozen=True)
class Poll:
    """Request ``url`` now and ``feed`` the interpreted answer."""

    url: str


@dataclass(frozen=True)
class Observed:
    """One ``202`` status answer, as the export log's ``status_progress`` event records it:
    the server's ``X-Progress`` (already redacted and escaped by ``interpret_status``) and
    its ``Retry-After`` in seconds (an HTTP-date converted), each None when absent."""

    x_progress: str | None
    retry_after: float | None


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds``, then call ``start`` again. ``progress`` is new ``X-Progress`` text;
    ``observed``: the 202 that led here (None after a 429 or an error), which drivers report
    on every poll, changed or not, as bulk-data-client logs every 202."""

    seconds: float
    notes: tuple[Note, ...] = ()
    progress: str | None = None
    observed: Observed | None = None


@dataclass(frozen=True)
class Done:
    """The export is complete: ``manifest`` is the server's JSON object."""

    manifest: dict[str, Any] = field(repr=False)
    expires: str | None = None


@dataclass(frozen=True)
class Fail:
    """Give up. ``timeout``: the deadline passed (or would pass); ``transient``: a later
    attempt could succeed (errors that persisted, a server asking to wait too long)."""

    message: str
    status_code: int | None = None
    diagnostics: str | None = None
    timeout: bool = False
    transient: bool = False


Action = Poll | Sleep | Done | Fail


def describe_seconds(seconds: float) -> str:
    """``12.0 s``, ``5.0 min``, ``3.2 h``, ``4.5 days``, ``31.7 years``: waits in messages."""
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 31_557_600:
        return f"{seconds / 86_400:.1f} days"
    return f"{seconds / 31_557_600:.1f} years"


class StatusPoller:
    """Decides the polling of one status URL (see the module docstring).

    Args:
        status_url: the URL to poll (a status URL, or a manifest page's ``next`` link).
        poll: intervals and error counts (``PollSettings``; its defaults when None). A
            ``Retry-After`` is honoured down to ``RETRY_AFTER_FLOOR``, or down to
            ``poll_interval_min`` when that is lower (tests, a server known to answer fast).
        deadline: a ``time.time()`` to give up at; None: ``poll.max_wait`` after the
            first ``start``.
        what: how messages name the thing polled.
        random: a source of floats in [0, 1) for the jitter (tests pass a fixed one).
    """

    def __init__(
        self,
        status_url: str,
        poll: PollSettings | None = None,
        *,
        deadline: float | None = None,
        shown_url: str | None = None,
        what: str = "the export",
        random: Callable[[], float] = _random.random,
    ) -> None:
        poll = self._settings = poll or PollSettings()
        self.status_url = status_url
        self.minimum = poll.poll_interval_min
        self.maximum = poll.poll_interval_max
        self.floor = min(self.minimum, RETRY_AFTER_FLOOR)  # the least a Retry-After gets
        self.max_transient_errors = poll.max_transient_errors
        self.max_poll_errors = poll.max_poll_errors
        self.deadline = deadline
        self.shown = shown_url or status_url
        self.what = what
        self._random = random
        self.polls = 0
        self.transient = 0
        self.errors = 0  # all errors of this wait, in a row or not
        self.throttled = 0
        self._delay: float | None = None
        self._last_progress: str | None = None
        self._last_long_retry_after: float | None = None

    @property
    def last_progress(self) -> str | None:
        """The server's latest ``X-Progress`` text (drivers report it with the outcome)."""
        return self._last_progress

    # -- the driver's calls ------------------------------------------------------------

    def first_spread(self) -> float:
        """Seconds to wait before the first poll for a driver that starts many waits at once
        (a triggerer restarting with hundreds of deferred exports, or hundreds deferred
        together): a random part of ``poll_interval_min``. It spreads their polls over the
        interval from the start; the per-wait jitter alone would take many rounds to, while
        the server answers each round as one burst."""
        return self._settings.poll_interval_min * self._random()

    def start(self, now: float) -> Poll | Fail:
        """The next step before a request: poll now, or fail when the deadline has passed."""
        if self.deadline is None:
            self.deadline = self._settings.deadline_after(now)
        if self.polls and now >= self.deadline:
            return self._timeout(now, "")
        return Poll(self.status_url)

    def feed(self, result: StatusResult, now: float) -> Action:
        """The next step after an answer (``interpret_status``'s result)."""
        self.polls += 1
        if self.deadline is None:
            self.deadline = self._settings.deadline_after(now)
        if isinstance(result, Complete):
            return Done(result.manifest, result.expires)
        if isinstance(result, Failed):
            return Fail(
                f"The export at {self.shown} failed: {result.diagnostics}",
                status_code=result.status_code,
                diagnostics=result.diagnostics,
            )
        if isinstance(result, RetryLater):
            return self._after_error(result, now)
        return self._after_pending(result, now)

    # -- the rules -----------------------------------------------------------------------

    def _after_pending(self, result: Pending, now: float) -> Action:
        self.transient = 0
        notes: list[Note] = []
        progress: str | None = None
        if result.throttled:
            self.throttled += 1
            if result.retry_after is not None:
                # The server said when; polling earlier only earns another 429.
                delay = max(result.retry_after, self.floor)
                why = "Retry-After"
            else:
                base = self._delay if self._delay is not None else self.minimum
                delay = max(self.minimum, base * THROTTLE_GROWTH)
                why = f"no usable Retry-After; backing off, 429 #{self.throttled} in a row"
            return self._sleep(
                delay,
                now,
                "Status polled too often (429)",
                why,
                level=logging.WARNING if self.throttled > 1 else logging.INFO,
            )
        self.throttled = 0
        if result.retry_after is not None:
            delay = min(max(result.retry_after, self.floor), self.maximum)
            if result.retry_after > self.maximum:
                # Said at INFO once per distinct request, then at DEBUG: not a line per poll.
                first = result.retry_after != self._last_long_retry_after
                self._last_long_retry_after = result.retry_after
                notes.append(
                    Note(
                        logging.INFO if first else logging.DEBUG,
                        f"The server asked to poll again in {describe_seconds(result.retry_after)}"
                        f" (Retry-After); polling in {describe_seconds(delay)} instead "
                        "(poll_interval_max)",
                    )
                )
        else:
            previous = self._delay
            delay = self.minimum if previous is None else previous * GROWTH
            delay = min(max(delay, self.minimum), self.maximum)
        if result.progress and result.progress != self._last_progress:
            self._last_progress = progress = result.progress
        prefix = f"Export in progress: {progress}" if progress else "Export in progress"
        return self._sleep(
            delay,
            now,
            prefix,
            "",
            level=logging.INFO if progress or notes else logging.DEBUG,
            notes=notes,
            progress=progress,
            observed=Observed(result.progress, result.retry_after),
        )

    def _after_error(self, result: RetryLater, now: float) -> Action:
        self.transient += 1
        self.errors += 1
        if self.errors > self.max_poll_errors:
            # Answers in between (a 202 after each 500) reset ``transient``, not this.
            return self._give_up(
                result,
                f"{self.errors} errors while waiting, whatever came between them "
                f"(max_poll_errors={self.max_poll_errors})",
            )
        if self.transient > self.max_transient_errors:
            return self._give_up(
                result,
                f"{self.transient} consecutive errors "
                f"(max_transient_errors={self.max_transient_errors})",
            )
        if result.retry_after is not None:
            delay = min(max(result.retry_after, self.floor), self.maximum)
        else:
            base = self._delay if self._delay is not None else self.minimum / THROTTLE_GROWTH
            delay = min(max(self.minimum, base * THROTTLE_GROWTH), self.maximum)
        return self._sleep(
            delay,
            now,
            f"Status poll failed transiently ({result.reason}; "
            f"{self.transient} of {self.max_transient_errors} in a row)",
            "",
            level=logging.WARNING,
        )

    def _give_up(self, result: RetryLater, after: str) -> Fail:
        return Fail(
            f"Polling {self.shown} kept failing ({result.reason}); gave up after {after}.",
            status_code=result.status_code,
            diagnostics=result.reason,
            transient=True,
        )

    def _sleep(
        self,
        delay: float,
        now: float,
        what: str,
        why: str,
        *,
        level: int,
        notes: list[Note] | None = None,
        progress: str | None = None,
        observed: Observed | None = None,
    ) -> Sleep | Fail:
        assert self.deadline is not None
        left = self.deadline - now
        if left <= 0:
            return self._timeout(now, why)
        if delay > left and why.startswith("Retry-After"):
            # The server will not answer before the deadline: waiting is pointless.
            return Fail(
                f"{what}: the server asked to wait {describe_seconds(delay)} ({why}) but only "
                f"{describe_seconds(left)} are left before the export's deadline (max_wait); "
                f"{self.what} at {self.shown} is not complete.",
                status_code=429,
                diagnostics=why,
                timeout=True,
                transient=True,
            )
        self._delay = delay  # the growth continues from the rule's delay, not the jitter's
        stretched = delay * (1.0 + JITTER * self._random())
        seconds = min(stretched, left)  # the last poll happens at the deadline
        suffix = f" ({why})" if why else ""
        at_deadline = " (the deadline)" if seconds < stretched else ""
        message = f"{what}; next poll in {describe_seconds(seconds)}{at_deadline}{suffix}"
        return Sleep(seconds, (*(notes or []), Note(level, message)), progress, observed)

    def _timeout(self, now: float, why: str) -> Fail:
        return Fail(
            f"{self.what[0].upper()}{self.what[1:]} at {self.shown} did not complete within "
            f"max_wait ({self.polls} polls).",
            diagnostics=why or None,
            timeout=True,
            transient=True,
        )
