"""Big events: a claim is capped in bytes as well as in events, and a transaction that still
hits a size or program limit is split, never retried as is (real ~1 MiB envelopes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg.errors
import pytest
import redis

from chem_persistence.domain.batches import FlowBatch, FlowOutcome
from chem_persistence.domain.events import FlowEvent, StepSignal
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import Sweeper
from tests.integration.queue_helpers import QueueEnv

MIB = 1024 * 1024


def big_event(flow: uuid.UUID, seq: int) -> FlowEvent:
    blob = "x" * (MIB - 4096)  # just under the producer's default 1 MiB envelope limit
    kind = StepSignal(0, "acquire", "SPECTRUM", {"seq": seq, "blob": blob})
    return FlowEvent(seq, flow, kind, datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=seq))


class CountingStore:
    def __init__(self, inner: PgEventStore) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> list[FlowOutcome]:
        self.sizes.append(sum(len(b.events) for b in batches))
        return self.inner.append_flows(batches, before_commit)


def test_claims_of_big_envelopes_stay_within_the_byte_budget(
    env: QueueEnv, redis_conn: redis.Redis, pool: Pool
) -> None:
    flows = [uuid.uuid4() for _ in range(6)]
    producer = env.producer(redis_conn)
    for flow in flows:
        producer.emit_many([big_event(flow, seq) for seq in range(4)])  # 24 MiB queued
    store = CountingStore(PgEventStore(pool))
    settings = WorkerSettings(batch_size=500, batch_bytes=5 * MIB)
    sweeper = Sweeper(redis_conn, store, Scripts.register(redis_conn), settings, lambda j, s: None)
    for _ in range(50):
        if not sweeper.cycle(env.shard, "big-sweep").flows:
            break
    assert store.sizes and max(store.sizes) <= 5  # never more than the budget holds
    assert sum(store.sizes) == 24
    for flow in flows:
        assert [e.seq for e in store.inner.list(flow)] == [0, 1, 2, 3]


def test_a_size_limit_splits_the_transaction_until_it_fits(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PgEventStore(pool)
    flows = [uuid.uuid4() for _ in range(5)]
    batches = [FlowBatch(f, [big_event(f, 0)]) for f in flows]
    attempts: list[tuple[uuid.UUID, ...]] = []
    real = store._write_flows

    def limited(
        chunk: Sequence[FlowBatch], before: Callable[[], None] | None = None
    ) -> list[FlowOutcome]:
        attempts.append(tuple(b.flow_id for b in chunk))
        if len(chunk) > 2:  # as if PostgreSQL refused anything bigger (SQLSTATE 54000)
            raise psycopg.errors.ProgramLimitExceeded("total size of jsonb array elements")
        return real(chunk, before)

    monkeypatch.setattr(store, "_write_flows", limited)
    outcomes = store.append_flows(batches)
    assert [o.accepted for o in outcomes] == [1] * 5 and all(o.poison is None for o in outcomes)
    too_big = [a for a in attempts if len(a) > 2]
    assert too_big and len(too_big) == len(set(too_big))  # each tried once, never again as is
    assert len(attempts) == len(set(attempts))
    for flow in flows:
        assert len(store.list(flow)) == 1
