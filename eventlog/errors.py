"""The one place where storage failures are classified.

- TRANSIENT: the same call may well succeed later (serialization failure, deadlock, lost
  connection, server shutting down, too many connections, pool timeout). Retried with backoff.
- CONFLICT: the idempotency key (flow_id, flow_seq) was hit by a concurrent writer. Retried:
  the next attempt re-reads the flow and turns it into a no-op or a SeqConflict.
- PERMANENT: this event can never be stored as it is (bad data, a different event at its
  position, a gap, a bad artifact hash). The worker dead-letters it and parks the flow.
- UNEXPECTED: anything else (a missing table, a bug, bad credentials). Not retried here and
  never blamed on the event: the drain job fails visibly and the events stay queued.
"""

from __future__ import annotations

import enum

import psycopg
import psycopg_pool

from domain.errors import ArtifactHashMismatch, InvalidValue, SeqConflict, SeqGap

IDEMPOTENCY_CONSTRAINT = "event_log_flow_id_flow_seq_key"

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08"})
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23"})


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
    if state == "23505" and _constraint(exc) == IDEMPOTENCY_CONSTRAINT:
        return ErrorClass.CONFLICT
    if state[:2] in PERMANENT_SQLSTATE_CLASSES:
        return ErrorClass.PERMANENT
    return ErrorClass.UNEXPECTED


def is_retryable(exc: BaseException) -> bool:
    return classify(exc) in (ErrorClass.TRANSIENT, ErrorClass.CONFLICT)


def _constraint(exc: psycopg.Error) -> str | None:
    diag = exc.diag
    return diag.constraint_name if diag is not None else None
