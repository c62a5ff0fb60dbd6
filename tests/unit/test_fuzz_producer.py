"""Fuzzing the queue's edges without servers (fakeredis runs the real Lua scripts).

(a) The producer refuses every invalid event with InvalidEvent (a ValueError) and enqueues
    nothing — neither with ``emit`` nor with ``emit_many`` (all or nothing) — and accepts every
    valid one, which a worker then decodes back to the very same event and bodies.
(b) A worker never crashes on a malformed entry it finds in Redis: sweep cycles over valid
    events, then a fuzzed entry, then more valid events, store the valid prefix, dead-letter
    the fuzzed entry with a record naming the reason, park the flow and leave the later
    events queued untouched — or, when the entry is in fact a storable event, store it and
    go on. The oracle is ``expected_fate``; the store is InMemoryEventStore (the reference).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any, cast

import fakeredis
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chem_persistence.domain import codec, reference_decoder
from chem_persistence.domain.equality import stored_form
from chem_persistence.domain.errors import InvalidValue
from chem_persistence.domain.events import Artifact, FlowEvent
from chem_persistence.domain.store import InMemoryEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import SWEEP_FUNCTION, ingest_queue
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import InvalidEvent, decode_envelope, encode_envelope
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import Sweeper
from tests.fuzz_strategies import (
    FuzzFlow,
    check_sweep,
    fuzz_flows,
    invalid_items,
    oversized_items,
    valid_items,
)

QUEUE = "fuzz-q"
KEYS = Keys("fuzz")
MAX_BYTES = 2048  # small, so that an oversized envelope is cheap to build
FUZZ_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEWER = settings(FUZZ_SETTINGS, max_examples=50)  # the simpler properties

Item = tuple[FlowEvent, tuple[Artifact, ...]]


@contextmanager
def fresh_producer() -> Iterator[tuple[fakeredis.FakeRedis, Producer]]:
    """A Producer on an empty fakeredis server of its own (one per example)."""
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    settings = QueueSettings(queue_name=QUEUE, key_prefix=KEYS.prefix, max_envelope_bytes=MAX_BYTES)
    try:
        yield redis, Producer(redis, settings)
    finally:
        redis.close()


def assert_refused(produce: Any, redis: fakeredis.FakeRedis) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        produce()
    assert isinstance(caught.value, ValueError)
    assert caught.value.field, "InvalidEvent names the field"
    assert str(caught.value).startswith(f"{caught.value.field}: ")
    assert redis.dbsize() == 0, "nothing may reach Redis"
    return caught.value


# --- (a) the producer -------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(invalid_items(), st.lists(valid_items(), max_size=3), st.integers(0, 3))
def test_producer_refuses_every_invalid_event_and_enqueues_nothing(
    case: tuple[str, Item], others: list[Item], at: int
) -> None:
    what, (event, bodies) = case
    note(f"broken: {what}")
    with fresh_producer() as (redis, producer):
        error = assert_refused(lambda: producer.emit(event, bodies or None), redis)
        note(f"refused: {error}")
        batch = [*others[:at], (event, bodies), *others[at:]]
        assert_refused(lambda: producer.emit_many(batch), redis)
        assert_refused(lambda: producer.encode(event, bodies), redis)


@FEWER
@given(oversized_items(MAX_BYTES))
def test_producer_refuses_an_oversized_envelope(item: Item) -> None:
    event, bodies = item
    with fresh_producer() as (redis, producer):
        error = assert_refused(lambda: producer.emit(event, bodies), redis)
        assert error.field == "envelope"


@FEWER
@given(st.lists(valid_items(), min_size=1, max_size=4), st.booleans())
def test_producer_accepts_every_valid_event(items: list[Item], many: bool) -> None:
    with fresh_producer() as (redis, producer):
        fits = [(e, b) for e, b in items if len(encode_envelope(e, b).encode()) <= MAX_BYTES]
        if many:
            assert producer.emit_many(fits) == len(fits)
        else:
            for event, bodies in fits:
                producer.emit(event, bodies or None)
        flows = list(dict.fromkeys(str(e.flow_id) for e, _ in fits))
        queued = [
            entry
            for flow in flows
            for entry in cast(list[bytes], redis.lrange(KEYS.for_flow(flow).queue(flow), 0, -1))
        ]
        decoded = [decode_envelope(entry) for entry in queued]
        by_flow = sorted(fits, key=lambda item: flows.index(str(item[0].flow_id)))
        assert [d[0] for d in decoded] == [e for e, _ in by_flow]
        assert [d[1] for d in decoded] == [{a.hash: a for a in b} for _, b in by_flow]
        queue = ingest_queue(redis, QUEUE)
        # one sweep job for however many flows became ready, not one job per flow
        assert queue.count == (1 if fits else 0)
        assert [job.func_name for job in queue.get_jobs()] == [SWEEP_FUNCTION] * queue.count
        assert [job.args for job in queue.get_jobs()] == [[0]] * queue.count


# --- (b) the worker ---------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(fuzz_flows(), st.integers(1, 4))
def test_sweep_survives_any_entry_and_parks_on_poison(flow: FuzzFlow, batch_size: int) -> None:
    note(f"fuzzed entry ({flow.how}) at position {flow.position}: {flow.entry[:300]!r}")
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    try:
        store = InMemoryEventStore()
        scripts = Scripts.register(redis)
        sweeper = Sweeper(
            redis,
            store,
            scripts,
            WorkerSettings(batch_size=batch_size, lease_ttl_ms=10_000),
            lambda job_id, shard: None,
        )
        check_sweep(flow, redis, scripts, sweeper, store.list, KEYS)
    finally:
        redis.close()


# --- (c) the codec's fast path agrees with its reference ----------------------------------


@FUZZ_SETTINGS
@given(fuzz_flows(max_events=1))
def test_the_fast_decoder_accepts_only_what_the_reference_accepts_and_gives_the_same(
    flow: FuzzFlow,
) -> None:
    """decode_envelope runs msgspec first and the plain-Python reference when it refuses:
    whatever the fast path accepts, the reference must accept too, with the same result."""
    try:
        fast = codec._fast_envelope(flow.entry)
    except Exception as exc:  # refused: the reference alone decides
        note(f"fast path refused: {exc!r}")
        return
    try:
        reference = reference_decoder.reference_envelope(flow.entry)
    except InvalidValue as exc:
        raise AssertionError(f"the fast path accepted what the reference refuses: {exc}") from exc
    assert fast == reference
    assert [repr(b) for b in fast[1].values()] == [repr(b) for b in reference[1].values()]
    assert stored_form(fast[0].kind) == stored_form(reference[0].kind)
    assert fast[0].ts.tzinfo is UTC and reference[0].ts.tzinfo is UTC
