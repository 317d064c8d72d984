"""The downloads' shared concurrency limit: fewer connections while a server throttles.

Owns the one adaptive rule (AIMD: a 429 halves the number of concurrent downloads, a run of
successes grows it back by one), apart from the downloader (``download.py``) that waits on
it, so the rule is stated and tested once whatever schedules the downloads.

This module imports no Airflow.
"""

from __future__ import annotations

import threading

from airflow_provider_backendauth.core.errors import BulkExportError
from airflow_provider_backendauth.core.redact import get_logger

log = get_logger(__name__)


class AdaptiveLimit:
    """A concurrency limit that halves on throttling and grows back by one after a run of
    successes (additive increase, multiplicative decrease)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.active = 0
        self.lowest = self.maximum
        self._successes = 0
        self._cond = threading.Condition()

    def acquire(self, stop: threading.Event | None = None) -> None:
        with self._cond:
            while self.active >= self.limit:
                if stop is not None and stop.is_set():
                    raise BulkExportError("Downloads were stopped.")
                self._cond.wait(0.5)
            self.active += 1

    def release(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def throttled(self) -> None:
        with self._cond:
            before = self.limit
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self._successes = 0
            if self.limit != before:
                log.warning(
                    "The file server is throttling (429): %d parallel downloads instead of %d",
                    self.limit,
                    before,
                )

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self.limit < self.maximum and self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self._cond.notify_all()
