"""append_flows — many flows in one call, as a sweep stores a claim — behaves the same in
memory and in PostgreSQL: each flow judged alone, the first artifact body winning inside a
call as across calls."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID, uuid4

import pytest

from chem_persistence.domain.batches import FlowBatch, FlowOutcome
from chem_persistence.domain.errors import SeqConflict, SeqGap
from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowInitialized,
    StepFinished,
    StepStarted,
)
from chem_persistence.domain.store import InMemoryEventStore
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore

T0 = datetime(2024, 5, 1, tzinfo=UTC)
FP = "e" * 64


class FlowsStore(Protocol):
    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> builtins.list[FlowOutcome]: ...

    def list(self, flow_id: UUID) -> builtins.list[FlowEvent]: ...

    def artifact(self, artifact_hash: str) -> Any: ...


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> FlowsStore:
    if request.param == "memory":
        return InMemoryEventStore()
    pool: Pool = request.getfixturevalue("pool")
    return PgEventStore(pool)


def start(flow: UUID, seq: int, step: int = 0) -> FlowEvent:
    kind = FlowInitialized(FP, 2) if seq == 0 else StepStarted(step, f"s{step}")
    return FlowEvent(seq, flow, kind, T0 + timedelta(seconds=seq))


def finished(flow: UUID, seq: int, output: str) -> FlowEvent:
    return FlowEvent(seq, flow, StepFinished(0, "s0", (output,), FP), T0 + timedelta(seconds=seq))


def body_of(stored: Any) -> tuple[str, Any, Any]:
    return (stored.kind, stored.payload, stored.metadata)


def test_the_first_body_wins_inside_one_call(store: FlowsStore) -> None:
    payload = {"molecules": ["CCO"], "run": str(uuid4())}  # the hash covers the payload only
    first = Artifact("molecule_batch", payload, {"by": "first"})
    second = Artifact("other_kind", payload, {"by": "second"})
    assert first.hash == second.hash
    a, b = uuid4(), uuid4()
    store.append_flows(
        [
            FlowBatch(a, [start(a, 0), finished(a, 1, first.hash)], [{}, {first.hash: first}]),
            FlowBatch(b, [start(b, 0), finished(b, 1, second.hash)], [{}, {second.hash: second}]),
        ]
    )
    assert body_of(store.artifact(first.hash)) == ("molecule_batch", payload, {"by": "first"})


def test_each_flow_is_judged_alone(store: FlowsStore) -> None:
    good, gap, conflict = uuid4(), uuid4(), uuid4()
    store.append_flows([FlowBatch(conflict, [start(conflict, 0)])])
    other_ts = FlowEvent(0, conflict, FlowInitialized(FP, 2), T0 + timedelta(hours=1))
    outcomes = store.append_flows(
        [
            FlowBatch(good, [start(good, 0), start(good, 1, 1)]),
            FlowBatch(gap, [start(gap, 0), start(gap, 2, 2), start(gap, 3, 3)]),
            FlowBatch(conflict, [other_ts, start(conflict, 1, 1)]),
        ]
    )
    by_flow = {o.flow_id: o for o in outcomes}
    assert (by_flow[good].accepted, by_flow[good].poison) == (2, None)
    assert by_flow[gap].accepted == 1 and isinstance(by_flow[gap].poison, SeqGap)
    assert by_flow[conflict].accepted == 0 and isinstance(by_flow[conflict].poison, SeqConflict)
    assert [e.seq for e in store.list(good)] == [0, 1]
    assert [e.seq for e in store.list(gap)] == [0]  # the prefix before the gap is stored
    assert [e.ts for e in store.list(conflict)] == [T0]  # never overwritten


def test_an_identical_redelivery_is_accepted_and_stores_nothing_new(store: FlowsStore) -> None:
    flow = uuid4()
    events = [start(flow, 0), start(flow, 1, 1)]
    store.append_flows([FlowBatch(flow, events)])
    [again] = store.append_flows([FlowBatch(flow, [*events, events[1], start(flow, 2, 2)])])
    assert (again.accepted, again.poison) == (4, None)
    assert [e.seq for e in again.stored] == [2]
    assert [e.seq for e in store.list(flow)] == [0, 1, 2]
