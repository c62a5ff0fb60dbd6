"""Every pool connection runs with lock, statement and idle-in-transaction limits and TCP
keepalives; a flow whose advisory lock is held by a backend that never commits does not hang
its appender: the wait times out (55P03, transient), is retried in place, and the append lands,
in order, once the holder is gone. Nothing is dead-lettered, nothing parked.

The holders here are real backends that take the flow's lock exactly as an appender does
(``lock_flow`` with ``LOCK_NAMESPACE``) and then sit idle inside their transaction.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import fakeredis
import psycopg
import pytest

from chem_persistence.domain.events import FlowEvent, FlowInitialized, StepStarted
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.errors import ErrorClass, classify, sqlstate_of
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.queries import query
from chem_persistence.eventlog.retry import RetryPolicy
from chem_persistence.eventlog.store import LOCK_NAMESPACE, PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import StorageUnavailable, Sweeper
from tests.integration.queue_helpers import wait_until

T0 = datetime(2024, 7, 1, 9, 0, tzinfo=UTC)
#: Generous deadlines: conditions are awaited, never slept on.
DEADLINE_S = 60.0
#: The lock wait of the tests' pools: short, so that several time-outs happen quickly.
TEST_LOCK_TIMEOUT_MS = 200
PATIENT = RetryPolicy(attempts=1000, max_seconds=DEADLINE_S, max_wait_seconds=0.2)


def events(flow: UUID, count: int) -> list[FlowEvent]:
    kinds = [FlowInitialized("d" * 64, count), *(StepStarted(i, f"s{i}") for i in range(count))]
    return [
        FlowEvent(i, flow, kinds[i], T0 + timedelta(milliseconds=i, microseconds=i))
        for i in range(count)
    ]


class Retries:
    """An ``on_retry`` hook: remembers each retried SQLSTATE, signals the first lock time-out."""

    def __init__(self) -> None:
        self.sqlstates: list[str | None] = []
        self.lock_timed_out = threading.Event()

    def __call__(self, exc: BaseException) -> None:
        self.sqlstates.append(sqlstate_of(exc))
        if sqlstate_of(exc) == "55P03":
            self.lock_timed_out.set()


@contextmanager
def pool_for(settings: DatabaseSettings, name: str) -> Iterator[Pool]:
    pool = open_pool(settings, migrate=False, name=name)
    try:
        yield pool
    finally:
        pool.close()


def hold_flow_lock(url: str, flow: UUID, **kwargs: Any) -> psycopg.Connection[Any]:
    """A backend holding ``flow``'s advisory lock in an open transaction, then idle."""
    conn = psycopg.connect(url, autocommit=False, **kwargs)
    conn.execute(query("lock_flow"), {"namespace": LOCK_NAMESPACE, "flow_id": flow})
    return conn


def backend_alive(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row == (1,)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# --- the settings reach every connection -----------------------------------------------------


def test_pool_connections_run_with_the_default_limits_and_keepalives(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url, min_connections=1, max_connections=2)
    with pool_for(settings, "chem-test-limits") as pool, pool.connection() as conn:
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()  # type: ignore[arg-type]
            for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
        }
        parameters = conn.info.get_parameters()
    assert shown == {
        "lock_timeout": ("5s",),
        "statement_timeout": ("10s",),
        "idle_in_transaction_session_timeout": ("15s",),
    }
    assert {k: parameters.get(k) for k in ("keepalives_idle", "keepalives_interval")} == {
        "keepalives_idle": "10",
        "keepalives_interval": "5",
    }
    assert parameters.get("keepalives_count") == "3"
    # every limit is below the default lease TTL (a sweep's lease on its flows)
    ttl = WorkerSettings().lease_ttl_ms
    assert (
        max(
            settings.lock_timeout_ms,
            settings.statement_timeout_ms,
            settings.idle_in_transaction_timeout_ms,
        )
        < ttl
    )


def test_the_urls_own_options_win_over_the_settings(database_url: str) -> None:
    url = f"{database_url}?options=-c%20statement_timeout%3D1234&keepalives_idle=42"
    settings = DatabaseSettings(url=url, min_connections=1, max_connections=1, lock_timeout_ms=777)
    with pool_for(settings, "chem-test-url-limits") as pool, pool.connection() as conn:
        statement = conn.execute("SHOW statement_timeout").fetchone()
        lock = conn.execute("SHOW lock_timeout").fetchone()
        keepalives_idle = conn.info.get_parameters().get("keepalives_idle")
    assert (statement, lock, keepalives_idle) == (("1234ms",), ("777ms",), "42")


def test_a_statement_past_the_statement_timeout_is_cancelled(database_url: str) -> None:
    settings = DatabaseSettings(
        url=database_url, min_connections=1, max_connections=1, statement_timeout_ms=100
    )
    with (
        pool_for(settings, "chem-test-statement") as pool,
        pool.connection() as conn,
        pytest.raises(psycopg.errors.QueryCanceled) as caught,
    ):
        conn.execute("SELECT pg_sleep(30)")
    assert "statement timeout" in str(caught.value)
    # never blamed on an event: the drain job fails visibly, the events stay queued
    assert classify(caught.value) is ErrorClass.UNEXPECTED


# --- a backend holding the flow's lock ---------------------------------------------------------


def test_an_append_behind_a_held_lock_times_out_retries_and_lands_once_the_holder_goes(
    database_url: str,
) -> None:
    settings = DatabaseSettings(
        url=database_url, min_connections=1, max_connections=2, lock_timeout_ms=TEST_LOCK_TIMEOUT_MS
    )
    flow = uuid.uuid4()
    batch = events(flow, 4)
    retries = Retries()
    holder = hold_flow_lock(database_url, flow)
    try:
        with pool_for(settings, "chem-test-held") as pool:
            store = PgEventStore(pool, retry=PATIENT, on_retry=retries)
            thread, outcome = in_thread(lambda: store.append_batch(flow, batch))
            wait_until(
                lambda: retries.lock_timed_out.is_set() or not thread.is_alive(),
                DEADLINE_S,
                "the append to hit lock_timeout",
            )
            assert retries.lock_timed_out.is_set(), f"the append ended first: {outcome}"
            # the holder still holds: nothing can have been stored yet, the append is waiting
            assert store.list(flow) == []
            assert thread.is_alive() and not outcome
            holder.close()  # the holder goes away; its lock goes with it
            thread.join(DEADLINE_S)
            assert not thread.is_alive(), "the append never finished"
            assert "error" not in outcome, outcome
            stored = outcome["value"]
            assert [e.seq for e in stored] == [0, 1, 2, 3]
            assert store.list(flow) == stored  # in order, once
    finally:
        holder.close()
    assert set(retries.sqlstates) == {"55P03"}, retries.sqlstates


def test_the_idle_in_transaction_limit_ends_a_holder_that_never_commits(database_url: str) -> None:
    # The holder is a connection with the pool's own settings, as a worker whose process hung
    # mid-transaction would be: the server ends it, and the lock is free again.
    settings = DatabaseSettings(
        url=database_url,
        min_connections=1,
        max_connections=2,
        lock_timeout_ms=TEST_LOCK_TIMEOUT_MS,
        idle_in_transaction_timeout_ms=1_000,
    )
    flow = uuid.uuid4()
    retries = Retries()
    holder = hold_flow_lock(database_url, flow, **settings.connection_kwargs())
    holder_pid = holder.info.backend_pid
    try:
        with pool_for(settings, "chem-test-idle") as pool:
            store = PgEventStore(pool, retry=PATIENT, on_retry=retries)
            stored = store.append_batch(flow, events(flow, 3))
            assert [e.seq for e in stored] == [0, 1, 2]
            assert store.list(flow) == stored
        wait_until(
            lambda: not backend_alive(database_url, holder_pid), DEADLINE_S, "the holder's end"
        )
        with pytest.raises(psycopg.Error) as caught:
            holder.execute("SELECT 1")
        # the server ended it (25P03): for a pool connection that is transient, nothing committed
        assert caught.value.sqlstate == "25P03", caught.value
        assert classify(caught.value) is ErrorClass.TRANSIENT
    finally:
        holder.close()
    assert "55P03" in retries.sqlstates  # it did wait on the holder first


def test_a_holder_that_outlasts_the_retry_budget_never_parks_the_flow(
    database_url: str,
) -> None:
    settings = DatabaseSettings(
        url=database_url, min_connections=1, max_connections=2, lock_timeout_ms=TEST_LOCK_TIMEOUT_MS
    )
    flow = uuid.uuid4()
    flow_id = str(flow)
    batch = events(flow, 3)
    redis = fakeredis.FakeRedis()
    keys = Keys("tmo").shard(0)
    scripts = Scripts.register(redis)
    producer = Producer(redis, QueueSettings(queue_name="tmo-q", key_prefix="tmo"))
    for event in batch:
        producer.emit(event)
    entries = redis.lrange(keys.queue(flow_id), 0, -1)
    assert len(entries) == len(batch)
    holder = hold_flow_lock(database_url, flow)
    try:
        with pool_for(settings, "chem-test-budget") as pool:
            store = PgEventStore(pool, retry=RetryPolicy(attempts=3, max_wait_seconds=0.05))
            sweeper = Sweeper(redis, store, scripts, WorkerSettings(), lambda j, s: None)
            with pytest.raises(StorageUnavailable) as caught:
                sweeper.cycle(keys, "test-sweep")
            assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)
            assert classify(caught.value.__cause__) is ErrorClass.TRANSIENT
            # given back: the events wait in Redis, in order; nothing parked, nothing leased
            assert redis.lrange(keys.queue(flow_id), 0, -1) == entries
            assert not redis.exists(keys.reason(flow_id), keys.dead(flow_id))
            assert redis.zscore(keys.ready, flow_id) is not None
            assert redis.hget(keys.leases, flow_id) is None
            assert store.list(flow) == []

            holder.close()
            assert sweeper.cycle(keys, "test-sweep").events == 3
            assert [e.seq for e in store.list(flow)] == [0, 1, 2]
            assert redis.llen(keys.queue(flow_id)) == 0
    finally:
        holder.close()
        redis.close()
