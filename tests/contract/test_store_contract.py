"""The EventStore contract: one suite, run against InMemoryEventStore and PgEventStore.

InMemoryEventStore is the reference semantics (domain/store.py); PgEventStore must behave the
same for every call here. Each test works on fresh uuid4 flows, so the PostgreSQL variant can
share the session's database (event_log is append-only: nothing is ever cleaned up).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol
from uuid import UUID, uuid4

import pytest

from chem_persistence.domain.equality import stored_form
from chem_persistence.domain.errors import ArtifactHashMismatch, SeqConflict, SeqGap
from chem_persistence.domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.store import InMemoryEventStore
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.wire import decode_envelope, encode_envelope

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FP = "f" * 64
ONE_MICROSECOND = timedelta(microseconds=1)


class ContractStore(Protocol):
    """What both stores offer and this suite exercises."""

    def append(
        self,
        flow_id: UUID,
        kind: FlowEventKind,
        ts: datetime | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> FlowEvent: ...

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> builtins.list[FlowEvent]: ...

    def list(self, flow_id: UUID) -> builtins.list[FlowEvent]: ...

    def artifact(self, artifact_hash: str) -> Any: ...


STORE_KINDS = ("memory", "postgres")


def make_store(kind: str, request: pytest.FixtureRequest) -> ContractStore:
    if kind == "memory":
        return InMemoryEventStore()
    pool: Pool = request.getfixturevalue("pool")  # only the PostgreSQL variant needs a server
    return PgEventStore(pool)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> ContractStore:
    return make_store(request.param, request)


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def started(i: int) -> StepStarted:
    return StepStarted(i, f"step-{i}")


def ev(flow: UUID, seq: int, kind: FlowEventKind | None = None) -> FlowEvent:
    return FlowEvent(seq, flow, kind if kind is not None else started(seq), ts(seq))


def batch(flow: UUID, start: int, stop: int) -> list[FlowEvent]:
    return [ev(flow, i) for i in range(start, stop)]


# --- positions --------------------------------------------------------------------------------


def test_append_assigns_positions_from_zero_per_flow_independently(store: ContractStore) -> None:
    a, b = uuid4(), uuid4()
    a0 = store.append(a, started(0), ts(0))
    b0 = store.append(b, started(0), ts(1))
    a1 = store.append(a, started(1), ts(2))
    b1 = store.append(b, started(1), ts(3))
    b2 = store.append(b, started(2), ts(4))
    assert [a0.seq, a1.seq] == [0, 1]
    assert [b0.seq, b1.seq, b2.seq] == [0, 1, 2]
    assert store.list(a) == [FlowEvent(0, a, started(0), ts(0)), FlowEvent(1, a, started(1), ts(2))]
    assert store.list(b) == [b0, b1, b2]
    assert all(e.flow_id == b for e in store.list(b))


def test_append_returns_the_stored_event(store: ContractStore) -> None:
    flow = uuid4()
    kind = StepSignal(0, "acquire", "ACQUIRED", {"count": 3, "ok": True})
    event = store.append(flow, kind, ts(7))
    assert event == FlowEvent(0, flow, kind, ts(7))
    assert store.list(flow) == [event]


def test_append_without_ts_stamps_an_aware_utc_now(store: ContractStore) -> None:
    flow = uuid4()
    before = datetime.now(UTC)
    event = store.append(flow, started(0))
    after = datetime.now(UTC)
    assert event.ts.utcoffset() == timedelta(0)
    assert before <= event.ts <= after
    assert store.list(flow)[0].ts == event.ts


def test_an_unknown_flow_lists_nothing(store: ContractStore) -> None:
    assert store.list(uuid4()) == []


def test_list_returns_position_order(store: ContractStore) -> None:
    flow, other = uuid4(), uuid4()
    # Several batches interleaved with another flow's writes, timestamps deliberately not
    # increasing: the order is the position, nothing else.
    kinds: list[FlowEventKind] = [
        FlowInitialized("d" * 64, 3),
        started(0),
        StepFinished(0, "step-0", (), FP),
        started(1),
        FlowCompleted(FP),
    ]
    events = [FlowEvent(i, flow, k, ts(100 - i)) for i, k in enumerate(kinds)]
    store.append_batch(flow, events[:2])
    store.append(other, started(0), ts(0))
    store.append_batch(flow, events[2:4])
    store.append(other, started(1), ts(1))
    store.append_batch(flow, events[4:])
    listed = store.list(flow)
    assert listed == events
    assert [e.seq for e in listed] == [0, 1, 2, 3, 4]


# --- idempotency ------------------------------------------------------------------------------


def test_identical_reappend_returns_the_stored_events_and_stores_nothing(
    store: ContractStore,
) -> None:
    flow = uuid4()
    events = batch(flow, 0, 5)
    first = store.append_batch(flow, events)
    again = store.append_batch(flow, events)
    middle = store.append_batch(flow, events[1:4])
    assert first == events
    assert again == events
    assert middle == events[1:4]
    assert store.list(flow) == events


def test_partial_overlap_batch_stores_only_the_new_tail(store: ContractStore) -> None:
    flow = uuid4()
    store.append_batch(flow, batch(flow, 0, 5))
    returned = store.append_batch(flow, batch(flow, 3, 8))
    assert returned == batch(flow, 3, 8)
    assert store.list(flow) == batch(flow, 0, 8)


def test_empty_batch_is_a_no_op(store: ContractStore) -> None:
    flow = uuid4()
    assert store.append_batch(flow, []) == []
    assert store.list(flow) == []


# --- conflicts and gaps -----------------------------------------------------------------------


def test_a_different_kind_at_an_occupied_position_is_a_conflict(store: ContractStore) -> None:
    flow = uuid4()
    store.append_batch(flow, batch(flow, 0, 3))
    different = FlowEvent(1, flow, FlowCompleted(FP), ts(1))
    with pytest.raises(SeqConflict) as info:
        store.append_batch(flow, [different])
    assert (info.value.flow_id, info.value.seq) == (flow, 1)
    assert store.list(flow) == batch(flow, 0, 3)


def test_the_same_kind_with_another_ts_is_a_conflict(store: ContractStore) -> None:
    flow = uuid4()
    store.append_batch(flow, batch(flow, 0, 3))
    shifted = FlowEvent(2, flow, started(2), ts(2) + ONE_MICROSECOND)
    with pytest.raises(SeqConflict) as info:
        store.append_batch(flow, [shifted])
    assert info.value.seq == 2
    assert store.list(flow) == batch(flow, 0, 3)


def test_a_first_new_event_past_the_next_position_is_a_gap(store: ContractStore) -> None:
    flow = uuid4()
    with pytest.raises(SeqGap) as info:
        store.append_batch(flow, batch(flow, 1, 3))
    assert (info.value.seq, info.value.expected) == (1, 0)
    assert store.list(flow) == []

    store.append_batch(flow, batch(flow, 0, 3))
    with pytest.raises(SeqGap) as info:
        store.append_batch(flow, batch(flow, 5, 7))
    assert (info.value.flow_id, info.value.seq, info.value.expected) == (flow, 5, 3)
    assert store.list(flow) == batch(flow, 0, 3)


def test_a_batch_with_a_hole_inside_is_a_gap(store: ContractStore) -> None:
    flow = uuid4()
    with pytest.raises(SeqGap):
        store.append_batch(flow, [ev(flow, 0), ev(flow, 2)])
    assert store.list(flow) == []


def test_an_event_of_another_flow_in_the_batch_is_a_value_error(store: ContractStore) -> None:
    flow, foreign = uuid4(), uuid4()
    with pytest.raises(ValueError, match="flow_id"):
        store.append_batch(flow, [ev(flow, 0), ev(foreign, 1)])
    assert store.list(flow) == []
    assert store.list(foreign) == []


def test_a_failed_batch_stores_nothing(store: ContractStore) -> None:
    flow = uuid4()
    store.append_batch(flow, batch(flow, 0, 3))
    # Position 2 conflicts; 3 and 4 are new and valid: none of them may be stored.
    bad = [FlowEvent(2, flow, FlowCompleted(FP), ts(2)), ev(flow, 3), ev(flow, 4)]
    with pytest.raises(SeqConflict):
        store.append_batch(flow, bad)
    assert store.list(flow) == batch(flow, 0, 3)
    # The valid tail alone still goes in afterwards, at its own positions.
    assert store.append_batch(flow, batch(flow, 3, 5)) == batch(flow, 3, 5)
    assert store.list(flow) == batch(flow, 0, 5)


# --- artifacts --------------------------------------------------------------------------------


def test_an_artifact_body_under_a_wrong_hash_is_rejected_and_nothing_stored(
    store: ContractStore,
) -> None:
    flow = uuid4()
    body = Artifact("molecule_batch", {"molecules": ["CCO"]})
    wrong = Artifact("molecule_batch", {"molecules": ["CCN"]}).hash
    finished = FlowEvent(1, flow, StepFinished(0, "acquire", (wrong,), FP), ts(1))
    with pytest.raises(ArtifactHashMismatch) as info:
        store.append_batch(flow, [ev(flow, 0), finished], {wrong: body})
    assert (info.value.claimed, info.value.actual) == (wrong, body.hash)
    assert store.list(flow) == []
    assert store.artifact(wrong) is None
    assert store.artifact(body.hash) is None


def test_artifact_bodies_travel_with_their_step_finished(store: ContractStore) -> None:
    flow = uuid4()
    body = Artifact("property_table", {"rows": [{"id": str(flow), "w": 46.07}]}, {"u": "g/mol"})
    event = store.append(flow, StepFinished(0, "properties", (body.hash,), FP), ts(0), [body])
    assert event.kind == StepFinished(0, "properties", (body.hash,), FP)
    stored = store.artifact(body.hash)
    assert stored is not None
    assert (stored.kind, stored.payload, stored.metadata) == (
        body.kind,
        body.payload,
        body.metadata,
    )


# --- both stores side by side -----------------------------------------------------------------


def _scenario(store: ContractStore, flow: UUID) -> list[list[FlowEvent]]:
    """The same calls on any store; every call's result, then the final list."""
    first = [store.append(flow, FlowInitialized("d" * 64, 2), ts(0))]
    second = [store.append(flow, started(0), ts(1))]
    results = [
        first,
        second,
        store.append_batch(flow, [*first, *second]),  # identical re-append
        store.append_batch(
            flow,
            [
                FlowEvent(2, flow, StepSignal(0, "s", "x", [1, 1.0, True, None, "é"]), ts(2)),
                FlowEvent(3, flow, StepFinished(0, "s", ("a" * 64,), FP), ts(3)),
            ],
        ),
        [store.append(flow, FlowCompleted(FP), ts(4))],
        store.list(flow),
    ]
    return results


def test_both_stores_return_equal_events(pool: Pool) -> None:
    flow = uuid4()
    # In memory the flow id is free to reuse; in PostgreSQL it is fresh.
    memory = _scenario(InMemoryEventStore(), flow)
    postgres = _scenario(PgEventStore(pool), flow)
    assert postgres == memory
    assert [e.seq for e in postgres[-1]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_log_seq_is_the_global_position_in_postgres_and_none_in_memory(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = make_store(kind, request)
    flow = uuid4()
    returned = [store.append(flow, started(0), ts(0))]
    returned += store.append_batch(flow, batch(flow, 0, 4))  # 0 again (no-op), then 1..3 new
    returned += store.append_batch(flow, batch(flow, 4, 6))
    listed = store.list(flow)
    assert [e.seq for e in returned] == [0, 0, 1, 2, 3, 4, 5]
    if kind == "memory":
        assert all(e.log_seq is None for e in [*returned, *listed])
        return
    assert all(type(e.log_seq) is int for e in listed)
    log_seqs = [e.log_seq for e in listed if e.log_seq is not None]
    assert log_seqs == sorted(log_seqs)
    assert len(set(log_seqs)) == len(log_seqs)
    # what each call returned carries the same global seq as what list() reads back
    assert [(e.seq, e.log_seq) for e in returned] == [
        (e.seq, e.log_seq) for e in [listed[0], *listed]
    ]


# --- the idempotent compare is type-exact (canonical form, not Python ==) -------------------


def signal(data: object) -> StepSignal:
    return StepSignal(0, "acquire", "S", data)


# (stored data, re-appended data): equal under Python ==, but a different event
TYPE_CONFUSIONS = [
    pytest.param({"attempt": 1, "ok": True}, {"attempt": True, "ok": 1.0}, id="bool-int-float"),
    pytest.param([1], [True], id="int-vs-bool"),
    pytest.param([1], [1.0], id="int-vs-float"),
    pytest.param([0], [False], id="zero-vs-false"),
    pytest.param({"n": 0.0}, {"n": 0}, id="float-zero-vs-int-zero"),
    pytest.param({"big": 10**16}, {"big": 1e16}, id="big-int-vs-float"),
    pytest.param("é", "e\u0301", id="unicode-nfc-vs-nfd"),
]


@pytest.mark.parametrize(("stored", "again"), TYPE_CONFUSIONS)
def test_a_payload_equal_under_python_eq_but_of_other_types_is_a_conflict(
    store: ContractStore, stored: object, again: object
) -> None:
    flow = uuid4()
    first = ev(flow, 0, signal(stored))
    store.append_batch(flow, [first])
    with pytest.raises(SeqConflict):
        store.append_batch(flow, [ev(flow, 0, signal(again))])
    [kept] = store.list(flow)
    assert stored_form(kept.kind) == stored_form(first.kind)  # the first one, types included


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"attempt": 1, "ok": True, "ratio": 0.5}, id="mixed-types"),
        pytest.param({"avogadro": 6.02214076e23, "big": 1e16, "huge": 2**70}, id="numbers"),
        pytest.param({"name": "β-carotène", "苯": ["ацетон"]}, id="unicode"),
    ],
)
def test_an_identical_payload_is_a_no_op_re_append(store: ContractStore, data: object) -> None:
    flow = uuid4()
    store.append_batch(flow, [ev(flow, 0, signal(data))])
    assert store.append_batch(flow, [ev(flow, 0, signal(data))]) == store.list(flow)
    assert len(store.list(flow)) == 1


def test_key_order_does_not_make_another_event(store: ContractStore) -> None:
    """JSONB keeps no key order: {"a", "b"} and {"b", "a"} are one payload."""
    flow = uuid4()
    store.append_batch(flow, [ev(flow, 0, signal({"a": 1, "b": {"c": 2, "d": 3}}))])
    again = ev(flow, 0, signal({"b": {"d": 3, "c": 2}, "a": 1}))
    assert len(store.append_batch(flow, [again])) == 1
    assert len(store.list(flow)) == 1


def test_negative_zero_is_stored_as_zero_and_re_appends_as_the_same_event(
    store: ContractStore,
) -> None:
    """PostgreSQL JSONB (numeric) has no negative zero: -0.0 is kept as 0.0. The compare
    therefore takes -0.0 and 0.0 as one value, so re-delivering an event with -0.0 is a
    no-op in both stores, never a conflict with what PostgreSQL gave back."""
    flow = uuid4()
    store.append_batch(flow, [ev(flow, 0, signal({"x": -0.0}))])
    assert len(store.append_batch(flow, [ev(flow, 0, signal({"x": -0.0}))])) == 1
    assert len(store.append_batch(flow, [ev(flow, 0, signal({"x": 0.0}))])) == 1
    with pytest.raises(SeqConflict):  # still a float: the integer 0 is another value
        store.append_batch(flow, [ev(flow, 0, signal({"x": 0}))])
    [kept] = store.list(flow)
    assert isinstance(kept.kind, StepSignal) and kept.kind.data == {"x": 0.0}


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(timedelta(hours=5, minutes=30), id="minutes"),
        pytest.param(timedelta(hours=1, seconds=30), id="seconds"),
        pytest.param(-timedelta(hours=3, seconds=7, microseconds=250), id="microseconds"),
    ],
)
def test_an_aware_time_with_any_offset_round_trips_through_the_producer_and_the_store(
    store: ContractStore, offset: timedelta
) -> None:
    """The producer writes ts in UTC: an offset PostgreSQL would refuse (seconds,
    microseconds) never reaches it, and the instant comes back exactly."""
    flow = uuid4()
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(offset))
    entry = encode_envelope(FlowEvent(0, flow, started(0), when))
    event, _ = decode_envelope(entry)
    assert event.ts == when and event.ts.tzinfo is UTC
    store.append_batch(flow, [event])
    [back] = store.list(flow)
    assert back.ts == when
    assert back.ts.utcoffset() == timedelta(0)


def test_numbers_come_back_exactly_through_the_envelope_and_the_store(
    store: ContractStore,
) -> None:
    """Floats with an exponent, 1e16 as a float, integers beyond 64 bits, Avogadro's number:
    the same values and the same types, through the envelope (Redis) and JSONB."""
    numbers: list[object] = [
        1e16, 6.02214076e23, 1.5e300, -2.5e200, 5e-324, 1e-7, 0.1,
        2**64, 2**70, -(2**80), 10**30, 9007199254740993, 0, -1, 1.0,
    ]  # fmt: skip
    flow = uuid4()
    sent = FlowEvent(0, flow, signal({"n": numbers}), T0)
    event, _ = decode_envelope(encode_envelope(sent))
    store.append_batch(flow, [event])
    [back] = store.list(flow)
    assert isinstance(back.kind, StepSignal)
    got = back.kind.data["n"]
    assert [type(x) for x in got] == [type(x) for x in numbers]
    assert got == numbers
    assert stored_form(back.kind) == stored_form(sent.kind)
