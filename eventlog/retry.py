"""The one retry policy: transient storage errors only, exponential backoff with jitter, bounded.

A sweep calls the store inside this policy, so a flow waits in place (its order holds)
while PostgreSQL recovers; when the budget is spent the last error propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from chem_persistence.eventlog.errors import classify, is_retryable, report_fault, sqlstate_of

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_ATTEMPTS = 8
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_INITIAL_WAIT_SECONDS = 0.05
DEFAULT_MAX_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = DEFAULT_ATTEMPTS
    max_seconds: float = DEFAULT_MAX_SECONDS
    initial_wait_seconds: float = DEFAULT_INITIAL_WAIT_SECONDS
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Run ``fn``, retrying transient errors; re-raise the last error when out of budget.

        Every failed attempt that is an operational fault (``errors.report_fault``) is logged
        at ERROR and reported to the fault listeners, the last one included.
        """

        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                report_fault(exc, what)
                raise

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return
            log.warning(
                "action=retry what=%s attempt=%d class=%s sqlstate=%s error=%s",
                what,
                state.attempt_number,
                classify(exc).value,
                sqlstate_of(exc),
                type(exc).__name__,
            )
            if on_retry is not None:
                on_retry(exc)

        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_seconds),
            wait=wait_exponential_jitter(
                multiplier=self.initial_wait_seconds,
                max=self.max_wait_seconds,
                jitter=self.initial_wait_seconds,
            ),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)
