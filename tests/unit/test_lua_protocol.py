"""The queue protocol's Lua scripts, one by one, on fakeredis (which runs real Lua).

Each script is called with the keys and arguments its callers pass, and checked for what it
changes — and, when it refuses, for changing nothing at all (a snapshot of the whole DB).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import fakeredis
import pytest
from rq import Queue

from domain.events import FlowEvent, StepStarted
from producer.config import QueueSettings
from producer.jobs import DRAIN_FUNCTION, ingest_queue
from producer.producer import EMIT_MANY_CHUNK, Producer
from producer.scripts import Scripts
from producer.wire import Keys, encode_envelope

FLOW = "00000000-0000-4000-8000-0000000000b1"
OTHER = "00000000-0000-4000-8000-0000000000b2"
QUEUE = "lua-q"
KEYS = Keys("lua")
TOKEN = "token-of-the-drainer"
TTL_MS = 5000
T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def scripts(redis: fakeredis.FakeRedis) -> Scripts:
    return Scripts.register(redis)


@pytest.fixture
def queue(redis: fakeredis.FakeRedis) -> Queue:
    return ingest_queue(redis, QUEUE)


@pytest.fixture
def producer(redis: fakeredis.FakeRedis) -> Producer:
    return Producer(redis, QueueSettings(queue_name=QUEUE, key_prefix="lua"))


def snapshot(redis: fakeredis.FakeRedis) -> dict[bytes, Any]:
    """Every key's type and value: equal snapshots mean the script changed nothing."""
    state: dict[bytes, Any] = {}
    for key in cast(list[bytes], redis.keys("*")):
        kind = redis.type(key)
        if kind == b"list":
            state[key] = ("list", redis.lrange(key, 0, -1))
        elif kind == b"zset":
            state[key] = ("zset", redis.zrange(key, 0, -1, withscores=True))
        elif kind == b"string":
            state[key] = ("string", redis.get(key), redis.pttl(key) > 0)
        else:
            state[key] = (kind, None)
    return state


def envelope(seq: int, flow: str = FLOW) -> str:
    return encode_envelope(FlowEvent(seq, UUID(flow), StepStarted(seq, f"s{seq}"), T0))


def emit(scripts: Scripts, flow: str, now: int, *entries: str) -> int:
    keys = [KEYS.queue(flow), KEYS.parked(flow), KEYS.pending]
    return int(scripts.emit(keys=keys, args=[flow, now, *entries]))


def queued(redis: fakeredis.FakeRedis, flow: str = FLOW) -> list[str]:
    return [e.decode() for e in cast(list[bytes], redis.lrange(KEYS.queue(flow), 0, -1))]


# --- emit ---------------------------------------------------------------------------------------


def test_emit_pushes_in_order_and_marks_pending_only_the_first_time(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    assert emit(scripts, FLOW, 1000, envelope(0), envelope(1)) == 1
    assert emit(scripts, FLOW, 2000, envelope(2)) == 0
    assert emit(scripts, FLOW, 3000, envelope(3), envelope(4)) == 0
    assert queued(redis) == [envelope(i) for i in range(5)]
    # ZADD NX: the score is when the flow *became* pending, not the latest emit
    assert redis.zrange(KEYS.pending, 0, -1, withscores=True) == [(FLOW.encode(), 1000.0)]
    assert emit(scripts, OTHER, 4000, envelope(0, OTHER)) == 1


def test_emit_after_the_pending_mark_is_cleared_marks_it_again(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    assert emit(scripts, FLOW, 1000, envelope(0)) == 1
    redis.zrem(KEYS.pending, FLOW)  # what a drain's release 'empty' does
    assert emit(scripts, FLOW, 2000, envelope(1)) == 1
    assert redis.zscore(KEYS.pending, FLOW) == 2000.0


def test_emit_to_a_parked_flow_pushes_but_does_not_mark_pending(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    redis.set(KEYS.parked(FLOW), "SeqGap at position 3")
    assert emit(scripts, FLOW, 1000, envelope(4)) == 0
    assert emit(scripts, FLOW, 1001, envelope(5)) == 0
    assert queued(redis) == [envelope(4), envelope(5)]
    assert redis.zscore(KEYS.pending, FLOW) is None


def test_producer_enqueues_a_job_only_when_the_flow_became_pending(
    redis: fakeredis.FakeRedis, producer: Producer, queue: Queue
) -> None:
    def ev(seq: int, flow: str = FLOW) -> FlowEvent:
        return FlowEvent(seq, UUID(flow), StepStarted(seq, "s"), T0)

    producer.emit(ev(0))
    assert queue.count == 1
    producer.emit(ev(1))
    producer.emit(ev(2))
    assert queue.count == 1  # the flow was already pending: its drain will see these
    producer.emit(ev(0, OTHER))
    assert queue.count == 2
    third = "00000000-0000-4000-8000-0000000000b3"
    producer.emit_many([ev(3), ev(1, OTHER), ev(0, third), ev(1, third)])
    assert queue.count == 3  # only the third flow was new
    jobs = queue.get_jobs()
    assert [j.func_name for j in jobs] == [DRAIN_FUNCTION] * 3
    assert [j.args for j in jobs] == [[FLOW], [OTHER], [third]]
    assert len(queued(redis)) == 4

    redis.zrem(KEYS.pending, FLOW)  # drained meanwhile
    producer.emit(ev(4))
    assert queue.count == 4

    redis.set(KEYS.parked(OTHER), "parked")
    redis.zrem(KEYS.pending, OTHER)
    producer.emit(ev(2, OTHER))
    producer.emit_many([ev(3, OTHER)])
    assert queue.count == 4  # a parked flow gets no drain until an operator resumes it
    assert len(queued(redis, OTHER)) == 4


def test_emit_many_chunks_one_flow_but_enqueues_one_job(
    redis: fakeredis.FakeRedis, producer: Producer, queue: Queue
) -> None:
    count = 2 * EMIT_MANY_CHUNK + 7
    events = [FlowEvent(i, UUID(FLOW), StepStarted(i, "s"), T0) for i in range(count)]
    assert producer.emit_many(events) == count
    assert queue.count == 1
    assert queued(redis) == [encode_envelope(e) for e in events]


# --- ack ----------------------------------------------------------------------------------------


def ack(scripts: Scripts, token: str, count: int, ttl: int = TTL_MS) -> int:
    return int(scripts.ack(keys=[KEYS.queue(FLOW), KEYS.lock(FLOW)], args=[token, count, ttl]))


def test_ack_trims_the_head_and_renews_the_lock(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 1000, *(envelope(i) for i in range(5)))
    redis.set(KEYS.lock(FLOW), TOKEN, px=100)
    assert ack(scripts, TOKEN, 2, ttl=60_000) == 1
    assert queued(redis) == [envelope(2), envelope(3), envelope(4)]
    assert redis.pttl(KEYS.lock(FLOW)) > 50_000
    assert ack(scripts, TOKEN, 0, ttl=90_000) == 1  # N = 0 only renews
    assert len(queued(redis)) == 3
    assert redis.pttl(KEYS.lock(FLOW)) > 80_000


@pytest.mark.parametrize("holder", ["someone-else", None], ids=["other-token", "no-lock"])
def test_ack_is_fenced_by_the_token(
    redis: fakeredis.FakeRedis, scripts: Scripts, holder: str | None
) -> None:
    emit(scripts, FLOW, 1000, *(envelope(i) for i in range(3)))
    if holder is not None:
        redis.set(KEYS.lock(FLOW), holder, px=TTL_MS)
    before = snapshot(redis)
    assert ack(scripts, TOKEN, 2) == 0
    assert snapshot(redis) == before


# --- release ------------------------------------------------------------------------------------


def release(scripts: Scripts, token: str, mode: str) -> int:
    keys = [KEYS.queue(FLOW), KEYS.lock(FLOW), KEYS.pending]
    return int(scripts.release(keys=keys, args=[token, FLOW, mode]))


def locked_pending_flow(redis: fakeredis.FakeRedis, scripts: Scripts, entries: int) -> None:
    redis.zadd(KEYS.pending, {FLOW: 1000})
    if entries:
        emit(scripts, FLOW, 1000, *(envelope(i) for i in range(entries)))
    redis.set(KEYS.lock(FLOW), TOKEN, px=TTL_MS)


def test_release_empty_clears_pending_and_lock_when_the_queue_is_empty(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    locked_pending_flow(redis, scripts, entries=0)
    assert release(scripts, TOKEN, "empty") == 1
    assert redis.zscore(KEYS.pending, FLOW) is None
    assert not redis.exists(KEYS.lock(FLOW))


def test_release_empty_refuses_when_the_queue_is_not_empty(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    locked_pending_flow(redis, scripts, entries=1)  # a producer pushed after the last read
    before = snapshot(redis)
    assert release(scripts, TOKEN, "empty") == 0
    assert snapshot(redis) == before  # still pending, still locked: the drain goes on


def test_release_keep_drops_the_lock_and_leaves_the_flow_pending(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    locked_pending_flow(redis, scripts, entries=2)
    assert release(scripts, TOKEN, "keep") == 1
    assert not redis.exists(KEYS.lock(FLOW))
    assert redis.zscore(KEYS.pending, FLOW) == 1000.0
    assert len(queued(redis)) == 2


def test_release_parked_drops_the_lock_and_the_pending_mark(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    locked_pending_flow(redis, scripts, entries=2)
    assert release(scripts, TOKEN, "parked") == 1
    assert not redis.exists(KEYS.lock(FLOW))
    assert redis.zscore(KEYS.pending, FLOW) is None
    assert len(queued(redis)) == 2  # the events wait, untouched


@pytest.mark.parametrize("mode", ["empty", "keep", "parked"])
@pytest.mark.parametrize("entries", [0, 2])
def test_release_with_a_stale_token_changes_nothing(
    redis: fakeredis.FakeRedis, scripts: Scripts, mode: str, entries: int
) -> None:
    locked_pending_flow(redis, scripts, entries=entries)
    redis.set(KEYS.lock(FLOW), "the-new-owner", px=TTL_MS)
    before = snapshot(redis)
    assert release(scripts, TOKEN, mode) == -1
    assert snapshot(redis) == before


# --- deadletter ---------------------------------------------------------------------------------


def deadletter(scripts: Scripts, token: str, head: str, now: int = 5000) -> int:
    keys = [*KEYS.flow_keys(FLOW), KEYS.pending, KEYS.parked_index]
    args: list[str | int] = [token, head, '{"reason": "SeqGap"}', "SeqGap at position 3"]
    args += [FLOW, now]
    return int(scripts.deadletter(keys=keys, args=args))


def test_deadletter_moves_the_head_and_parks_the_flow(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    locked_pending_flow(redis, scripts, entries=3)
    assert deadletter(scripts, TOKEN, envelope(0)) == 1
    assert queued(redis) == [envelope(1), envelope(2)]
    assert redis.lrange(KEYS.dead(FLOW), 0, -1) == [b'{"reason": "SeqGap"}']
    assert redis.get(KEYS.parked(FLOW)) == b"SeqGap at position 3"
    assert redis.zrange(KEYS.parked_index, 0, -1, withscores=True) == [(FLOW.encode(), 5000.0)]
    assert redis.zscore(KEYS.pending, FLOW) is None
    assert not redis.exists(KEYS.lock(FLOW))


def test_deadletter_checks_the_token(redis: fakeredis.FakeRedis, scripts: Scripts) -> None:
    locked_pending_flow(redis, scripts, entries=3)
    before = snapshot(redis)
    assert deadletter(scripts, "not-the-owner", envelope(0)) == -1
    assert snapshot(redis) == before


def test_deadletter_checks_the_head_entry(redis: fakeredis.FakeRedis, scripts: Scripts) -> None:
    locked_pending_flow(redis, scripts, entries=3)
    before = snapshot(redis)
    assert deadletter(scripts, TOKEN, envelope(1)) == -2  # the judged entry is not the head
    assert snapshot(redis) == before


# --- resume -------------------------------------------------------------------------------------


def resume(scripts: Scripts, seen: int, *entries: str, now: int = 9000) -> int:
    keys = [
        KEYS.queue(FLOW),
        KEYS.dead(FLOW),
        KEYS.parked(FLOW),
        KEYS.pending,
        KEYS.parked_index,
    ]
    return int(scripts.resume(keys=keys, args=[FLOW, now, seen, *entries]))


def parked_flow(redis: fakeredis.FakeRedis, scripts: Scripts, later: int) -> None:
    locked_pending_flow(redis, scripts, entries=0)
    emit(scripts, FLOW, 1000, envelope(0), *(envelope(i) for i in range(1, 1 + later)))
    assert deadletter(scripts, TOKEN, envelope(0)) == 1


def test_resume_puts_entries_back_at_the_head_in_order_and_marks_pending(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    parked_flow(redis, scripts, later=2)
    redis.rpush(KEYS.dead(FLOW), "second record")
    assert resume(scripts, 2, "retry-a", "retry-b") == 1
    assert queued(redis) == ["retry-a", "retry-b", envelope(1), envelope(2)]
    assert not redis.exists(KEYS.dead(FLOW))
    assert not redis.exists(KEYS.parked(FLOW))
    assert redis.zscore(KEYS.parked_index, FLOW) is None
    assert redis.zscore(KEYS.pending, FLOW) == 9000.0


def test_resume_without_entries_and_an_empty_queue_is_not_pending(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    parked_flow(redis, scripts, later=0)
    assert resume(scripts, 1) == 0
    assert queued(redis) == []
    assert redis.zscore(KEYS.pending, FLOW) is None
    assert not redis.exists(KEYS.parked(FLOW))
    assert not redis.exists(KEYS.dead(FLOW))


@pytest.mark.parametrize("seen", [0, 2])
def test_resume_with_a_stale_count_changes_nothing(
    redis: fakeredis.FakeRedis, scripts: Scripts, seen: int
) -> None:
    parked_flow(redis, scripts, later=1)
    before = snapshot(redis)
    assert resume(scripts, seen, "retry-a") == -1
    assert snapshot(redis) == before
