"""The Drainer's state machine on fakeredis, with InMemoryEventStore as the store.

InMemoryEventStore raises the same SeqConflict / SeqGap as PostgreSQL does, so every path of a
drain — batches, redelivery, poison, a lost lock, hand-over, reconcile, the operator's retry and
discard — runs here in milliseconds against the reference semantics.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from uuid import UUID

import fakeredis
import psycopg
import pytest
from rq import Queue

from domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepSignal,
    StepStarted,
)
from domain.store import InMemoryEventStore
from producer.config import QueueSettings
from producer.jobs import DRAIN_FUNCTION, ingest_queue
from producer.producer import Producer
from producer.scripts import Scripts
from producer.wire import Keys, encode_envelope
from worker.config import WorkerSettings
from worker.deadletters import DeadLetters, entry_of
from worker.drain import Drainer, DrainResult, LockLost
from worker.reconcile import reconcile

F1 = UUID("00000000-0000-4000-8000-0000000000c1")
F2 = UUID("00000000-0000-4000-8000-0000000000c2")
A, B = str(F1), str(F2)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEYS = Keys("drn")
QUEUE = "drain-q"
BATCH = 3
FP = "9f" * 32


class RecordingStore(InMemoryEventStore):
    """InMemoryEventStore that remembers each append_batch call and can run a hook first."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[int]] = []
        self.before_append: Callable[[Sequence[FlowEvent]], None] | None = None

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> list[FlowEvent]:
        self.calls.append([e.seq for e in events])
        if self.before_append is not None:
            self.before_append(events)
        return super().append_batch(flow_id, events, artifacts)


@dataclass
class Rig:
    redis: fakeredis.FakeRedis
    store: RecordingStore
    queue: Queue
    scripts: Scripts
    producer: Producer

    def drainer(self, **settings: float) -> Drainer:
        config = WorkerSettings(batch_size=BATCH, lock_ttl_ms=10_000, **settings)  # type: ignore[arg-type]
        return Drainer(self.redis, self.store, KEYS, self.scripts, self.queue, config)

    def drain(self, flow: str) -> DrainResult:
        return self.drainer().drain(flow)

    def queued(self, flow: str) -> list[bytes]:
        return cast(list[bytes], self.redis.lrange(KEYS.queue(flow), 0, -1))

    def push(self, flow: str, *entries: bytes | str) -> None:
        """Push raw entries the way the producer's Lua script does."""
        keys = [KEYS.queue(flow), KEYS.parked(flow), KEYS.pending]
        self.scripts.emit(keys=keys, args=[flow, int(time.time() * 1000), *entries])

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, KEYS, self.scripts, self.queue)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.delenv("CHEM_FAULT_KILL_AFTER_COMMIT", raising=False)
    redis = fakeredis.FakeRedis()
    queue = ingest_queue(redis, QUEUE)
    producer = Producer(redis, QueueSettings(queue_name=QUEUE, key_prefix=KEYS.prefix))
    yield Rig(redis, RecordingStore(), queue, Scripts.register(redis), producer)
    redis.close()


ART = Artifact("molecule_batch", {"molecules": ["CCO", "c1ccccc1"]}, {"seed": 3})


def flow_events(flow: UUID, count: int, start: int = 0) -> list[FlowEvent]:
    """Mixed kinds at positions start..start+count-1; one StepFinished carries an artifact."""
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
        elif seq % 7 == 6:
            kind = FlowCompleted(FP)
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


def assert_released(rig: Rig, flow: str) -> None:
    assert rig.queued(flow) == []
    assert rig.redis.zscore(KEYS.pending, flow) is None
    assert not rig.redis.exists(KEYS.lock(flow))


# --- the happy path -------------------------------------------------------------------------


def test_drains_in_order_in_batches_and_releases(rig: Rig) -> None:
    events = flow_events(F1, 10)
    emit_all(rig, events)
    assert rig.drain(A) == DrainResult("drained", 10)
    assert rig.store.list(F1) == events
    assert rig.store.calls == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert rig.store.artifact(ART.hash) == ART  # the body travelled with its event
    assert_released(rig, A)
    assert rig.drain(A) == DrainResult("drained", 0)  # a second job finds nothing to do
    assert rig.store.calls == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_events_pushed_during_the_drain_are_drained_by_it(rig: Rig) -> None:
    events = flow_events(F1, 8)
    emit_all(rig, events[:4])
    late = iter(events[4:])

    def producer_keeps_emitting(batch: Sequence[FlowEvent]) -> None:
        nxt = next(late, None)
        if nxt is not None:
            rig.producer.emit(nxt, (ART,) if isinstance(nxt.kind, StepFinished) else None)

    rig.store.before_append = producer_keeps_emitting
    result = rig.drain(A)
    assert result.outcome == "drained"
    assert rig.store.list(F1) == events
    assert_released(rig, A)
    assert rig.queue.count == 1  # only the first emit's job: the flow stayed pending throughout


def test_busy_when_another_drainer_holds_the_lock(rig: Rig) -> None:
    entries = emit_all(rig, flow_events(F1, 4))
    rig.redis.set(KEYS.lock(A), "another-drainer", px=10_000)
    assert rig.drain(A) == DrainResult("busy")
    assert rig.queued(A) == entries
    assert rig.redis.get(KEYS.lock(A)) == b"another-drainer"
    assert rig.redis.zscore(KEYS.pending, A) is not None
    assert rig.store.calls == []


def test_other_flows_are_independent(rig: Rig) -> None:
    a, b = flow_events(F1, 5), flow_events(F2, 7)
    for x, y in zip(a, b, strict=False):
        emit_all(rig, [x, y])
    emit_all(rig, b[5:])
    assert rig.drain(B) == DrainResult("drained", 7)
    assert rig.store.list(F2) == b
    assert rig.store.list(F1) == []
    assert len(rig.queued(A)) == 5
    assert rig.drain(A) == DrainResult("drained", 5)
    assert rig.store.list(F1) == a


# --- redelivery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("already_stored", [4, 10], ids=["part", "all"])
def test_redelivery_after_commit_is_a_no_op(rig: Rig, already_stored: int) -> None:
    """A drainer killed after COMMIT, before its ack, leaves stored entries queued."""
    events = flow_events(F1, 10)
    rig.store.append_batch(F1, events[:already_stored], {ART.hash: ART})
    emit_all(rig, events)
    assert rig.drain(A).outcome == "drained"
    assert rig.store.list(F1) == events  # nothing twice, nothing missing, in order
    assert_released(rig, A)


def test_the_same_entries_queued_twice_are_stored_once(rig: Rig) -> None:
    events = flow_events(F1, 5)
    entries = emit_all(rig, events)
    assert rig.drain(A).outcome == "drained"
    rig.push(A, *entries)  # e.g. an operator's retry of entries that did get stored
    assert rig.drain(A).outcome == "drained"
    assert rig.store.list(F1) == events
    assert_released(rig, A)


# --- poison ---------------------------------------------------------------------------------

GOOD = 4  # good events before the poison: batch 1 = 0,1,2; batch 2 = 3, POISON, next


@dataclass(frozen=True)
class PoisonCase:
    reason: str
    position: int | None
    # builds the poison entry and the good entries after it, given the flow's events
    build: Callable[[Rig, list[FlowEvent]], tuple[bytes, list[FlowEvent]]]


def _garbage(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    return b"\xff\xfe\x00 not an envelope \x80", events[GOOD:]


def _invalid_json(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    return b'{"v": 1, "flow_id": ', events[GOOD:]


def _other_flow(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    return envelope(flow_events(F2, GOOD + 1)[GOOD]), events[GOOD:]


def _conflict(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    # Position GOOD already holds a different event (the same kind, another time).
    stored = FlowEvent(GOOD, F1, events[GOOD].kind, events[GOOD].ts + timedelta(seconds=1))
    rig.store.append_batch(F1, [*events[:GOOD], stored], {ART.hash: ART})
    rig.store.calls.clear()
    return envelope(events[GOOD]), events[GOOD + 1 :]


def _gap(rig: Rig, events: list[FlowEvent]) -> tuple[bytes, list[FlowEvent]]:
    # Position GOOD is missing: the entry at its place is the event at GOOD + 1.
    return envelope(events[GOOD + 1]), events[GOOD + 2 :]


POISONS = {
    "garbage-bytes": PoisonCase("InvalidEvent", None, _garbage),
    "invalid-json": PoisonCase("InvalidEvent", None, _invalid_json),
    "event-of-another-flow": PoisonCase("InvalidEvent", None, _other_flow),
    "seq-conflict": PoisonCase("SeqConflict", GOOD, _conflict),
    "seq-gap": PoisonCase("SeqGap", GOOD + 1, _gap),
}


@pytest.mark.parametrize("case", POISONS.values(), ids=list(POISONS))
def test_poison_is_dead_lettered_and_parks_the_flow(rig: Rig, case: PoisonCase) -> None:
    events = flow_events(F1, GOOD + 5)
    poison, later = case.build(rig, events)
    other = flow_events(F2, 6)
    emit_all(rig, events[:GOOD])
    rig.push(A, poison)
    later_entries = emit_all(rig, later)
    emit_all(rig, other)
    before = datetime.now(UTC)

    assert rig.drain(A) == DrainResult("parked", GOOD)

    # the prefix before the poison is committed (in order) and acked
    assert rig.store.list(F1)[:GOOD] == events[:GOOD]
    if case.reason != "SeqConflict":
        assert rig.store.list(F1) == events[:GOOD]
    # the poison moved to the dead letters, with why and where
    [raw] = rig.redis.lrange(KEYS.dead(A), 0, -1)
    record = json.loads(raw)
    assert set(record) >= {"reason", "error", "sqlstate", "position", "time"}
    assert record["reason"] == case.reason
    assert record["sqlstate"] is None
    assert record["position"] == case.position
    assert record["error"]
    assert before <= datetime.fromisoformat(record["time"]) <= datetime.now(UTC)
    assert entry_of(record) == poison
    if case.reason == "InvalidEvent" and poison.startswith(b"\xff"):
        assert "entry_b64" in record  # bytes that are not UTF-8 are kept exactly, in base64
    else:
        assert record["entry"] == poison.decode()
    # the flow is parked; the later events wait, untouched and in order
    assert cast(bytes, rig.redis.get(KEYS.parked(A))).decode().startswith(case.reason)
    assert rig.redis.zscore(KEYS.parked_index, A) is not None
    assert rig.redis.zscore(KEYS.pending, A) is None
    assert not rig.redis.exists(KEYS.lock(A))
    assert rig.queued(A) == later_entries
    # another drain of the parked flow touches nothing
    calls = list(rig.store.calls)
    assert rig.drain(A) == DrainResult("parked")
    assert rig.queued(A) == later_entries and rig.store.calls == calls
    # the other flow drains normally
    assert rig.drain(B) == DrainResult("drained", 6)
    assert rig.store.list(F2) == other


def test_poison_in_the_middle_of_a_batch_commits_and_acks_the_prefix(rig: Rig) -> None:
    events = flow_events(F1, 8)
    emit_all(rig, events[:4])
    rig.push(A, b"garbage")
    later = emit_all(rig, events[4:])
    rig.store.calls.clear()
    assert rig.drain(A) == DrainResult("parked", 4)
    # batch 1 = 0,1,2; batch 2 = [3, garbage, 4]: 3 is committed on its own, 4 is not touched
    assert rig.store.calls == [[0, 1, 2], [3]]
    assert rig.store.list(F1) == events[:4]
    assert rig.queued(A) == later


def test_a_gap_inside_a_batch_commits_the_events_before_it(rig: Rig) -> None:
    events = flow_events(F1, 8)
    emit_all(rig, events[:4])
    later = emit_all(rig, events[5:])  # position 4 never emitted
    assert rig.drain(A) == DrainResult("parked", 4)
    assert rig.store.list(F1) == events[:4]
    assert rig.queued(A) == later[1:]
    [record] = rig.dead_letters().show(A)
    assert (record["reason"], record["position"]) == ("SeqGap", 5)


def test_emits_to_a_parked_flow_wait_without_a_job(rig: Rig) -> None:
    events = flow_events(F1, 4)
    rig.push(A, b"garbage")
    assert rig.drain(A).outcome == "parked"
    jobs = rig.queue.count
    emit_all(rig, events)
    assert rig.queue.count == jobs
    assert rig.redis.zscore(KEYS.pending, A) is None
    assert len(rig.queued(A)) == 4


# --- failures that are not the event's fault ------------------------------------------------


@pytest.mark.parametrize("count", [1, 5])
@pytest.mark.parametrize(
    "error",
    [psycopg.OperationalError("server closed the connection"), RuntimeError("a bug")],
    ids=["transient", "unexpected"],
)
def test_errors_that_are_not_poison_keep_the_events_and_the_flow_pending(
    rig: Rig, error: Exception, count: int
) -> None:
    entries = emit_all(rig, flow_events(F1, count))

    def fail(batch: Sequence[FlowEvent]) -> None:
        raise error

    rig.store.before_append = fail
    with pytest.raises(type(error)):
        rig.drain(A)
    assert rig.queued(A) == entries
    assert rig.redis.zscore(KEYS.pending, A) is not None  # reconcile will take it over
    assert not rig.redis.exists(KEYS.lock(A))
    assert not rig.redis.exists(KEYS.dead(A)) and not rig.redis.exists(KEYS.parked(A))
    rig.store.before_append = None
    assert rig.drain(A).outcome == "drained"
    assert len(rig.store.list(F1)) == count


def test_lost_lock_raises_and_trims_nothing(rig: Rig) -> None:
    events = flow_events(F1, 5)
    entries = emit_all(rig, events)

    def lock_expires_and_is_taken(batch: Sequence[FlowEvent]) -> None:
        rig.redis.set(KEYS.lock(A), "the-next-drainer", px=10_000)

    rig.store.before_append = lock_expires_and_is_taken
    with pytest.raises(LockLost):
        rig.drain(A)
    assert rig.queued(A) == entries  # nothing trimmed: the new owner's view is intact
    assert rig.redis.get(KEYS.lock(A)) == b"the-next-drainer"
    assert rig.store.list(F1) == events[:BATCH]  # committed, and will be re-acked

    rig.store.before_append = None
    rig.redis.delete(KEYS.lock(A))  # the next drainer's turn
    assert rig.drain(A).outcome == "drained"
    assert rig.store.list(F1) == events
    assert_released(rig, A)


def test_lost_lock_before_dead_lettering_moves_nothing(rig: Rig) -> None:
    emit_all(rig, flow_events(F1, 1))
    rig.push(A, b"garbage")

    def lock_taken(batch: Sequence[FlowEvent]) -> None:
        rig.redis.set(KEYS.lock(A), "other", px=10_000)

    rig.store.before_append = lock_taken
    with pytest.raises(LockLost):
        rig.drain(A)
    assert len(rig.queued(A)) == 2
    assert not rig.redis.exists(KEYS.dead(A)) and not rig.redis.exists(KEYS.parked(A))


# --- fairness -------------------------------------------------------------------------------


def test_drain_slice_expiry_hands_over_to_a_new_job(rig: Rig) -> None:
    events = flow_events(F1, 10)
    entries = emit_all(rig, events)
    jobs = rig.queue.count
    rig.store.before_append = lambda batch: time.sleep(0.03)
    result = rig.drainer(drain_slice_seconds=0.01).drain(A)
    assert result == DrainResult("handed_over", BATCH)
    assert rig.store.list(F1) == events[:BATCH]
    assert rig.queued(A) == entries[BATCH:]
    assert not rig.redis.exists(KEYS.lock(A))
    assert rig.redis.zscore(KEYS.pending, A) is not None
    assert rig.queue.count == jobs + 1
    assert rig.queue.get_jobs()[-1].args == [A]


# --- reconcile ------------------------------------------------------------------------------


def test_reconcile_enqueues_only_stale_unlocked_unparked_pending_flows(rig: Rig) -> None:
    now = int(time.time() * 1000)
    stale, fresh, locked, parked = (f"00000000-0000-4000-8000-00000000d00{i}" for i in range(4))
    rig.redis.zadd(KEYS.pending, {stale: now - 60_000, locked: now - 60_000})
    rig.redis.zadd(KEYS.pending, {parked: now - 60_000, fresh: now - 1_000})
    rig.redis.set(KEYS.lock(locked), "a-live-drainer", px=10_000)
    rig.redis.set(KEYS.parked(parked), "SeqGap")

    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=10) == [stale]
    [job] = rig.queue.get_jobs()
    assert (job.func_name, job.args) == (DRAIN_FUNCTION, [stale])
    bumped = rig.redis.zscore(KEYS.pending, stale)
    assert bumped is not None and bumped >= now  # left alone for another grace period
    assert rig.redis.zscore(KEYS.pending, fresh) == now - 1_000
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=10) == []
    assert rig.queue.count == 1
    # once the lock expires, that flow is stale and unowned too
    rig.redis.delete(KEYS.lock(locked))
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=10) == [locked]


def test_reconcile_then_drain_completes_a_flow_whose_job_was_lost(rig: Rig) -> None:
    events = flow_events(F1, 5)
    rig.push(A, *(envelope(e) for e in events))  # the producer died before enqueueing
    assert rig.queue.count == 0
    rig.redis.zadd(KEYS.pending, {A: 0}, xx=True)
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=1) == [A]
    [job] = rig.queue.get_jobs()
    assert rig.drain(job.args[0]).outcome == "drained"
    assert rig.store.list(F1) == events


def test_reconcile_does_not_pile_up_jobs_behind_a_long_queue(rig: Rig) -> None:
    """A flow whose drain is still waiting in rq gets no second job, however often reconcile
    runs; once that job is gone (lost, failed, or its worker died) it gets a new one."""
    rig.push(A, envelope(flow_events(F1, 1)[0]))  # became pending: the producer enqueued a job
    assert rig.queue.count == 0  # push() is the Lua part only
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=0) == [A]
    for _ in range(5):
        assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=0) == []
    assert rig.queue.count == 1
    [job] = rig.queue.get_jobs()
    job.delete()  # the waiting job was lost (e.g. its worker was killed after taking it)
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=0) == [A]
    assert rig.queue.count == 1


def test_reconcile_re_enqueues_a_job_that_says_queued_but_left_the_queue(rig: Rig) -> None:
    """A worker SIGKILLed after popping the job id and before marking the job started leaves
    a job whose status still says queued: its flow must not wait for it forever."""
    rig.push(A, envelope(flow_events(F1, 1)[0]))
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=0) == [A]
    [job] = rig.queue.get_jobs()
    rig.redis.lrem(rig.queue.key, 0, job.id)  # taken off the queue by a worker that then died
    assert job.get_status(refresh=True) == "queued"
    assert reconcile(rig.redis, KEYS, rig.queue, grace_seconds=0) == [A]
    assert rig.queue.count == 1


# --- the operator's exits -----------------------------------------------------------------------


def test_retry_puts_the_dead_letter_back_at_the_head_and_unparks(rig: Rig) -> None:
    events = flow_events(F1, 8)
    emit_all(rig, events[:4])
    later = emit_all(rig, events[5:])  # position 4 is missing: SeqGap at position 5
    assert rig.drain(A).outcome == "parked"
    [parked] = rig.dead_letters().parked()
    assert (parked.flow_id, parked.dead_letters, parked.queued) == (A, 1, 2)
    assert parked.reason.startswith("SeqGap")

    rig.store.append_batch(F1, [events[4]])  # the cause is fixed
    jobs = rig.queue.count
    assert rig.dead_letters().retry(A) == 1
    assert rig.queued(A) == later  # the dead letter first, then the rest, in order
    assert not rig.redis.exists(KEYS.parked(A)) and not rig.redis.exists(KEYS.dead(A))
    assert rig.redis.zscore(KEYS.parked_index, A) is None
    assert rig.redis.zscore(KEYS.pending, A) is not None
    assert rig.queue.count == jobs + 1
    assert rig.dead_letters().parked() == []

    assert rig.drain(A).outcome == "drained"
    assert rig.store.list(F1) == events
    assert_released(rig, A)


def test_discard_removes_logs_and_resumes(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    events = flow_events(F1, 6)
    emit_all(rig, events[:3])
    rig.push(A, b"garbage that was never an event")
    emit_all(rig, events[3:])
    assert rig.drain(A).outcome == "parked"
    with caplog.at_level(logging.WARNING, logger="worker.deadletters"):
        assert rig.dead_letters().discard(A) == 1
    [log_line] = [r.getMessage() for r in caplog.records if "dlq_discard" in r.getMessage()]
    assert A in log_line and "garbage that was never an event" in log_line
    assert not rig.redis.exists(KEYS.dead(A)) and not rig.redis.exists(KEYS.parked(A))
    assert rig.drain(A).outcome == "drained"
    assert rig.store.list(F1) == events


def test_discarding_a_real_event_leaves_a_gap_that_parks_again(rig: Rig) -> None:
    events = flow_events(F1, 6)
    emit_all(rig, events[:3])
    broken = json.loads(envelope(events[3]))
    broken["event_type"] = "flowcompleted"  # corrupted on the way: refused as InvalidEvent
    rig.push(A, json.dumps(broken))
    later = emit_all(rig, events[4:])
    assert rig.drain(A).outcome == "parked"
    assert rig.dead_letters().discard(A) == 1
    assert rig.drain(A) == DrainResult("parked", 0)
    [record] = rig.dead_letters().show(A)
    assert (record["reason"], record["position"]) == ("SeqGap", 4)
    assert rig.queued(A) == later[1:]
    assert rig.store.list(F1) == events[:3]


def test_retry_and_discard_need_dead_letters(rig: Rig) -> None:
    with pytest.raises(LookupError, match=A):
        rig.dead_letters().retry(A)
    with pytest.raises(LookupError, match=A):
        rig.dead_letters().discard(A)
