"""A worker never crashes on a malformed entry found in Redis — the real thing: sweep cycles
with PgEventStore on the session's PostgreSQL database and the session's real Redis.

Each example queues one new flow: valid envelopes, one fuzzed entry (random bytes, random JSON,
truncated, non-UTF-8, nested too deep, or an envelope with one field mutated), more valid
envelopes. Cycles until the claim is empty must store the valid prefix in PostgreSQL,
dead-letter the fuzzed entry with a record naming the reason, park the flow and leave the
later entries queued untouched —
or, when the entry is in fact a storable event, store it and go on (``expected_fate``). Text
PostgreSQL cannot hold (U+0000, lone surrogates) matters here, where the unit test's
in-memory store would not notice it.
"""

from __future__ import annotations

import uuid

import redis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import Sweeper
from tests.fuzz_strategies import FuzzFlow, check_sweep, fuzz_flows


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # every example uses a new flow and new keys
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(fuzz_flows(max_events=5), st.integers(1, 4))
def test_sweep_on_postgres_survives_any_entry_and_parks_on_poison(
    pool: Pool, redis_conn: redis.Redis, key_prefix: str, flow: FuzzFlow, batch_size: int
) -> None:
    keys = Keys(f"{key_prefix}-fuzz-{uuid.uuid4().hex[:8]}")
    note(f"keys under {keys.prefix}")
    scripts = Scripts.register(redis_conn)
    store = PgEventStore(pool)
    sweeper = Sweeper(
        redis_conn,
        store,
        scripts,
        WorkerSettings(batch_size=batch_size, lease_ttl_ms=10_000),
        lambda job_id, shard: None,
    )
    check_sweep(flow, redis_conn, scripts, sweeper, store.list, keys)
