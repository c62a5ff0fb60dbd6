"""A collision on event_log's primary key is the server's fault, never the event's.

After a data-only restore (or replication, or a row written with an explicit seq) the sequence
of ``event_log.seq`` lags behind the stored rows: the next appends collide on
``event_log_pkey``. Such an append is retried (each failed attempt moves the sequence on), the
collision is logged at ERROR with its remedy and counted, and a drain that runs out of attempts
fails visibly with its events still queued: nothing is dead-lettered, no flow parked.

Each test gets a fresh migrated database: they wind its sequence back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import fakeredis
import psycopg
import pytest
from prometheus_client import REGISTRY

from chem_persistence.domain.events import FlowEvent, FlowInitialized, StepStarted
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.errors import (
    FAULT_REMEDIES,
    LOG_PRIMARY_KEY,
    ErrorClass,
    OperationalFault,
    add_fault_listener,
    classify,
    remove_fault_listener,
    sqlstate_of,
)
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.retry import RetryPolicy
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker import metrics  # noqa: F401  (registers the counter's fault listener)
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import StorageUnavailable, Sweeper

T0 = datetime(2024, 8, 1, 10, 0, tzinfo=UTC)
QUICK = RetryPolicy(attempts=8, max_seconds=60, initial_wait_seconds=0.01, max_wait_seconds=0.02)


def events(flow: UUID, count: int) -> list[FlowEvent]:
    kinds = [FlowInitialized("e" * 64, count), *(StepStarted(i, f"s{i}") for i in range(count))]
    return [FlowEvent(i, flow, kinds[i], T0 + timedelta(milliseconds=i)) for i in range(count)]


@pytest.fixture
def fresh_pool(migrated_database_url: str) -> Iterator[Pool]:
    settings = DatabaseSettings(url=migrated_database_url, min_connections=1, max_connections=2)
    pool = open_pool(settings, migrate=False, name="chem-test-faults")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def faults() -> Iterator[list[OperationalFault]]:
    seen: list[OperationalFault] = []
    add_fault_listener(seen.append)
    try:
        yield seen
    finally:
        remove_fault_listener(seen.append)


def rewind_sequence(url: str, rows: int) -> None:
    """Store ``rows`` events in a flow of their own, then put the sequence back to its start,
    as a data-only restore leaves it: the next ``rows`` values of seq are taken."""
    with psycopg.connect(url) as conn:
        flow = uuid.uuid4()
        for i in range(rows):
            conn.execute(
                "INSERT INTO event_log (flow_id, flow_seq, event_type, payload)"
                " VALUES (%s, %s, 'stepstarted', '{}')",
                [flow, i],
            )
        conn.execute("SELECT setval(pg_get_serial_sequence('event_log', 'seq'), 1, false)")


def faults_counted() -> float:
    value = REGISTRY.get_sample_value(
        "chem_operational_faults_total", {"constraint": LOG_PRIMARY_KEY}
    )
    return value or 0.0


def test_a_primary_key_collision_is_retried_logged_counted_and_the_append_lands(
    migrated_database_url: str,
    fresh_pool: Pool,
    faults: list[OperationalFault],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rewind_sequence(migrated_database_url, 3)  # seq 1, 2, 3 taken; the sequence says 1 next
    retried: list[str | None] = []
    store = PgEventStore(fresh_pool, retry=QUICK, on_retry=lambda e: retried.append(sqlstate_of(e)))
    flow = uuid.uuid4()
    counted_before = faults_counted()
    with caplog.at_level(logging.ERROR, logger="chem_persistence.eventlog.errors"):
        stored = store.append_batch(flow, events(flow, 2))
    # attempts 1..3 collided on seq 1, 2, 3 (each moved the sequence on); the fourth landed
    assert [e.log_seq for e in stored] == [4, 5]
    assert store.list(flow) == stored
    assert retried == ["23505"] * 3
    assert [f.constraint for f in faults] == [LOG_PRIMARY_KEY] * 3
    assert faults_counted() - counted_before == 3  # the worker's metric listens too
    errors_logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors_logged) == 3
    assert all("event_log_pkey" in r.getMessage() for r in errors_logged)
    assert all("setval" in r.getMessage() for r in errors_logged)  # says how to fix it


def test_a_sweep_that_keeps_colliding_gives_the_flow_back_and_never_parks_it(
    migrated_database_url: str, fresh_pool: Pool, faults: list[OperationalFault]
) -> None:
    rewind_sequence(migrated_database_url, 50)  # far more than the retry budget
    flow = uuid.uuid4()
    flow_id = str(flow)
    redis = fakeredis.FakeRedis()
    keys = Keys("flt").shard(0)
    producer = Producer(redis, QueueSettings(queue_name="flt-q", key_prefix="flt"))
    for event in events(flow, 3):
        producer.emit(event)
    entries = redis.lrange(keys.queue(flow_id), 0, -1)
    store = PgEventStore(fresh_pool, retry=RetryPolicy(attempts=3, initial_wait_seconds=0.01))
    sweeper = Sweeper(redis, store, Scripts.register(redis), WorkerSettings(), lambda j, s: None)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            sweeper.cycle(keys, "test-sweep")
        cause = caught.value.__cause__
        assert isinstance(cause, psycopg.errors.UniqueViolation)
        assert cause.diag.constraint_name == LOG_PRIMARY_KEY
        assert classify(cause) is ErrorClass.TRANSIENT  # never PERMANENT
        assert len(faults) == 3
        # the sweep gave the flow back; every event waits in Redis, in order; nothing parked
        assert redis.lrange(keys.queue(flow_id), 0, -1) == entries
        assert not redis.exists(keys.dead(flow_id), keys.reason(flow_id))
        assert redis.zscore(keys.ready, flow_id) is not None
        assert store.list(flow) == []

        # the operator applies the logged remedy; the next drain stores everything, in order
        with psycopg.connect(migrated_database_url) as conn:
            remedy = FAULT_REMEDIES[LOG_PRIMARY_KEY].split("realign it: ", 1)[1]
            conn.execute(remedy.encode())
        assert sweeper.cycle(keys, "test-sweep").events == 3
        assert [e.seq for e in store.list(flow)] == [0, 1, 2]
    finally:
        redis.close()
