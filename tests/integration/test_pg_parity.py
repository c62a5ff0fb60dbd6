"""Parity: what PostgreSQL gives back replays exactly like what the in-memory store holds.

The engine runs the example pipeline once per seed on each store with the same stepping
clock; the event lists, the replayed FlowInstance, the fingerprints and the artifact bodies
must be equal. Then generated event sequences, and JSON values chosen for their edge cases,
must come back from PostgreSQL identical, types included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings

from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.errors import SeqConflict
from chem_persistence.domain.events import (
    Artifact,
    CoreEngineError,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    InvalidTransition,
    MessageError,
    PropertyPreferenceAssigned,
    RetryNotAllowed,
    StepFailed,
    StepFinished,
    StepSignal,
    StepStarted,
    UnitError,
)
from chem_persistence.domain.examples import example_flow
from chem_persistence.domain.json_values import JsonValue
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.domain.store import InMemoryEventStore
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.repository import PgFlowRepository
from chem_persistence.eventlog.store import PgEventStore
from tests.strategies import flow_events, same_json

SEEDS = range(60)
T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
PLACEHOLDER_FLOW = UUID(int=0)
FP = "e" * 64


def stepping_clock(start: datetime, step: timedelta) -> Callable[[], datetime]:
    """A deterministic clock: start, start + step, start + 2*step, ..."""
    ticks: Iterator[int] = iter(range(10**9))
    return lambda: start + step * next(ticks)


@pytest.fixture
def pg_store(pool: Pool) -> PgEventStore:
    return PgEventStore(pool)


def fingerprints(events: list[FlowEvent]) -> list[str]:
    return [
        e.kind.fingerprint if isinstance(e.kind, StepFinished) else e.kind.flow_fingerprint
        for e in events
        if isinstance(e.kind, StepFinished | FlowCompleted)
    ]


# --- the engine on both stores ----------------------------------------------------------------


def test_engine_runs_replay_identically_from_postgres(pg_store: PgEventStore) -> None:
    repository = PgFlowRepository(pg_store)
    seen_failed = seen_completed = seen_preference = False
    for seed in SEEDS:
        definition = example_flow(seed)
        flow = uuid4()
        # a microsecond-and-a-bit step: timestamps with every microsecond digit in use
        memory = InMemoryEventStore()
        FlowEngine(memory, clock=stepping_clock(T0, timedelta(microseconds=1001))).run(
            flow, definition
        )
        FlowEngine(pg_store, clock=stepping_clock(T0, timedelta(microseconds=1001))).run(
            flow, definition
        )
        expected = memory.list(flow)
        got = pg_store.list(flow)

        assert got == expected, f"seed {seed}"
        assert [(e.event_type, e.seq, e.ts) for e in got] == [
            (e.event_type, e.seq, e.ts) for e in expected
        ]
        assert [e.seq for e in got] == list(range(len(expected)))
        assert all(
            same_json(encode_kind(a.kind), encode_kind(b.kind))
            for a, b in zip(got, expected, strict=True)
        )
        assert fingerprints(got) == fingerprints(expected)
        assert fingerprints(got), f"seed {seed}: no StepFinished at all"

        replayed = repository.load(flow, definition)
        assert replayed == InMemoryFlowRepository.load(flow, expected, definition)
        assert replayed.completed == any(isinstance(e.kind, FlowCompleted) for e in expected)

        for event in got:  # every artifact body stored with its producer, as memory holds it
            if isinstance(event.kind, StepFinished):
                for output in event.kind.outputs:
                    body, row = memory.artifact(output), pg_store.artifact(output)
                    assert body is not None and row is not None
                    assert (row.kind, row.metadata) == (body.kind, body.metadata)
                    assert same_json(row.payload, body.payload)

        seen_failed |= replayed.failed
        seen_completed |= replayed.completed
        seen_preference |= any(isinstance(e.kind, PropertyPreferenceAssigned) for e in got)
    # the seeds cover every path of the example pipeline
    assert seen_failed and seen_completed and seen_preference


# --- generated event sequences ----------------------------------------------------------------


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=flow_events(PLACEHOLDER_FLOW, min_size=1, max_size=12, json_leaves=12))
def test_generated_sequences_come_back_identical(
    pg_store: PgEventStore, events: list[FlowEvent]
) -> None:
    flow = uuid4()  # event_log is append-only: every example on a flow of its own
    sent = [replace(e, flow_id=flow) for e in events]
    returned = pg_store.append_batch(flow, sent)
    listed = pg_store.list(flow)
    memory = InMemoryEventStore()
    memory.append_batch(flow, sent)

    assert returned == sent
    assert listed == sent
    assert listed == memory.list(flow)
    for got, want in zip(listed, sent, strict=True):
        assert same_json(encode_kind(got.kind), encode_kind(want.kind)), (got.kind, want.kind)
        assert got.ts == want.ts and got.ts.utcoffset() == timedelta(0)


# --- JSON fidelity ----------------------------------------------------------------------------

UNICODE_TEXTS = [
    "🧪⚗️🔬",  # emoji, including a variation selector
    "👩‍🔬",  # a ZWJ sequence
    "苯甲酸 ベンゼン 벤젠",  # CJK
    "מולקולה جزيء",  # right-to-left scripts
    "é and é",  # precomposed and combining
    "a\u0301\u0323\u0302",  # stacked combining marks
    "\u200f\u202e reversed \u202c",  # bidi control characters
    'tab\tnewline\nquote"backslash\\',
    "\U0010fffd",  # the last private-use plane
    "",
]

JSON_CASES: list[JsonValue] = [
    0,
    -1,
    1,
    2**63,
    -(2**63),
    2**63 - 1,
    10**30,
    -(10**30),
    0.0,
    0.1,
    -0.1,
    2.0,
    1e16,
    1e300,
    -1e300,
    5e-324,
    1.5e-10,
    1.7976931348623157e308,
    123456789.123456789,
    True,
    False,
    None,
    [],
    {},
    [[]],
    {"": {}},
    [None, True, 0, 0.0, "", [], {}],
    {"int": 1, "float": 1.0, "bool": True, "null": None, "text": "1"},
    *UNICODE_TEXTS,
    {text: text for text in UNICODE_TEXTS},
    {"deep": [{"l1": [{"l2": [{"l3": [{"l4": [{"l5": [1, 1.0, "1", [2**63]]}]}]}]}]}]},
]


def _nest(depth: int) -> JsonValue:
    value: JsonValue = {"leaf": [1.5, -2, "end"]}
    for i in range(depth):
        value = {f"k{i}": [value]} if i % 2 else [value, i]
    return value


JSON_CASES.append(_nest(120))


@pytest.mark.parametrize("value", JSON_CASES, ids=lambda v: repr(v)[:40])
def test_json_values_come_back_with_identical_types(
    pg_store: PgEventStore, value: JsonValue
) -> None:
    flow = uuid4()
    signal = StepSignal(0, "acquire", "DATA", value)
    preference = PropertyPreferenceAssigned("logp", "minvar", FP, value)
    # The flow id makes the artifact's hash unique to this test: first producer wins, and other
    # tests sharing the database may already hold an artifact whose payload is just `value`.
    body = Artifact("json_case", [str(flow), value], {"case": value})
    finished = StepFinished(0, "acquire", (body.hash,), FP)
    kinds: tuple[FlowEventKind, ...] = (signal, preference, finished)
    sent = [FlowEvent(i, flow, k, T0) for i, k in enumerate(kinds)]
    pg_store.append_batch(flow, sent, {body.hash: body})

    got = pg_store.list(flow)
    assert got == sent
    assert isinstance(got[0].kind, StepSignal)
    assert isinstance(got[1].kind, PropertyPreferenceAssigned)
    assert same_json(got[0].kind.data, value), got[0].kind.data
    assert same_json(got[1].kind.rationale, value), got[1].kind.rationale
    row = pg_store.artifact(body.hash)
    assert row is not None
    assert same_json(row.payload, [str(flow), value]), row.payload
    assert same_json(row.metadata, {"case": value}), row.metadata


def test_negative_zero_comes_back_as_positive_zero(pg_store: PgEventStore) -> None:
    """PostgreSQL numeric has no negative zero: -0.0 is stored as 0 and read back as 0.0.

    The value stays a float and compares equal, but its sign is lost (so its canonical JSON,
    and any hash over it, differ). tests.strategies.json_floats leaves -0.0 out for this reason.
    """
    flow = uuid4()
    value: JsonValue = [-0.0, {"z": -0.0}]
    pg_store.append(flow, StepSignal(0, "s", "ZERO", value), T0)
    data = pg_store.list(flow)[0].kind
    assert isinstance(data, StepSignal)
    assert data.data == value  # equal under == ...
    assert same_json(data.data, [0.0, {"z": 0.0}])  # ... but positive zero, still a float
    assert not same_json(data.data, value)


# --- timestamps -------------------------------------------------------------------------------


def test_timestamps_keep_microseconds_and_come_back_in_utc(pg_store: PgEventStore) -> None:
    flow = uuid4()
    stamps = [
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 3, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2024, 3, 1, 5, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1999, 12, 31, 19, 0, 0, 654321, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2200, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
    ]
    sent = [FlowEvent(i, flow, StepStarted(i, "s"), t) for i, t in enumerate(stamps)]
    pg_store.append_batch(flow, sent)
    got = pg_store.list(flow)
    assert [e.ts for e in got] == stamps
    assert all(e.ts.utcoffset() == timedelta(0) for e in got)
    assert [e.ts.microsecond for e in got] == [t.astimezone(UTC).microsecond for t in stamps]
    assert [e.ts.isoformat() for e in got] == [t.astimezone(UTC).isoformat() for t in stamps]
    # one microsecond off is a different event: nothing is rounded
    with pytest.raises(SeqConflict, match="position 1"):
        pg_store.append_batch(flow, [replace(sent[1], ts=stamps[1] + timedelta(microseconds=1))])


def test_a_step_failed_error_of_every_shape_round_trips(pg_store: PgEventStore) -> None:
    flow = uuid4()
    errors: list[CoreEngineError] = [
        UnitError("MissingInputs"),
        MessageError("PolicyViolation", "poids > 500 g/mol 🧪"),
        InvalidTransition("Running", "Pending"),
        RetryNotAllowed("acquire", "déjà fait"),
    ]
    sent = [FlowEvent(i, flow, StepFailed(i, "s", err, FP), T0) for i, err in enumerate(errors)]
    pg_store.append_batch(flow, sent)
    assert pg_store.list(flow) == sent
