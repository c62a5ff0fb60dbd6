"""The sweep's cycle on fakeredis, with InMemoryEventStore (the reference semantics) as store.

InMemoryEventStore judges each flow of a claim as PostgreSQL does (domain/batches.py), so every
path — many flows in one claim, redelivery, poison, storage trouble, a lost lease, recovery,
the operator's retry and discard — runs here in milliseconds.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast
from uuid import UUID

import fakeredis
import psycopg
import pytest
from rq import Queue

from chem_persistence.domain.batches import FlowBatch, FlowOutcome
from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.store import InMemoryEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.dead_letter import entry_of
from chem_persistence.producer.jobs import EMIT_MAX_SWEEPS, QUEUED_SWEEP_TTL_MS, ingest_queue
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import encode_envelope
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.deadletters import DeadLetters, StaleCommand
from chem_persistence.worker.recovery import Recovery
from chem_persistence.worker.sweep import CycleResult, StorageUnavailable, Sweeper

F1 = UUID("00000000-0000-4000-8000-0000000000c1")
F2 = UUID("00000000-0000-4000-8000-0000000000c2")
A, B = str(F1), str(F2)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEYS = Keys("swp")
S = KEYS.shard(0)
QUEUE = "sweep-q"
FP = "9f" * 32
ART = Artifact("molecule_batch", {"molecules": ["CCO", "c1ccccc1"]}, {"seed": 3})


class RecordingStore(InMemoryEventStore):
    """InMemoryEventStore that remembers each append_flows call and can fail on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[UUID, list[int]]] = []
        self.fail_with: BaseException | None = None

    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> list[FlowOutcome]:
        self.calls.append({b.flow_id: [e.seq for e in b.events] for b in batches})
        if self.fail_with is not None:
            raise self.fail_with
        return super().append_flows(batches, before_commit)


@dataclass
class Rig:
    redis: fakeredis.FakeRedis
    store: RecordingStore
    queue: Queue
    scripts: Scripts
    producer: Producer
    started: list[str] = field(default_factory=list)

    def sweeper(self, **settings: int) -> Sweeper:
        config = WorkerSettings(**{"batch_size": 3, "lease_ttl_ms": 10_000, **settings})  # type: ignore[arg-type]
        return Sweeper(self.redis, self.store, self.scripts, config, self.start)

    def start(self, job_id: str, shard: int) -> None:
        self.started.append(job_id)

    def cycle(self, **settings: int) -> CycleResult:
        return self.sweeper(**settings).cycle(S, "test-sweep")

    def sweep_all(self, **settings: int) -> int:
        """Cycles until a claim finds nothing; returns the events removed from Redis."""
        removed = 0
        for _ in range(100):
            result = self.cycle(**settings)
            if not result.flows:
                return removed
            removed += result.events
        raise AssertionError("the sweep never ran dry")

    def queued(self, flow: str) -> list[bytes]:
        return cast(list[bytes], self.redis.lrange(S.queue(flow), 0, -1))

    def push(self, flow: str, first: int, *entries: bytes) -> None:
        """Push raw entries with the producer's script (``first``: their position, to read)."""
        args = [S.base, flow, QUEUED_SWEEP_TTL_MS, EMIT_MAX_SWEEPS, *entries]
        self.scripts.emit(keys=[S.ready, S.leased, S.sweeps, S.wake], args=args)

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, KEYS, self.scripts, self.start)


@pytest.fixture
def rig() -> Iterator[Rig]:
    redis = fakeredis.FakeRedis()
    queue = ingest_queue(redis, QUEUE)
    producer = Producer(redis, QueueSettings(queue_name=QUEUE, key_prefix=KEYS.prefix))
    yield Rig(redis, RecordingStore(), queue, Scripts.register(redis), producer)
    redis.close()


def flow_events(flow: UUID, count: int, start: int = 0) -> list[FlowEvent]:
    """Mixed kinds at positions start..start+count-1; some StepFinished carry an artifact."""
    events = []
    for seq in range(start, start + count):
        ts = T0 + timedelta(milliseconds=seq, microseconds=seq)
        kind: FlowEventKind
        if seq == 0:
            kind = FlowInitialized(FP, 3)
        elif seq % 5 == 2:
            kind = StepFinished(seq, f"step-{seq}", (ART.hash,), FP)
        elif seq % 5 == 4:
            kind = StepSignal(seq, f"step-{seq}", "ACQUIRED", {"n": seq, "w": 1.5, "名": "苯"})
        else:
            kind = StepStarted(seq, f"step-{seq}")
        events.append(FlowEvent(seq, flow, kind, ts))
    return events


def envelope(event: FlowEvent) -> bytes:
    bodies = (ART,) if isinstance(event.kind, StepFinished) else ()
    return encode_envelope(event, bodies).encode()


def emit_all(rig: Rig, events: list[FlowEvent]) -> list[bytes]:
    for event in events:
        rig.producer.emit(event, (ART,) if isinstance(event.kind, StepFinished) else None)
    return [envelope(e) for e in events]


def assert_idle(rig: Rig, flow: str) -> None:
    assert rig.queued(flow) == []
    assert rig.redis.zscore(S.ready, flow) is None
    assert rig.redis.zscore(S.leased, flow) is None
    assert rig.redis.hget(S.leases, flow) is None


# --- the happy path -------------------------------------------------------------------------


def test_one_cycle_stores_many_flows_in_one_call(rig: Rig) -> None:
    one, two = flow_events(F1, 2), flow_events(F2, 1)
    emit_all(rig, one)
    emit_all(rig, two)
    result = rig.cycle(batch_size=10)
    assert (result.flows, result.events, result.parked) == (2, 3, 0)
    assert rig.store.calls == [{F1: [0, 1], F2: [0]}]  # ONE store call for both flows
    assert rig.store.list(F1) == one and rig.store.list(F2) == two
    assert_idle(rig, A)
    assert_idle(rig, B)


def test_a_long_flow_goes_in_batches_and_to_the_back_of_the_line(rig: Rig) -> None:
    events = flow_events(F1, 7)
    emit_all(rig, events)
    emit_all(rig, flow_events(F2, 1))
    assert rig.cycle().events == 3  # F1's first three: the batch is full
    assert rig.redis.zrange(S.ready, 0, -1) == [B.encode(), A.encode()]  # F2 first now
    assert rig.sweep_all() == 5
    assert rig.store.list(F1) == events
    assert_idle(rig, A)


def test_events_pushed_between_claim_and_ack_wait_for_the_next_cycle(rig: Rig) -> None:
    events = flow_events(F1, 5)
    emit_all(rig, events[:2])

    def push_meanwhile(outcomes: list[FlowOutcome]) -> None:
        emit_all(rig, events[2:])

    sweeper = rig.sweeper()
    sweeper.hooks = type(sweeper.hooks)(after_commit=push_meanwhile)
    assert sweeper.cycle(S, "test-sweep").events == 2
    assert rig.queued(A) == [envelope(e) for e in events[2:]]  # kept, and the flow is ready
    assert rig.redis.zscore(S.ready, A) is not None
    assert rig.sweep_all() == 3
    assert rig.store.list(F1) == events


@pytest.mark.parametrize("already_stored", [2, 5])
def test_redelivery_after_commit_is_a_no_op(rig: Rig, already_stored: int) -> None:
    events = flow_events(F1, 5)
    rig.store.append_batch(F1, events[:already_stored], {ART.hash: ART})
    emit_all(rig, events)
    assert rig.sweep_all() == 5
    assert rig.store.list(F1) == events


def test_the_same_entries_queued_twice_are_stored_once(rig: Rig) -> None:
    events = flow_events(F1, 3)
    entries = emit_all(rig, events)
    rig.redis.rpush(S.queue(A), *entries)  # a late emit replay after the flow went idle
    assert rig.sweep_all(batch_size=10) == 6
    assert rig.store.list(F1) == events
    assert_idle(rig, A)


# --- poison ---------------------------------------------------------------------------------

GOOD = 3  # good events before the poison


@dataclass(frozen=True)
class PoisonCase:
    reason: str
    position: int | None
    # the poison entry and the good events after it, given the flow's events
    build: Callable[[Rig, list[FlowEvent]], tuple[bytes, list[FlowEvent]]]


def _garbage(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    return b"\xff\xfe\x00 not an envelope \x80", events[GOOD:]


def _other_flow(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    return envelope(flow_events(F2, GOOD + 1)[GOOD]), events[GOOD:]


def _conflict(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    # Position GOOD already holds a different event (the same kind, another time).
    stored = FlowEvent(GOOD, F1, events[GOOD].kind, events[GOOD].ts + timedelta(seconds=1))
    rig.store.append_batch(F1, [*events[:GOOD], stored], {ART.hash: ART})
    return envelope(events[GOOD]), events[GOOD + 1 :]


def _gap(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    # Position GOOD is missing: the entry at its place is the event at GOOD + 1.
    return envelope(events[GOOD + 1]), events[GOOD + 2 :]


def _bad_artifact(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    data = json.loads(envelope(events[2]))
    data["seq"] = GOOD
    data["artifacts"][0]["payload"] = {"tampered": True}  # no longer hashes to its hash
    return json.dumps(data).encode(), events[GOOD:]


def _empty(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    return b"", events[GOOD:]  # an empty string: a poison all the same


POISONS = {
    "garbage-bytes": PoisonCase("InvalidEvent", None, _garbage),
    "empty-entry": PoisonCase("InvalidEvent", None, _empty),
    "event-of-another-flow": PoisonCase("InvalidEvent", None, _other_flow),
    "tampered-artifact": PoisonCase("ArtifactHashMismatch", GOOD, _bad_artifact),
    "seq-conflict": PoisonCase("SeqConflict", GOOD, _conflict),
    "seq-gap": PoisonCase("SeqGap", GOOD + 1, _gap),
}


@pytest.mark.parametrize("case", POISONS.values(), ids=list(POISONS))
def test_poison_is_dead_lettered_and_parks_only_its_flow(rig: Rig, case: PoisonCase) -> None:
    events = flow_events(F1, GOOD + 5)
    poison, later = case.build(rig, events)
    other = flow_events(F2, 2)
    emit_all(rig, events[:GOOD])
    rig.push(A, GOOD, poison)
    later_entries = [envelope(e) for e in later]
    rig.redis.rpush(S.queue(A), *later_entries)
    emit_all(rig, other)
    before = datetime.now(UTC)

    result = rig.cycle(batch_size=20)
    assert (result.parked, result.flows) == (1, 2)
    # the prefix before the poison is committed (in order) and acked; the other flow too
    assert rig.store.list(F1)[:GOOD] == events[:GOOD]
    assert rig.store.list(F2) == other
    # the poison moved to the dead letters, with why and where
    [record] = rig.dead_letters().show(A)
    assert set(record) >= {"reason", "error", "sqlstate", "position", "time"}
    assert (record["reason"], record["position"], record["sqlstate"]) == (
        case.reason,
        case.position,
        None,
    )
    assert record["error"] and entry_of(record) == poison
    assert before <= datetime.fromisoformat(record["time"]) <= datetime.now(UTC)
    # the flow is parked; the later events wait, untouched and in order
    assert cast(bytes, rig.redis.get(S.reason(A))).decode().startswith(case.reason)
    assert rig.redis.zscore(S.parked, A) is not None
    assert rig.redis.zscore(S.ready, A) is None and rig.redis.zscore(S.leased, A) is None
    assert rig.queued(A) == later_entries
    # nothing claims a parked flow, even when it is emitted to
    calls = list(rig.store.calls)
    emit_all(rig, flow_events(F1, 1, start=50))
    assert rig.cycle().flows == 0 and rig.store.calls == calls


def test_storage_trouble_gives_the_flows_back_untouched(rig: Rig) -> None:
    events = flow_events(F1, 3)
    emit_all(rig, events)
    rig.store.fail_with = psycopg.OperationalError("server closed the connection")
    with pytest.raises(StorageUnavailable):
        rig.cycle()
    assert rig.queued(A) == [envelope(e) for e in events]  # nothing dead-lettered, nothing lost
    assert rig.redis.zscore(S.ready, A) is not None and rig.redis.zcard(S.parked) == 0
    rig.store.fail_with = None
    assert rig.sweep_all() == 3
    assert rig.store.list(F1) == events


def test_a_lost_lease_trims_nothing(rig: Rig) -> None:
    events = flow_events(F1, 3)
    emit_all(rig, events)

    def lease_taken_over(outcomes: list[FlowOutcome]) -> None:
        rig.redis.hset(S.leases, A, "another-sweep")  # ours expired and was reclaimed

    sweeper = rig.sweeper()
    sweeper.hooks = type(sweeper.hooks)(after_commit=lease_taken_over)
    result = sweeper.cycle(S, "test-sweep")
    assert (result.lost, result.events) == (1, 3)
    assert rig.queued(A) == [envelope(e) for e in events]  # the new holder re-appends: no-op


# --- the job's loop, and recovery -------------------------------------------------------------


def test_an_idle_sweep_ends_and_leaves_no_registration(rig: Rig) -> None:
    emit_all(rig, flow_events(F1, 4))
    [job_id] = rig.queue.get_job_ids()
    sweeper = rig.sweeper(sweep_linger_seconds=0, wake_wait_seconds=0.01)  # type: ignore[arg-type]
    totals = sweeper.run(S, job_id)
    assert (totals.events, totals.successor) == (4, 0)
    assert rig.redis.zcard(S.sweeps) == 0
    assert rig.started == []


def test_a_sweep_hands_over_at_the_end_of_its_slice(rig: Rig) -> None:
    emit_all(rig, flow_events(F1, 4))
    [job_id] = rig.queue.get_job_ids()
    sweeper = rig.sweeper(sweep_slice_seconds=0)  # type: ignore[arg-type]  # over at once
    totals = sweeper.run(S, job_id, max_sweeps=lambda: 3)
    [successor] = rig.started  # work remained: one successor, registered in place of this sweep
    assert (totals.events, totals.successor) == (0, successor)
    assert rig.redis.zrange(S.sweeps, 0, -1) == [successor.encode()]
    assert len(rig.queued(A)) == 4


def test_a_full_claim_spawns_a_helper_and_the_slice_end_a_successor(rig: Rig) -> None:
    emit_all(rig, flow_events(F1, 4))  # a claim of batch_size 3 comes back full
    [job_id] = rig.queue.get_job_ids()
    stop = threading.Event()
    sweeper = rig.sweeper()
    sweeper.hooks = type(sweeper.hooks)(after_commit=lambda outcomes: stop.set())
    totals = sweeper.run(S, job_id, stop=stop, max_sweeps=lambda: 3)
    spawned, successor = rig.started
    assert (totals.events, totals.successor) == (3, successor)
    assert sorted(rig.redis.zrange(S.sweeps, 0, -1)) == sorted(
        [spawned.encode(), successor.encode()]
    )
    assert len(rig.queued(A)) == 1


def test_recovery_forgets_a_lost_sweep_and_starts_another(rig: Rig) -> None:
    emit_all(rig, flow_events(F1, 2))
    [job_id] = rig.queue.get_job_ids()
    rig.queue.empty()  # the job is lost (a worker died taking it): only the registration is left
    registered = cast(float, rig.redis.zscore(S.sweeps, job_id))
    rig.redis.zadd(S.sweeps, {job_id: registered - 10_000})  # registered a while ago
    settings = WorkerSettings()
    result = Recovery(rig.redis, KEYS, rig.scripts, rig.queue, settings, rig.start).check()
    assert result.phantoms == 1 and len(result.started) == 1
    assert rig.redis.zrange(S.sweeps, 0, -1) == [result.started[0].encode()]


def test_recovery_rereadies_an_orphan_queue(rig: Rig) -> None:
    entries = [envelope(e) for e in flow_events(F1, 2)]
    rig.redis.rpush(S.queue(A), *entries)  # e.g. an AOF rewind lost the indexes, not the list
    result = Recovery(rig.redis, KEYS, rig.scripts, rig.queue, WorkerSettings(), rig.start).check()
    assert result.orphans == 1 and result.started
    assert rig.sweep_all() == 2


# --- the operator's exits -----------------------------------------------------------------------


def test_retry_of_a_gap_puts_the_dead_letter_behind_the_events_that_fill_it(rig: Rig) -> None:
    events = flow_events(F1, 8)
    emit_all(rig, events[:4])
    emit_all(rig, events[5:7])  # 4 is late: SeqGap at position 5
    rig.sweep_all(batch_size=20)
    [parked] = rig.dead_letters().parked()
    assert (parked.flow_id, parked.dead_letters, parked.queued) == (A, 1, 1)
    assert parked.reason.startswith("SeqGap")
    emit_all(rig, [events[4], events[7]])  # the missing event arrives, behind the others

    assert rig.dead_letters().retry(A) == 1
    assert rig.queued(A) == [envelope(e) for e in events[4:]]  # in position order
    assert rig.dead_letters().parked() == []
    rig.sweep_all(batch_size=20)
    assert rig.store.list(F1) == events
    assert_idle(rig, A)


def test_discard_removes_logs_and_resumes(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    events = flow_events(F1, 6)
    emit_all(rig, events[:3])
    rig.push(A, 3, b"garbage that was never an event")
    rig.redis.rpush(S.queue(A), *[envelope(e) for e in events[3:]])
    rig.sweep_all()
    with caplog.at_level(logging.WARNING, logger="chem_persistence.worker.deadletters"):
        assert rig.dead_letters().discard(A) == 1
    [line] = [r.getMessage() for r in caplog.records if "dlq_discard" in r.getMessage()]
    assert A in line and "garbage that was never an event" in line
    rig.sweep_all()
    assert rig.store.list(F1) == events


def test_a_stale_operator_command_changes_nothing(rig: Rig) -> None:
    events = flow_events(F1, 4)
    emit_all(rig, events[:1])
    rig.push(A, 1, b"first poison")
    rig.redis.rpush(S.queue(A), b"second poison", *[envelope(e) for e in events[1:]])
    rig.sweep_all()
    stale = rig.dead_letters()
    generation, _, queued = stale._read(A)  # operator 1 reads ...
    rig.dead_letters().discard(A)  # ... operator 2 discards the first poison
    rig.sweep_all()  # which dead-letters the second one
    assert [entry_of(r) for r in rig.dead_letters().show(A)] == [b"second poison"]
    with pytest.raises(StaleCommand):
        stale._resume(A, generation, len(queued), [])  # operator 1's discard, now stale
    assert [entry_of(r) for r in rig.dead_letters().show(A)] == [b"second poison"]  # kept


def test_retry_and_discard_need_dead_letters(rig: Rig) -> None:
    with pytest.raises(LookupError, match=A):
        rig.dead_letters().retry(A)
    with pytest.raises(LookupError, match=A):
        rig.dead_letters().discard(A)
