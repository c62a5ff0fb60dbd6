"""Volume and backup: 40,000 events through append_batch, and a pg_dump/pg_restore round trip.

Both work on a fresh migrated database of their own (the ``migrated_database_url`` fixture),
so their rows never weigh on the session database. No timing is asserted: counts and content.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from psycopg import errors

from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.examples import example_flow
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.domain.store import InMemoryEventStore
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.repository import PgFlowRepository
from chem_persistence.eventlog.store import PgEventStore
from tests.conftest import create_database, drop_database

T0 = datetime(2024, 9, 1, tzinfo=UTC)
FP = "7" * 64
FLOWS_PER_HALF = 20
EVENTS_PER_HALF = 20_000
BATCH_SIZE = 500
TOOL_TIMEOUT_S = 60


def open_test_pool(url: str, name: str) -> Pool:
    return open_pool(DatabaseSettings(url=url, min_connections=1, max_connections=4), name=name)


@pytest.fixture
def fresh_pool(migrated_database_url: str) -> Iterator[Pool]:
    opened = open_test_pool(migrated_database_url, "chem-stress")
    try:
        yield opened
    finally:
        opened.close()


# --- stress -----------------------------------------------------------------------------------


def plain_kind(flow_index: int, i: int) -> FlowEventKind:
    if i % 2:
        return StepStarted(i, f"s{flow_index}")
    return StepSignal(i, f"s{flow_index}", "PROGRESS", {"i": i, "x": i / 4, "ok": i % 3 == 0})


def artifact_body(flow_index: int, i: int) -> Artifact:
    return Artifact("chunk", {"flow": flow_index, "i": i, "v": [i, i * 0.5, "ø"]}, {"n": i})


def test_forty_thousand_events_half_with_artifacts(fresh_pool: Pool) -> None:
    store = PgEventStore(fresh_pool)
    per_flow = EVENTS_PER_HALF // FLOWS_PER_HALF
    with_artifacts = [uuid4() for _ in range(FLOWS_PER_HALF)]
    without = [uuid4() for _ in range(FLOWS_PER_HALF)]
    sent: dict[UUID, list[FlowEvent]] = {}
    bodies: dict[str, Artifact] = {}

    for f, flow in enumerate(without):
        events = [
            FlowEvent(i, flow, plain_kind(f, i), T0 + timedelta(microseconds=i))
            for i in range(per_flow)
        ]
        for start in range(0, per_flow, BATCH_SIZE):
            assert (
                store.append_batch(flow, events[start : start + BATCH_SIZE])
                == events[start : start + BATCH_SIZE]
            )
        sent[flow] = events

    for f, flow in enumerate(with_artifacts):
        flow_bodies = [artifact_body(f, i) for i in range(per_flow)]
        events = [
            FlowEvent(i, flow, StepFinished(i, f"a{f}", (b.hash,), FP), T0 + timedelta(seconds=i))
            for i, b in enumerate(flow_bodies)
        ]
        for start in range(0, per_flow, BATCH_SIZE):
            chunk = events[start : start + BATCH_SIZE]
            chunk_bodies = {b.hash: b for b in flow_bodies[start : start + BATCH_SIZE]}
            assert store.append_batch(flow, chunk, chunk_bodies) == chunk
        sent[flow] = events
        bodies.update({b.hash: b for b in flow_bodies})

    assert len(bodies) == EVENTS_PER_HALF  # every body distinct
    assert store.count_events(without) == EVENTS_PER_HALF
    assert store.count_events(with_artifacts) == EVENTS_PER_HALF
    assert store.count_artifacts(with_artifacts) == EVENTS_PER_HALF
    assert store.count_artifacts(without) == 0
    assert sorted(store.flow_ids()) == sorted([*with_artifacts, *without])

    # a redelivered batch at this size is still a no-op
    redelivered = sent[with_artifacts[3]][BATCH_SIZE : 2 * BATCH_SIZE]
    assert store.append_batch(with_artifacts[3], redelivered) == redelivered
    assert store.count_events([*with_artifacts, *without]) == 2 * EVENTS_PER_HALF

    for flow in (without[0], without[-1], with_artifacts[0], with_artifacts[-1]):
        listed = store.list(flow)
        assert listed == sent[flow]
        assert [e.seq for e in listed] == list(range(per_flow))
    for event in sent[with_artifacts[7]][:: per_flow // 10]:
        assert isinstance(event.kind, StepFinished)
        (artifact_hash,) = event.kind.outputs
        row = store.artifact(artifact_hash)
        body = bodies[artifact_hash]
        assert row is not None
        assert (row.kind, row.payload, row.metadata) == (body.kind, body.payload, body.metadata)


# --- backup and restore -----------------------------------------------------------------------


def run_tool(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert result.returncode == 0, f"{args[0]} failed: {result.stderr}"


def test_dump_and_restore_replays_every_flow_and_keeps_appending(
    migrated_database_url: str, admin_url: str, tmp_path: Path
) -> None:
    dump = str(tmp_path / "chem.dump")
    seeds = range(8)
    flows = {seed: uuid4() for seed in seeds}
    memory = InMemoryEventStore()
    with open_test_pool(migrated_database_url, "chem-backup") as source_pool:
        source = PgEventStore(source_pool)
        for seed, flow in flows.items():
            definition = example_flow(seed)
            FlowEngine(source).run(flow, definition)
            memory.append_batch(flow, source.list(flow))
        last_log_seq = max(e.log_seq or 0 for f in flows.values() for e in source.list(f))
        artifacts_before = source.count_artifacts(list(flows.values()))
    assert artifacts_before > 0

    run_tool("pg_dump", "-Fc", "--no-owner", "-f", dump, "-d", migrated_database_url)
    restored_url = create_database(admin_url, suffix="_restored")
    try:
        run_tool("pg_restore", "--no-owner", "--exit-on-error", "-d", restored_url, dump)
        with open_test_pool(restored_url, "chem-restored") as restored_pool:
            restored = PgEventStore(restored_pool)
            repository = PgFlowRepository(restored)
            assert sorted(restored.flow_ids()) == sorted(flows.values())
            assert restored.count_artifacts(list(flows.values())) == artifacts_before
            for seed, flow in flows.items():
                definition = example_flow(seed)
                expected = memory.list(flow)
                assert restored.list(flow) == expected
                assert repository.load(flow, definition) == InMemoryFlowRepository.load(
                    flow, expected, definition
                )

            # the restored database keeps working: positions continue, the global seq too
            flow = flows[0]
            position = len(memory.list(flow))
            added = restored.append(flow, StepSignal(0, "after", "RESTORED", {"ok": True}))
            assert added.seq == position
            assert added.log_seq is not None and added.log_seq > last_log_seq
            new_flow = uuid4()
            first = restored.append(new_flow, StepStarted(0, "fresh"), T0)
            assert first.seq == 0
            assert first.log_seq is not None and first.log_seq > added.log_seq
            # and the append-only guard came back with the schema
            with (
                restored_pool.connection() as conn,
                pytest.raises(errors.RaiseException, match="append-only"),
            ):
                conn.execute("DELETE FROM event_log")
    finally:
        drop_database(admin_url, restored_url)
