"""Transient faults on the real PostgreSQL: the store retries through them and loses nothing.

A killer thread terminates the store's backends (found by the pool's application_name) while
an appender writes; the flow must end complete, in order and without a duplicate, and the
retries must have happened (counted through ``on_retry``). Then the budget: a transient error
that never clears is retried exactly ``attempts`` times and the last error comes out. Last, a
COMMIT whose outcome the client never learns (simulated deterministically): the retry must
neither lose the event nor store it twice, through append_batch and append alike.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import psycopg
import pytest
from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.errors import ErrorClass, classify
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.retry import RetryPolicy
from chem_persistence.eventlog.store import PgEventStore

T0 = datetime(2024, 8, 1, tzinfo=UTC)
FP = "9" * 64
BATCH = 3
MIN_EVENTS = 900
MAX_EVENTS = 3000  # keeps going (bounded) until the killer has caused a retry
MAX_SECONDS = 15.0
MIN_RETRIES = 3
KILL_INTERVAL_S = 0.05
FAST_RETRY = RetryPolicy(
    attempts=20, max_seconds=20.0, initial_wait_seconds=0.005, max_wait_seconds=0.1
)

# Only backends at work (in a statement or a transaction) and past their start-up: a kill then
# lands inside an append, which must be retried. Killing connections while they are being
# established only exercises psycopg-pool's reconnect backoff (seconds per failed attempt).
KILL_SQL = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = %s
  AND state IN ('active', 'idle in transaction')
  AND backend_start < clock_timestamp() - interval '30 milliseconds'
"""


@pytest.fixture
def fault_pool(database_url: str) -> Iterator[tuple[Pool, str]]:
    """A pool of this test's own, named so that only its backends are killed."""
    name = f"chem-fault-{secrets.token_hex(4)}"
    settings = DatabaseSettings(url=database_url, min_connections=1, max_connections=2)
    opened = open_pool(settings, name=name, migrate=False)
    try:
        yield opened, name
    finally:
        opened.close()


def event_kind(i: int) -> tuple[FlowEventKind, list[Artifact]]:
    if i % 10 == 9:
        body = Artifact("chunk", {"i": i, "text": "résumé 🧪"})
        return StepFinished(i, "s", (body.hash,), FP), [body]
    return StepSignal(i % 4, "s", "N", {"i": i, "f": i / 8}), []


def test_appends_survive_killed_connections_complete_and_unduplicated(
    database_url: str, pool: Pool, fault_pool: tuple[Pool, str]
) -> None:
    kill_pool, name = fault_pool
    retried: list[BaseException] = []
    store = PgEventStore(kill_pool, retry=FAST_RETRY, on_retry=retried.append)
    flow = uuid4()
    stop = threading.Event()
    killed: list[int] = []
    killer_errors: list[BaseException] = []

    def killer() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True, application_name="killer") as c:
                while not stop.is_set():
                    row = c.execute(KILL_SQL, (name,)).fetchone()
                    killed.append(int(row[0]) if row else 0)
                    time.sleep(KILL_INTERVAL_S)
        except BaseException as exc:  # surfaced by the main thread
            killer_errors.append(exc)

    sent: list[FlowEvent] = []
    bodies: dict[str, Artifact] = {}
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    deadline = time.monotonic() + MAX_SECONDS
    try:
        while len(sent) < MIN_EVENTS or (
            len(retried) < MIN_RETRIES and len(sent) < MAX_EVENTS and time.monotonic() < deadline
        ):
            batch: list[FlowEvent] = []
            batch_bodies: dict[str, Artifact] = {}
            for i in range(len(sent), len(sent) + BATCH):
                kind, artifacts = event_kind(i)
                batch.append(FlowEvent(i, flow, kind, T0 + timedelta(milliseconds=i)))
                batch_bodies.update({a.hash: a for a in artifacts})
            assert store.append_batch(flow, batch, batch_bodies) == batch
            sent += batch
            bodies.update(batch_bodies)
            if len(sent) % (10 * BATCH) == 0:  # reads are retried too
                assert store.list(flow) == sent
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not killer_errors
    assert sum(killed) > 0, "the killer never found a connection to kill"
    assert len(retried) >= MIN_RETRIES, "no append was ever retried"
    assert {classify(exc) for exc in retried} <= {ErrorClass.TRANSIENT, ErrorClass.CONFLICT}

    # Checked through the untouched session pool: complete, ordered, no duplicate.
    reader = PgEventStore(pool)
    stored = reader.list(flow)
    assert [e.seq for e in stored] == list(range(len(sent)))
    assert stored == sent
    assert reader.count_events([flow]) == len(sent)
    assert reader.count_artifacts([flow]) == len(bodies)
    for artifact_hash, body in bodies.items():
        row = reader.artifact(artifact_hash)
        assert row is not None and (row.kind, row.payload) == (body.kind, body.payload)


def test_retry_gives_up_after_its_budget_and_raises_the_last_error() -> None:
    """A real lost connection (nothing listens on port 1): transient, retried, then raised."""
    policy = RetryPolicy(attempts=4, initial_wait_seconds=0.001, max_wait_seconds=0.002)
    raised: list[BaseException] = []
    seen_by_callback: list[BaseException] = []

    def connect() -> None:
        try:
            psycopg.connect("postgresql://127.0.0.1:1/none", connect_timeout=2).close()
        except psycopg.OperationalError as exc:
            raised.append(exc)
            raise

    with pytest.raises(psycopg.OperationalError) as info:
        policy.call("connect", connect, seen_by_callback.append)
    assert classify(info.value) is ErrorClass.TRANSIENT
    assert len(raised) == 4
    assert info.value is raised[-1]
    assert seen_by_callback == raised[:-1]


def test_a_store_whose_pool_never_lends_a_connection_gives_up_with_pool_timeout(
    database_url: str,
) -> None:
    pool: Pool = ConnectionPool(
        database_url, min_size=1, max_size=1, timeout=0.1, open=True, name="chem-starved"
    )
    try:
        retries: list[BaseException] = []
        policy = RetryPolicy(attempts=3, initial_wait_seconds=0.001, max_wait_seconds=0.002)
        store = PgEventStore(pool, retry=policy, on_retry=retries.append)
        flow = uuid4()
        event = FlowEvent(0, flow, StepSignal(0, "s", "N", 1), T0)
        with pool.connection():  # the only connection, held: every attempt times out
            with pytest.raises(PoolTimeout):
                store.append_batch(flow, [event])
            assert len(retries) == 2
            assert all(isinstance(exc, PoolTimeout) for exc in retries)
        # once a connection is free again the same call goes through
        assert store.append_batch(flow, [event]) == [event]
        assert store.list(flow) == [event]
    finally:
        pool.close()


# --- a COMMIT whose outcome the client never learns -------------------------------------------


class AckLostPool:
    """Lends the real pool's connections; the first ``failures`` blocks that COMMIT then raise
    as if the connection had dropped before the server's answer arrived (outcome unknown)."""

    def __init__(self, pool: Pool, failures: int) -> None:
        self.pool = pool
        self.failures = failures

    @contextmanager
    def connection(self) -> Iterator[Connection[TupleRow]]:
        with self.pool.connection() as conn:
            yield conn
        if self.failures > 0:  # reached only when the block committed
            self.failures -= 1
            raise psycopg.OperationalError("connection lost after COMMIT (simulated)")


def ack_lost_store(pool: Pool, failures: int, retried: list[BaseException]) -> PgEventStore:
    policy = RetryPolicy(attempts=5, initial_wait_seconds=0.001, max_wait_seconds=0.002)
    lossy = AckLostPool(pool, failures)
    return PgEventStore(lossy, retry=policy, on_retry=retried.append)  # type: ignore[arg-type]


def test_append_batch_retried_after_a_committed_but_unacknowledged_write_stores_once(
    pool: Pool,
) -> None:
    retried: list[BaseException] = []
    store = ack_lost_store(pool, 2, retried)
    flow = uuid4()
    events = [FlowEvent(i, flow, StepStarted(i, "s"), T0 + timedelta(seconds=i)) for i in range(3)]
    assert store.append_batch(flow, events[:2]) == events[:2]
    assert store.append_batch(flow, events) == events
    assert len(retried) == 2  # both calls committed, were told otherwise, and retried
    assert PgEventStore(pool).list(flow) == events


def test_append_retried_after_a_committed_but_unacknowledged_write_stores_once(
    pool: Pool,
) -> None:
    """append() picks the position itself, so the key alone cannot absorb its retry: the retry
    must find the event its earlier attempt committed instead of appending a second copy."""
    retried: list[BaseException] = []
    store = ack_lost_store(pool, 2, retried)
    flow = uuid4()
    first = store.append(flow, StepStarted(0, "s"), T0)
    second = store.append(flow, StepStarted(0, "s"), T0 + timedelta(microseconds=1))
    assert len(retried) == 2
    assert (first.seq, second.seq) == (0, 1)
    assert PgEventStore(pool).list(flow) == [first, second]
    assert [e.log_seq for e in PgEventStore(pool).list(flow)] == [first.log_seq, second.log_seq]


class _RollsBack:
    """A connection whose transactions end in a lost connection instead of a COMMIT."""

    def __init__(self, conn: Connection[TupleRow]) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield
            raise psycopg.OperationalError("connection lost before COMMIT (simulated)")


class LostBeforeCommitPool:
    """The first block that uses it is rolled back; then ``meanwhile()`` runs (another writer)."""

    def __init__(self, pool: Pool, meanwhile: Callable[[], object]) -> None:
        self.pool = pool
        self.meanwhile = meanwhile
        self.failures = 1

    @contextmanager
    def connection(self) -> Iterator[object]:
        fail, self.failures = self.failures > 0, max(0, self.failures - 1)
        try:
            with self.pool.connection() as conn:
                yield _RollsBack(conn) if fail else conn
        except psycopg.OperationalError:
            if fail:
                self.meanwhile()
            raise


@pytest.mark.parametrize("other_writer", [False, True])
def test_append_retry_after_a_rolled_back_attempt_appends_exactly_once(
    pool: Pool, other_writer: bool
) -> None:
    """The other side of the same rule: an attempt that rolled back left nothing behind; if
    another writer took its position meanwhile, the retry appends after that writer's event."""
    flow = uuid4()
    other = PgEventStore(pool)
    retried: list[BaseException] = []

    def meanwhile() -> None:
        if other_writer:
            other.append(flow, StepStarted(9, "other"), T0)

    store = PgEventStore(
        LostBeforeCommitPool(pool, meanwhile),  # type: ignore[arg-type]
        retry=RetryPolicy(attempts=3, initial_wait_seconds=0.001, max_wait_seconds=0.002),
        on_retry=retried.append,
    )
    mine = store.append(flow, StepStarted(0, "mine"), T0)
    assert len(retried) == 1
    expected = [StepStarted(9, "other"), StepStarted(0, "mine")] if other_writer else [mine.kind]
    assert [e.kind for e in other.list(flow)] == expected
    assert mine.seq == len(expected) - 1
