"""eventlog.retry.RetryPolicy: transient errors only, bounded, observable (callback and log)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
import pytest
from psycopg import errors

from chem_persistence.eventlog.errors import IDEMPOTENCY_CONSTRAINT
from chem_persistence.eventlog.retry import RetryPolicy

FAST = RetryPolicy(attempts=5, initial_wait_seconds=0.001, max_wait_seconds=0.002)


class _Diag:
    constraint_name = IDEMPOTENCY_CONSTRAINT


class IdempotencyHit(errors.UniqueViolation):
    """A 23505 on (flow_id, flow_seq), as the server reports it (the diag names the key)."""

    @property
    def diag(self) -> _Diag:  # type: ignore[override]
        return _Diag()


def failing(
    errors_to_raise: list[BaseException], result: str = "done"
) -> tuple[Callable[[], str], list[BaseException]]:
    """A function raising these errors one call after another, then returning ``result``."""
    raised: list[BaseException] = []

    def fn() -> str:
        if len(raised) < len(errors_to_raise):
            raised.append(errors_to_raise[len(raised)])
            raise raised[-1]
        return result

    return fn, raised


def test_transient_errors_are_retried_until_success() -> None:
    fn, raised = failing(
        [errors.SerializationFailure("x"), psycopg.OperationalError("lost"), IdempotencyHit("k")]
    )
    seen: list[BaseException] = []
    assert FAST.call("what", fn, seen.append) == "done"
    assert len(raised) == 3
    assert seen == raised


@pytest.mark.parametrize(
    "exc",
    [
        errors.CheckViolation("bad"),
        errors.UniqueViolation("another key"),
        errors.UndefinedTable("missing"),
        RuntimeError("bug"),
        ValueError("caller"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_and_unexpected_errors_are_raised_at_once(exc: BaseException) -> None:
    fn, raised = failing([exc, exc])
    seen: list[BaseException] = []
    with pytest.raises(type(exc)) as info:
        FAST.call("what", fn, seen.append)
    assert info.value is exc
    assert len(raised) == 1  # one attempt, no retry
    assert seen == []


def test_a_transient_error_that_never_clears_stops_at_the_attempt_budget() -> None:
    attempts = 4
    policy = RetryPolicy(attempts=attempts, initial_wait_seconds=0.001, max_wait_seconds=0.002)
    fn, raised = failing([errors.DeadlockDetected(f"#{i}") for i in range(10)])
    seen: list[BaseException] = []
    with pytest.raises(errors.DeadlockDetected) as info:
        policy.call("what", fn, seen.append)
    assert len(raised) == attempts
    assert info.value is raised[-1]  # the last error, not a tenacity RetryError
    assert seen == raised[:-1]  # a callback per retry, none after the last attempt


def test_a_transient_error_stops_at_the_time_budget() -> None:
    policy = RetryPolicy(
        attempts=1000, max_seconds=0.05, initial_wait_seconds=0.01, max_wait_seconds=0.01
    )
    fn, raised = failing([errors.AdminShutdown(f"#{i}") for i in range(1000)])
    with pytest.raises(errors.AdminShutdown) as info:
        policy.call("what", fn)
    assert 1 < len(raised) < 1000
    assert info.value is raised[-1]


def test_without_a_callback_retries_still_happen() -> None:
    fn, raised = failing([errors.SerializationFailure("x")])
    assert FAST.call("what", fn) == "done"
    assert len(raised) == 1


def test_each_retry_is_logged_with_action_retry(caplog: pytest.LogCaptureFixture) -> None:
    fn, _ = failing([errors.SerializationFailure("a"), psycopg.OperationalError("b")])
    with caplog.at_level(logging.DEBUG, logger="chem_persistence.eventlog.retry"):
        assert FAST.call("append_batch", fn) == "done"
    records = [r for r in caplog.records if r.name == "chem_persistence.eventlog.retry"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING for r in records)
    messages = [r.getMessage() for r in records]
    assert all("action=retry" in m and "what=append_batch" in m for m in messages)
    assert "attempt=1" in messages[0] and "sqlstate=40001" in messages[0]
    assert "class=transient" in messages[0] and "SerializationFailure" in messages[0]
    assert "attempt=2" in messages[1] and "sqlstate=None" in messages[1]


def test_nothing_is_logged_when_nothing_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="chem_persistence.eventlog.retry"):
        assert FAST.call("what", lambda: "ok") == "ok"
        with pytest.raises(RuntimeError):
            FAST.call("what", failing([RuntimeError("x")])[0])
    assert not [r for r in caplog.records if r.name == "chem_persistence.eventlog.retry"]


def test_the_defaults_are_bounded() -> None:
    policy = RetryPolicy()
    assert 1 < policy.attempts <= 20
    assert 0 < policy.max_seconds <= 60
    assert 0 < policy.initial_wait_seconds <= policy.max_wait_seconds
