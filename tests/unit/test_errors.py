"""eventlog.errors.classify: the one table that decides what is retried and what is poison.

Errors are built the way psycopg builds them, by SQLSTATE (``psycopg.errors.lookup``). Unique
violations by constraint need a real server diagnostic (the constraint name): the idempotency
key is covered by tests/integration/test_pg_constraints.py, event_log_pkey by
tests/integration/test_pg_operational_faults.py.
"""

from __future__ import annotations

from uuid import UUID

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout, TooManyRequests

from chem_persistence.domain.codec import DecodeError
from chem_persistence.domain.errors import ArtifactHashMismatch, SeqConflict, SeqGap
from chem_persistence.domain.json_values import InvalidJson
from chem_persistence.eventlog.errors import (
    ErrorClass,
    OperationalFault,
    add_fault_listener,
    classify,
    is_retryable,
    operational_fault,
    remove_fault_listener,
    report_fault,
    sqlstate_of,
)

FLOW = UUID("00000000-0000-4000-8000-00000000000e")

SQLSTATE_CASES = [
    # transient: the same call may succeed later
    ("40001", "SerializationFailure", ErrorClass.TRANSIENT),
    ("40P01", "DeadlockDetected", ErrorClass.TRANSIENT),
    ("08000", "ConnectionException", ErrorClass.TRANSIENT),
    ("08006", "ConnectionFailure", ErrorClass.TRANSIENT),
    ("08003", "ConnectionDoesNotExist", ErrorClass.TRANSIENT),
    ("08001", "SqlclientUnableToEstablishSqlconnection", ErrorClass.TRANSIENT),
    ("57P01", "AdminShutdown", ErrorClass.TRANSIENT),
    ("57P02", "CrashShutdown", ErrorClass.TRANSIENT),
    ("57P03", "CannotConnectNow", ErrorClass.TRANSIENT),
    ("53300", "TooManyConnections", ErrorClass.TRANSIENT),
    ("55P03", "LockNotAvailable", ErrorClass.TRANSIENT),  # lock_timeout: retried in place
    ("25P03", "IdleInTransactionSessionTimeout", ErrorClass.TRANSIENT),  # nothing committed
    ("57P05", "IdleSessionTimeout", ErrorClass.TRANSIENT),
    # permanent: this data can never be stored
    ("22P02", "InvalidTextRepresentation", ErrorClass.PERMANENT),
    ("22001", "StringDataRightTruncation", ErrorClass.PERMANENT),
    ("22003", "NumericValueOutOfRange", ErrorClass.PERMANENT),
    ("23502", "NotNullViolation", ErrorClass.PERMANENT),
    ("23503", "ForeignKeyViolation", ErrorClass.PERMANENT),
    ("23514", "CheckViolation", ErrorClass.PERMANENT),
    # a unique violation on no known key is not the event's fault: never dead-lettered
    ("23505", "UniqueViolation", ErrorClass.UNEXPECTED),
    # unexpected: neither the event's fault nor worth retrying blindly
    ("42P01", "UndefinedTable", ErrorClass.UNEXPECTED),
    ("42703", "UndefinedColumn", ErrorClass.UNEXPECTED),
    ("28P01", "InvalidPassword", ErrorClass.UNEXPECTED),
    ("P0001", "RaiseException", ErrorClass.UNEXPECTED),
    ("53100", "DiskFull", ErrorClass.UNEXPECTED),
    ("57014", "QueryCanceled", ErrorClass.UNEXPECTED),
]


@pytest.mark.parametrize(
    ("sqlstate", "name", "expected"), SQLSTATE_CASES, ids=[c[0] for c in SQLSTATE_CASES]
)
def test_database_errors_are_classified_by_sqlstate(
    sqlstate: str, name: str, expected: ErrorClass
) -> None:
    cls = errors.lookup(sqlstate)
    assert cls.__name__ == name  # the table above names what PostgreSQL means by the code
    exc = cls("simulated")
    assert exc.sqlstate == sqlstate
    assert sqlstate_of(exc) == sqlstate
    assert classify(exc) is expected
    assert is_retryable(exc) is (expected in (ErrorClass.TRANSIENT, ErrorClass.CONFLICT))


OTHER_CASES: list[tuple[str, BaseException, ErrorClass]] = [
    # no SQLSTATE: the connection broke; an in-flight COMMIT's outcome is unknown
    (
        "OperationalError",
        psycopg.OperationalError("server closed the connection"),
        ErrorClass.TRANSIENT,
    ),
    ("InterfaceError", psycopg.InterfaceError("the connection is closed"), ErrorClass.TRANSIENT),
    ("PoolTimeout", PoolTimeout("couldn't get a connection after 30.00 sec"), ErrorClass.TRANSIENT),
    ("ProgrammingError", psycopg.ProgrammingError("bad query"), ErrorClass.UNEXPECTED),
    ("DataError", psycopg.DataError("no sqlstate"), ErrorClass.UNEXPECTED),
    # psycopg-pool's "too many clients waiting" is a PoolTimeout too: the pool is busy, not broken
    ("TooManyRequests", TooManyRequests("queue full"), ErrorClass.TRANSIENT),
    # the domain's own refusals: this event is poison
    ("SeqConflict", SeqConflict(FLOW, 3), ErrorClass.PERMANENT),
    ("SeqGap", SeqGap(FLOW, 5, 3), ErrorClass.PERMANENT),
    ("ArtifactHashMismatch", ArtifactHashMismatch("a" * 64, "b" * 64), ErrorClass.PERMANENT),
    ("DecodeError", DecodeError("kind", {}, "expected an object"), ErrorClass.PERMANENT),
    ("InvalidJson", InvalidJson("data", "\x00", "NUL"), ErrorClass.PERMANENT),
    # anything else: a bug, not retried, not blamed on the event
    ("RuntimeError", RuntimeError("boom"), ErrorClass.UNEXPECTED),
    ("ValueError", ValueError("bad batch"), ErrorClass.UNEXPECTED),
    ("KeyError", KeyError("x"), ErrorClass.UNEXPECTED),
]


@pytest.mark.parametrize(
    ("exc", "expected"), [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES]
)
def test_other_errors_are_classified_by_type(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) is expected
    assert is_retryable(exc) is (expected is ErrorClass.TRANSIENT)


def test_sqlstate_of_is_none_without_a_database_error() -> None:
    assert sqlstate_of(psycopg.OperationalError("lost")) is None
    assert sqlstate_of(RuntimeError("x")) is None
    assert sqlstate_of(errors.lookup("40001")("x")) == "40001"


def test_a_subclass_of_a_transient_error_stays_transient() -> None:
    class Custom(errors.SerializationFailure):
        pass

    assert classify(Custom("x")) is ErrorClass.TRANSIENT


def test_every_sqlstate_of_class_08_is_transient() -> None:
    for code in ("08000", "08001", "08003", "08004", "08006", "08007", "08P01"):
        assert classify(errors.lookup(code)("x")) is ErrorClass.TRANSIENT, code


def test_an_error_without_a_constraint_is_no_operational_fault() -> None:
    assert operational_fault(errors.lookup("23505")("no diag")) is None
    assert operational_fault(errors.lookup("55P03")("lock")) is None
    assert operational_fault(RuntimeError("x")) is None
    assert report_fault(errors.lookup("40001")("x"), "append") is None


def test_a_failing_fault_listener_never_hides_the_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    fault = OperationalFault("event_log_pkey", "23505", "fix it")
    monkeypatch.setattr("chem_persistence.eventlog.errors.operational_fault", lambda exc: fault)
    seen: list[OperationalFault] = []

    def broken(_: OperationalFault) -> None:
        raise RuntimeError("metric backend down")

    add_fault_listener(broken)
    add_fault_listener(seen.append)
    try:
        assert report_fault(errors.lookup("23505")("x"), "append") is fault
    finally:
        remove_fault_listener(broken)
        remove_fault_listener(seen.append)
    assert seen == [fault]
