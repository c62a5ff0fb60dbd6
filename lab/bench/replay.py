"""Read + replay of one long flow (``PgEventStore.list`` + ``InMemoryFlowRepository.load``),
with what bounds it in CPython."""

from __future__ import annotations

import gc
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.events import (
    FlowInitialized,
)
from chem_persistence.domain.json_values import dumps
from chem_persistence.domain.replay import InMemoryFlowRepository
from lab.bench.config import BenchError
from lab.bench.core import Bench
from lab.bench.data import flow_definition, flow_kinds
from lab.bench.measure import Stopwatch


def run_replay(bench: Bench) -> None:
    n = bench.scale.replay_events
    flow = uuid.uuid4()
    kinds = flow_kinds(9_000_000, n)
    first = kinds[0]
    assert isinstance(first, FlowInitialized)
    definition = flow_definition(first.step_count)
    base = datetime.now(UTC) - timedelta(hours=2)
    bench.reset()
    statement = "COPY event_log (flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
    with bench.conn.cursor() as cur, cur.copy(statement) as copy:
        for position, kind in enumerate(kinds):
            ts = base + timedelta(microseconds=position)
            copy.write_row((flow, position, ts, kind.event_type, dumps(encode_kind(kind))))
    bench.conn.commit()
    with bench.conn.transaction():
        bench.conn.execute("ANALYZE event_log")  # as autovacuum would after a bulk load
    row = bench.new_row(
        "replay",
        "replay",
        "read + replay one flow",
        f"{n:,} events, PgEventStore.list + InMemoryFlowRepository.load",
    )
    reads = []

    def once(watch: Stopwatch) -> None:
        watch.start()
        events = bench.store.list(flow)
        read = time.perf_counter()
        instance = InMemoryFlowRepository.load(flow, events, definition)
        watch.stop(n)
        if len(events) != n or not instance.completed:
            raise BenchError(f"replay: read {len(events)} of {n} events")
        reads.append(n / (read - watch.started))

    # The harness's own objects (the generated data sets) must not tax the collections the
    # 100,000 new events trigger: freeze them (the events' own cost stays measured).
    gc.collect()
    gc.freeze()
    try:
        bench.repeat(row, once)
        row.extra["read_only_events_per_s"] = statistics.median(reads)
        row.extra.update(_replay_bounds(bench, flow, n))
        gc.disable()
        try:
            start = time.perf_counter()
            events = bench.store.list(flow)
            InMemoryFlowRepository.load(flow, events, definition)
            row.extra["gc_paused_events_per_s"] = n / (time.perf_counter() - start)
        finally:
            gc.enable()
    finally:
        gc.unfreeze()
    bench.reset()


def _replay_bounds(bench: Bench, flow: UUID, n: int) -> dict[str, float]:
    """What bounds read + replay in CPython: fetching the rows alone (payload as text), and
    fetching + json.loads of every payload (no decoding, no replay)."""
    statement = (
        "SELECT seq, flow_seq, ts, payload::text FROM event_log "
        "WHERE flow_id = %s ORDER BY flow_seq"
    )
    fetch, parse = [], []
    for _ in range(2):
        start = time.perf_counter()
        with bench.conn.cursor() as cur:
            cur.execute(statement, (flow,))
            rows = cur.fetchall()
        bench.conn.commit()
        fetched = time.perf_counter()
        for row in rows:
            json.loads(row[3])
        done = time.perf_counter()
        fetch.append(n / (fetched - start))
        parse.append(n / (done - start))
    return {
        "bound_fetch_events_per_s": statistics.median(fetch),
        "bound_fetch_json_loads_events_per_s": statistics.median(parse),
    }
