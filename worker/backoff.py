"""Waiting out transient trouble (Redis or PostgreSQL away): exponential pauses, logged once."""

from __future__ import annotations

import logging
import threading
import time

from chem_persistence.worker import metrics

log = logging.getLogger(__name__)


class Backoff:
    """Waits out transient trouble: logged once when it starts and once when it ends."""

    INITIAL_SECONDS = 0.1
    MAX_SECONDS = 5.0

    def __init__(self) -> None:
        self.pause = 0.0
        self.since: float | None = None

    def wait(self, exc: BaseException, stop: threading.Event | None) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("action=waiting cause=%s error=%.300s", type(exc).__name__, exc)
        self.pause = min(max(self.pause * 2, self.INITIAL_SECONDS), self.MAX_SECONDS)
        metrics.CYCLES.labels("trouble").inc()
        (stop or threading.Event()).wait(self.pause)

    def reset(self) -> None:
        if self.since is not None:
            log.warning("action=recovered after_seconds=%.1f", time.monotonic() - self.since)
        self.since, self.pause = None, 0.0
