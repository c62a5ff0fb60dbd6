"""Concurrent writers on the real PostgreSQL: no loss, no duplicate, no gap, per-writer order.

Threads share the session pool (psycopg connections are thread-safe to take from a pool);
every thread of a test starts at a barrier so that they really contend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID, uuid4

from chem_persistence.domain.events import FlowEvent, StepFinished, StepSignal, StepStarted
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore

THREADS = 8
EVENTS_PER_THREAD = 200
T0 = datetime(2024, 7, 1, tzinfo=UTC)
FP = "d" * 64

T = TypeVar("T")


def counting_store(pool: Pool) -> tuple[PgEventStore, list[BaseException]]:
    """A store and the errors it retried. The per-flow lock serializes a flow's writers, so
    none of them should ever hit the idempotency key (a CONFLICT, retried) or retry at all."""
    retries: list[BaseException] = []
    return PgEventStore(pool, on_retry=retries.append), retries


def run_together(workers: list[Callable[[], T]]) -> list[T]:
    """Run every worker in its own thread, released at once; re-raise the first error."""
    barrier = threading.Barrier(len(workers))

    def start(work: Callable[[], T]) -> T:
        barrier.wait()
        return work()

    with ThreadPoolExecutor(max_workers=len(workers)) as executor:
        futures = [executor.submit(start, work) for work in workers]
        return [future.result(timeout=120) for future in futures]


def appender(store: PgEventStore, flow: UUID, writer: int) -> Callable[[], list[FlowEvent]]:
    """Append EVENTS_PER_THREAD events tagged (writer, i) with append(); return them."""

    def work() -> list[FlowEvent]:
        return [
            store.append(flow, StepSignal(writer, f"w{writer}", "N", i), T0 + timedelta(seconds=i))
            for i in range(EVENTS_PER_THREAD)
        ]

    return work


def tag(event: FlowEvent) -> tuple[int, int]:
    kind = event.kind
    assert isinstance(kind, StepSignal) and isinstance(kind.data, int)
    return kind.step_index, kind.data


def test_writers_on_one_flow_lose_nothing_and_keep_their_own_order(pool: Pool) -> None:
    store, retries = counting_store(pool)
    flow = uuid4()
    returned = run_together([appender(store, flow, w) for w in range(THREADS)])
    listed = store.list(flow)
    total = THREADS * EVENTS_PER_THREAD

    assert [e.seq for e in listed] == list(range(total))  # no gap, no duplicate position
    assert sorted(tag(e) for e in listed) == [
        (w, i) for w in range(THREADS) for i in range(EVENTS_PER_THREAD)
    ]  # no loss, no duplicate event
    for writer, events in enumerate(returned):
        mine = [tag(e)[1] for e in listed if tag(e)[0] == writer]
        assert mine == list(range(EVENTS_PER_THREAD))  # each writer's events in its order
        assert [tag(e) for e in events] == [(writer, i) for i in range(EVENTS_PER_THREAD)]
        positions = [e.seq for e in events]
        assert positions == sorted(positions)
        assert all(listed[e.seq] == e for e in events)  # what append returned is what is stored
    log_seqs = [e.log_seq for e in listed if e.log_seq is not None]
    assert log_seqs == sorted(log_seqs) and len(log_seqs) == total  # positions follow commits
    assert store.count_events([flow]) == total
    assert retries == []


def test_writers_on_separate_flows_each_get_exactly_their_events(pool: Pool) -> None:
    store, retries = counting_store(pool)
    flows = [uuid4() for _ in range(THREADS)]
    returned = run_together([appender(store, flows[w], w) for w in range(THREADS)])
    for writer, flow in enumerate(flows):
        listed = store.list(flow)
        assert [e.seq for e in listed] == list(range(EVENTS_PER_THREAD))
        assert [tag(e) for e in listed] == [(writer, i) for i in range(EVENTS_PER_THREAD)]
        assert listed == returned[writer]
        assert [e.log_seq for e in listed] == [e.log_seq for e in returned[writer]]
    assert store.count_events(flows) == THREADS * EVENTS_PER_THREAD
    assert retries == []


def test_the_same_batch_from_every_thread_is_stored_once(pool: Pool) -> None:
    store, retries = counting_store(pool)
    flow = uuid4()
    batch = [
        FlowEvent(i, flow, StepStarted(i, "s") if i % 2 else StepFinished(i, "s", (), FP), T0)
        for i in range(50)
    ]
    results = run_together([lambda: store.append_batch(flow, batch) for _ in range(THREADS)])
    listed = store.list(flow)
    assert listed == batch
    assert store.count_events([flow]) == len(batch)
    for result in results:
        assert result == batch
        # every caller got the stored rows themselves, global seq included
        assert [e.log_seq for e in result] == [e.log_seq for e in listed]
    assert retries == []


def test_overlapping_batches_from_every_thread_form_one_gapless_flow(pool: Pool) -> None:
    """Redelivery under contention: thread k sends positions [0, 10k+10) of the same flow."""
    store, retries = counting_store(pool)
    flow = uuid4()
    events = [FlowEvent(i, flow, StepStarted(i, "s"), T0 + timedelta(seconds=i)) for i in range(80)]

    def sender(k: int) -> Callable[[], list[FlowEvent]]:
        return lambda: store.append_batch(flow, events[: 10 * k + 10])

    results = run_together([sender(k) for k in range(THREADS)])
    assert store.list(flow) == events
    assert [len(r) for r in results] == [10 * k + 10 for k in range(THREADS)]
    assert store.count_events([flow]) == len(events)
    assert retries == []
