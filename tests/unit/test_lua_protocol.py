"""The queue protocol's Lua scripts, one by one, on fakeredis (which runs real Lua).

Each script is called with the keys and arguments its callers pass, and checked for what it
changes; and each is run a second time with the very same call (a client retrying after a
lost reply) to check that the replay changes nothing the first call did not (a snapshot of
every key and value).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import fakeredis
import pytest

from chem_persistence.domain.events import FlowEvent, StepStarted
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.dead_letter import make_record
from chem_persistence.producer.jobs import QUEUED_SWEEP_TTL_MS
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import EMIT_MANY_CHUNK, Producer
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import encode_envelope

FLOW = "00000000-0000-4000-8000-0000000000b1"
OTHER = "00000000-0000-4000-8000-0000000000b2"
THIRD = "00000000-0000-4000-8000-0000000000b3"
KEYS = Keys("lua")
S = KEYS.shard(0)
TOKEN = "token-of-the-sweep"
SWEEP = "sweep-under-test"
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


def snapshot(redis: fakeredis.FakeRedis) -> dict[bytes, Any]:
    """Every key's type and value: equal snapshots mean the script changed nothing."""
    state: dict[bytes, Any] = {}
    for key in cast(list[bytes], redis.keys("*")):
        kind = redis.type(key)
        if kind == b"string":
            state[key] = redis.get(key)
        elif kind == b"list":
            state[key] = redis.lrange(key, 0, -1)
        elif kind == b"zset":
            state[key] = redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            state[key] = redis.hgetall(key)
        else:
            raise AssertionError(f"unexpected type {kind!r} of {key!r}")
    return state


def without_heartbeats(state: dict[bytes, Any]) -> dict[bytes, Any]:
    """The snapshot less the sweeps' liveness deadlines, which a claim refreshes by design."""
    sweeps = S.sweeps.encode()
    if sweeps in state:
        state = {**state, sweeps: [member for member, _ in state[sweeps]]}
    return state


def twice(redis: fakeredis.FakeRedis, call: Any) -> Any:
    """Run ``call`` (a script call) twice; the second run must change nothing."""
    first = call()
    after_first = without_heartbeats(snapshot(redis))
    call()
    assert without_heartbeats(snapshot(redis)) == after_first, "the replay changed something"
    return first


def entry(seq: int, flow: str = FLOW) -> str:
    event = FlowEvent(seq, UUID(flow), StepStarted(seq, f"s{seq}"), T0 + timedelta(seconds=seq))
    return encode_envelope(event)


def emit(scripts: Scripts, flow: str, first: int, *entries: str, max_sweeps: int = 1) -> Any:
    """The emit script as the producer calls it (``first``: the position of the first entry,
    for the reader; the script does not need it)."""
    args = [S.base, flow, QUEUED_SWEEP_TTL_MS, max_sweeps, *entries]
    return scripts.emit(keys=[S.ready, S.leased, S.sweeps, S.wake], args=args)


def claim(scripts: Scripts, k: int = 10, b: int = 100, budget: int = 10**6, token: str = TOKEN):  # type: ignore[no-untyped-def]
    keys = [S.ready, S.leased, S.leases, S.removed, S.sweeps]
    args = [S.base, k, b, budget, TTL_MS, token, SWEEP, TTL_MS]
    return scripts.claim(keys=keys, args=args)


def ack(scripts: Scripts, *flows: tuple[Any, ...], token: str = TOKEN) -> Any:
    args: list[Any] = [S.base, token]
    for item in flows:
        args += list(item) + [""] * (6 - len(item))
    keys = [S.ready, S.leased, S.leases, S.removed, S.parked, S.wake]
    return scripts.ack(keys=keys, args=args)


def queued(redis: fakeredis.FakeRedis, flow: str = FLOW) -> list[bytes]:
    return cast(list[bytes], redis.lrange(S.queue(flow), 0, -1))


# --- emit -------------------------------------------------------------------------------------


def test_emit_pushes_in_order_makes_the_flow_ready_and_registers_one_sweep(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    job = twice(redis, lambda: emit(scripts, FLOW, 0, entry(0), entry(1)))
    assert isinstance(job, bytes) and job.decode().endswith("sweep-1")
    assert queued(redis) == [entry(0).encode(), entry(1).encode()]
    assert redis.zscore(S.ready, FLOW) is not None
    assert redis.zrange(S.sweeps, 0, -1) == [job]
    assert redis.llen(S.wake) == 1
    # another flow, while the sweep is registered: no second sweep
    assert emit(scripts, OTHER, 0, entry(0, OTHER)) == 0
    assert redis.zcard(S.sweeps) == 1


def test_emit_ready_scores_come_from_the_server_clock(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    before = int(time.time() * 1000)
    emit(scripts, FLOW, 0, entry(0))
    score = cast(float, redis.zscore(S.ready, FLOW))
    assert before - 1000 <= score <= int(time.time() * 1000) + 1000


def test_a_replay_after_a_sweep_took_the_entries_pushes_them_again(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0))
    redis.delete(S.queue(FLOW))  # a sweep stored it and removed it
    emit(scripts, FLOW, 0, entry(0))  # the late replay: an identical copy, a no-op when stored
    assert queued(redis) == [entry(0).encode()]


def test_a_different_event_at_a_pushed_position_is_queued_to_be_judged(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0), entry(1))
    other = encode_envelope(FlowEvent(1, UUID(FLOW), StepStarted(9, "other"), T0))
    emit(scripts, FLOW, 1, other)  # never dropped silently: the sweep calls it a SeqConflict
    assert queued(redis) == [entry(0).encode(), entry(1).encode(), other.encode()]


def test_emit_to_a_parked_or_leased_flow_pushes_but_does_not_make_it_ready(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    redis.set(S.reason(FLOW), "SeqGap at position 3")
    redis.zadd(S.leased, {OTHER: 10**15})
    assert twice(redis, lambda: emit(scripts, FLOW, 0, entry(0))) == 0
    assert twice(redis, lambda: emit(scripts, OTHER, 0, entry(0, OTHER))) == 0
    assert queued(redis) == [entry(0).encode()]
    assert queued(redis, OTHER) == [entry(0, OTHER).encode()]
    assert redis.zcard(S.ready) == 0 and redis.zcard(S.sweeps) == 0


def test_producer_enqueues_one_sweep_job_for_many_flows(redis: fakeredis.FakeRedis) -> None:
    producer = Producer(redis, QueueSettings(queue_name="lua-q", key_prefix="lua"))
    events = [FlowEvent(0, UUID(flow), StepStarted(0, "s"), T0) for flow in (FLOW, OTHER, THIRD)]
    for event in events:
        producer.emit(event)
    assert producer.queue.count == 1
    [job] = producer.queue.get_jobs()
    assert job.args == [0]


def test_emit_many_chunks_one_flow_in_order(redis: fakeredis.FakeRedis) -> None:
    producer = Producer(redis, QueueSettings(queue_name="lua-q", key_prefix="lua"))
    count = EMIT_MANY_CHUNK + 5
    events = [
        FlowEvent(i, UUID(FLOW), StepStarted(i, "s"), T0 + timedelta(microseconds=i))
        for i in range(count)
    ]
    assert producer.emit_many(events) == count
    assert redis.llen(S.queue(FLOW)) == count
    assert producer.queue.count == 1
    seqs = [json.loads(e)["seq"] for e in cast(list[bytes], redis.lrange(S.queue(FLOW), 0, -1))]
    assert seqs == list(range(count))


# --- claim ------------------------------------------------------------------------------------


def test_claim_leases_the_oldest_flows_with_their_heads(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    for flow in (FLOW, OTHER, THIRD):
        emit(scripts, flow, 0, *(entry(i, flow) for i in range(3)))
        time.sleep(0.002)  # distinct ready scores: FLOW is the oldest
    reply = twice(redis, lambda: claim(scripts, k=2, b=5))
    _now, reaped, *flows = reply
    assert reaped == 0
    assert [f[0] for f in flows] == [FLOW.encode(), OTHER.encode()]
    assert [len(f[2]) for f in flows] == [3, 2]  # 5 events in all
    assert flows[0][1] == 0  # nothing removed yet
    assert set(redis.hgetall(S.leases)) == {FLOW.encode(), OTHER.encode()}
    assert redis.zrange(S.ready, 0, -1) == [THIRD.encode()]
    assert redis.zscore(S.sweeps, SWEEP) is not None  # the claim says the sweep is alive


def test_claim_keeps_to_the_byte_budget_but_always_moves_one_entry(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0), entry(1))
    emit(scripts, OTHER, 0, entry(0, OTHER))
    _now, _reaped, *flows = claim(scripts, budget=10)  # smaller than any entry
    assert [(f[0], len(f[2])) for f in flows] == [(FLOW.encode(), 1)]
    assert redis.zrange(S.ready, 0, -1) == [OTHER.encode()]  # not taken: still ready


def test_a_replayed_claim_leases_nothing_more(redis: fakeredis.FakeRedis, scripts: Scripts) -> None:
    emit(scripts, FLOW, 0, entry(0))
    first = claim(scripts, k=1)
    emit(scripts, OTHER, 0, entry(0, OTHER))  # ready after the first call
    again = claim(scripts, k=1)
    assert again[2:] == first[2:]  # the same flow, re-read; OTHER stays ready
    assert redis.zrange(S.ready, 0, -1) == [OTHER.encode()]


def test_claim_reaps_expired_leases(redis: fakeredis.FakeRedis, scripts: Scripts) -> None:
    emit(scripts, FLOW, 0, entry(0))
    claim(scripts, token="dead-sweep")
    redis.zadd(S.leased, {FLOW: 1})  # its deadline passed long ago
    _now, reaped, *flows = claim(scripts)
    assert reaped == 1
    assert [f[0] for f in flows] == [FLOW.encode()]
    assert redis.hget(S.leases, FLOW) == TOKEN.encode()


# --- ack --------------------------------------------------------------------------------------


def test_ack_removes_the_committed_entries_and_requeues_the_rest(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, *(entry(i) for i in range(4)))
    emit(scripts, OTHER, 0, entry(0, OTHER))
    claim(scripts)
    assert twice(redis, lambda: ack(scripts, (FLOW, 0, 2), (OTHER, 0, 1))) == [2, 0, 0]
    assert queued(redis) == [entry(2).encode(), entry(3).encode()]
    assert redis.zrange(S.ready, 0, -1) == [FLOW.encode()]  # back of the line
    assert redis.hget(S.removed, FLOW) == b"2"
    # OTHER is idle: nothing of it is left
    assert not [k for k in cast(list[bytes], redis.keys("*")) if OTHER.encode() in k]
    assert redis.hget(S.leases, FLOW) is None and redis.zcard(S.leased) == 0
    # the next claim of FLOW starts where the ack left it
    _now, _reaped, (flow, removed, entries) = claim(scripts, token="next")
    assert (flow, removed, entries) == (FLOW.encode(), 2, [entry(2).encode(), entry(3).encode()])


def test_ack_with_a_stale_token_or_count_changes_nothing(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0), entry(1))
    claim(scripts)
    before = snapshot(redis)
    assert ack(scripts, (FLOW, 0, 2), token="someone-else") == [0, 1, 0]
    assert ack(scripts, (FLOW, 7, 2)) == [0, 1, 0]  # not what was claimed
    assert snapshot(redis) == before


def test_ack_dead_letters_the_poison_and_parks_the_flow(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0), "poison", entry(2))
    claim(scripts)
    record = make_record(b"poison", ValueError("bad"), None, None)
    result = twice(
        redis, lambda: ack(scripts, (FLOW, 0, 1, "poison", record, "InvalidEvent at None"))
    )
    assert result == [1, 0, 1]
    assert queued(redis) == [entry(2).encode()]  # the later event waits, untouched
    assert redis.lrange(S.dead(FLOW), 0, -1) == [record.encode()]
    assert redis.get(S.reason(FLOW)) == b"InvalidEvent at None"
    assert redis.get(S.dead_generation(FLOW)) == b"1"
    assert redis.zscore(S.parked, FLOW) is not None
    assert redis.zcard(S.ready) == 0 and redis.zcard(S.leased) == 0


def test_an_ack_of_nothing_gives_the_flows_back(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0))
    claim(scripts)
    assert twice(redis, lambda: ack(scripts, (FLOW, 0, 0))) == [1, 0, 0]
    assert queued(redis) == [entry(0).encode()]
    assert redis.zrange(S.ready, 0, -1) == [FLOW.encode()]


# --- resume -----------------------------------------------------------------------------------


def park(redis: fakeredis.FakeRedis, scripts: Scripts, poison: str, *later: str) -> None:
    emit(scripts, FLOW, 0, poison, *later)
    claim(scripts, token="parker")
    record = make_record(poison.encode(), ValueError("bad"), None, None)
    ack(scripts, (FLOW, 0, 0, poison, record, "why"), token="parker")


def resume(scripts: Scripts, gen: int, read: int, *head: str, command: str = "c1") -> Any:
    keys = [S.ready, S.leased, S.parked, S.sweeps, S.wake]
    args = [S.base, FLOW, gen, read, QUEUED_SWEEP_TTL_MS, 1, command, *head]
    return scripts.resume(keys=keys, args=args)


def test_resume_replaces_the_head_unparks_and_wants_a_sweep(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    park(redis, scripts, entry(2), entry(3), entry(0))
    redis.delete(S.sweeps)
    new_head = [entry(0), entry(2), entry(3)]
    result = resume(scripts, 1, 2, *new_head)
    assert isinstance(result, bytes)  # a sweep job to enqueue
    after = snapshot(redis)
    assert resume(scripts, 1, 2, *new_head) == -2  # the same command, replayed: done already
    assert snapshot(redis) == after
    assert queued(redis) == [e.encode() for e in new_head]
    assert not redis.exists(S.dead(FLOW)) and not redis.exists(S.reason(FLOW))
    assert redis.zcard(S.parked) == 0 and redis.zrange(S.ready, 0, -1) == [FLOW.encode()]


def test_resume_with_a_stale_generation_changes_nothing(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    park(redis, scripts, entry(0))
    before = snapshot(redis)
    assert resume(scripts, 0, 0, command="stale") == -1
    assert snapshot(redis) == before


# --- recovery, the end of a sweep, helpers ----------------------------------------------------


def recover(scripts: Scripts, *candidates: str) -> Any:
    keys = [S.ready, S.leased, S.parked, S.sweeps, S.wake]
    return scripts.recover(keys=keys, args=[S.base, QUEUED_SWEEP_TTL_MS, 1, *candidates])


def test_recover_reaps_rereadies_orphans_and_wants_one_sweep(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    emit(scripts, FLOW, 0, entry(0))
    claim(scripts, token="dead")
    redis.zadd(S.leased, {FLOW: 1})  # expired
    redis.rpush(S.queue(OTHER), entry(0, OTHER))  # an orphan: queued, in no index
    redis.delete(S.sweeps)
    reaped, orphans, job = recover(scripts, OTHER)
    assert (reaped, orphans) == (1, 1) and isinstance(job, bytes)
    assert set(redis.zrange(S.ready, 0, -1)) == {FLOW.encode(), OTHER.encode()}
    after = snapshot(redis)
    assert recover(scripts, OTHER) == [0, 0, 0]  # replayed: nothing more to do
    assert snapshot(redis) == after


def sweep_end(scripts: Scripts, handing_over: bool, max_sweeps: int = 3) -> Any:
    args = [S.base, SWEEP, int(handing_over), QUEUED_SWEEP_TTL_MS, max_sweeps]
    return scripts.sweep_end(keys=[S.ready, S.sweeps], args=args)


def test_an_idle_sweep_leaves_only_when_nothing_is_ready(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    redis.zadd(S.sweeps, {SWEEP: 10**15})
    emit(scripts, FLOW, 0, entry(0))
    assert sweep_end(scripts, handing_over=False) == 0  # a flow is ready: stay
    redis.delete(S.ready)
    assert twice(redis, lambda: sweep_end(scripts, handing_over=False)) == 1
    assert redis.zcard(S.sweeps) == 0


def test_a_handing_over_sweep_registers_one_successor_even_if_replayed(
    redis: fakeredis.FakeRedis, scripts: Scripts
) -> None:
    redis.zadd(S.sweeps, {SWEEP: 10**15})
    emit(scripts, FLOW, 0, entry(0))
    successor = sweep_end(scripts, handing_over=True, max_sweeps=1)
    assert isinstance(successor, bytes)
    assert sweep_end(scripts, handing_over=True, max_sweeps=1) == 1  # no second successor
    assert redis.zrange(S.sweeps, 0, -1) == [successor]


def test_spawn_adds_sweeps_up_to_the_maximum(redis: fakeredis.FakeRedis, scripts: Scripts) -> None:
    emit(scripts, FLOW, 0, entry(0))  # registers the first sweep
    spawned = [
        scripts.spawn(keys=[S.ready, S.sweeps], args=[S.base, QUEUED_SWEEP_TTL_MS, 3])
        for _ in range(4)
    ]
    assert [isinstance(s, bytes) for s in spawned] == [True, True, False, False]
    assert redis.zcard(S.sweeps) == 3
