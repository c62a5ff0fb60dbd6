"""The one place where storage failures are classified.

- TRANSIENT: the same call may well succeed later (serialization failure, deadlock, lost
  connection, server shutting down, too many connections, a lock wait cut off by
  ``lock_timeout``, a session ended by ``idle_in_transaction_session_timeout``, pool
  timeout). Retried with backoff, in place: the flow's order holds.
- CONFLICT: the idempotency key (flow_id, flow_seq) was hit by a concurrent writer. Retried:
  the next attempt re-reads the flow and turns it into a no-op or a SeqConflict.
- PERMANENT: this event can never be stored as it is (bad data, a different event at its
  position, a gap, a bad artifact hash). The worker dead-letters it and parks the flow.
- UNEXPECTED: anything else (a missing table, a bug, bad credentials, a statement cut off by
  ``statement_timeout``). Not retried here and never blamed on the event: the sweep gives its
  claim back and the events stay queued.

Unique violations are told apart by constraint: the idempotency key is a CONFLICT; a collision
on ``event_log_pkey`` is an *operational fault* (the ``seq`` sequence is behind the stored rows:
a data-only restore, logical replication, a row inserted with an explicit ``seq``) — TRANSIENT
(each failed attempt moves the sequence on), logged loudly and reported to the fault listeners
(a metric) by ``report_fault``; any other unique violation is UNEXPECTED. None of them is ever
PERMANENT: an innocent event is never dead-lettered, a flow never parked, for a server fault.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import psycopg_pool

from chem_persistence.domain.errors import ArtifactHashMismatch, InvalidValue, SeqConflict, SeqGap

log = logging.getLogger(__name__)

IDEMPOTENCY_CONSTRAINT = "event_log_flow_id_flow_seq_key"
#: event_log's primary key: a collision on it is the server's fault, never the event's.
LOG_PRIMARY_KEY = "event_log_pkey"
UNIQUE_VIOLATION = "23505"
LOCK_NOT_AVAILABLE = "55P03"
#: The server ended a session idle in a transaction (or idle) too long: nothing committed.
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"
IDLE_SESSION_TIMEOUT = "57P05"

TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",
        "40P01",
        "57P01",
        "57P02",
        "57P03",
        "53300",
        LOCK_NOT_AVAILABLE,
        IDLE_IN_TRANSACTION_TIMEOUT,
        IDLE_SESSION_TIMEOUT,
    }
)
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08"})
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23"})

#: What an operator should do about each operational fault, by constraint.
FAULT_REMEDIES = {
    LOG_PRIMARY_KEY: (
        "event_log's seq sequence is behind the stored rows (data-only restore, replication, "
        "or an explicit seq); realign it: SELECT setval(pg_get_serial_sequence('event_log', "
        "'seq'), max(seq)) FROM event_log"
    ),
}


class ErrorClass(enum.Enum):
    TRANSIENT = "transient"
    CONFLICT = "conflict"
    PERMANENT = "permanent"
    UNEXPECTED = "unexpected"


def sqlstate_of(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None


def classify(exc: BaseException) -> ErrorClass:
    # InvalidValue: a payload that does not decode, JSON that cannot be stored, a bad kind
    if isinstance(exc, SeqConflict | SeqGap | ArtifactHashMismatch | InvalidValue):
        return ErrorClass.PERMANENT
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return ErrorClass.TRANSIENT
    if not isinstance(exc, psycopg.Error):
        return ErrorClass.UNEXPECTED
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: the connection broke (OperationalError) or was closed under us
        # (InterfaceError); the outcome of an in-flight COMMIT is unknown, and retrying is
        # safe because the idempotency key absorbs a commit that did happen.
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return ErrorClass.TRANSIENT
        return ErrorClass.UNEXPECTED
    if state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return ErrorClass.TRANSIENT
    if state == UNIQUE_VIOLATION:
        constraint = _constraint(exc)
        if constraint == IDEMPOTENCY_CONSTRAINT:
            return ErrorClass.CONFLICT
        if constraint in FAULT_REMEDIES:
            return ErrorClass.TRANSIENT  # an operational fault: see report_fault
        return ErrorClass.UNEXPECTED  # no key the event itself can collide on
    if state[:2] in PERMANENT_SQLSTATE_CLASSES:
        return ErrorClass.PERMANENT
    return ErrorClass.UNEXPECTED


def is_retryable(exc: BaseException) -> bool:
    return classify(exc) in (ErrorClass.TRANSIENT, ErrorClass.CONFLICT)


def _constraint(exc: psycopg.Error) -> str | None:
    diag = exc.diag
    return diag.constraint_name if diag is not None else None


@dataclass(frozen=True)
class OperationalFault:
    """A storage failure that is the server's or the operator's to fix, not the event's."""

    constraint: str
    sqlstate: str
    remedy: str


FaultListener = Callable[[OperationalFault], None]
_fault_listeners: list[FaultListener] = []


def operational_fault(exc: BaseException) -> OperationalFault | None:
    """The operational fault ``exc`` is (a collision on event_log's primary key), or None."""
    if sqlstate_of(exc) != UNIQUE_VIOLATION:
        return None
    assert isinstance(exc, psycopg.Error)
    constraint = _constraint(exc)
    if constraint is None or constraint not in FAULT_REMEDIES:
        return None
    return OperationalFault(constraint, UNIQUE_VIOLATION, FAULT_REMEDIES[constraint])


def add_fault_listener(listener: FaultListener) -> None:
    """Call ``listener`` with every operational fault ``report_fault`` sees (a metric)."""
    _fault_listeners.append(listener)


def remove_fault_listener(listener: FaultListener) -> None:
    _fault_listeners.remove(listener)


def report_fault(exc: BaseException, what: str) -> OperationalFault | None:
    """If ``exc`` is an operational fault: log it at ERROR with its remedy, tell the listeners,
    and return it; else None. Called on every failed attempt of the retry policy."""
    fault = operational_fault(exc)
    if fault is None:
        return None
    log.error(
        "action=operational_fault what=%s constraint=%s sqlstate=%s: %s",
        what,
        fault.constraint,
        fault.sqlstate,
        fault.remedy,
    )
    for listener in list(_fault_listeners):
        try:
            listener(fault)
        except Exception:  # a broken metric must not turn a fault into another one
            log.exception("action=fault_listener_failed constraint=%s", fault.constraint)
    return fault
