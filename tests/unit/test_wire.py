"""The wire format: the producer refuses every bad event, by name, before anything reaches Redis.

Runs on fakeredis (with Lua), so the real producer code path — validation, the emit script and
the rq enqueue — is exercised; ``DBSIZE == 0`` proves a refused event left no trace at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chem_persistence.domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
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
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.wire import (
    ENVELOPE_VERSION,
    InvalidEvent,
    decode_envelope,
    encode_envelope,
)
from tests.strategies import artifacts as artifact_bodies
from tests.strategies import flow_event, forced

F1 = UUID("00000000-0000-4000-8000-0000000000a1")
WIRE_KEYS = Keys("wire").for_flow(str(F1))
F2 = UUID("00000000-0000-4000-8000-0000000000a2")
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
H = "ab" * 32  # a well-formed hash
ART = Artifact("molecule_batch", {"molecules": [{"smiles": "CCO", "name": "éthanol"}]})
ART2 = Artifact("report", {"title": "rapport — résumé"}, {"format": "json", "n": 1.5})


def event(kind: FlowEventKind, seq: int = 0, flow: object = F1, ts: object = T0) -> FlowEvent:
    """A FlowEvent with any field values, including ones its type annotations forbid."""
    return FlowEvent(seq, flow, kind, ts)  # type: ignore[arg-type]


def finished(*outputs: str) -> StepFinished:
    return StepFinished(1, "properties", tuple(outputs), H)


def signal(data: object) -> StepSignal:
    """A signal whose data was forced past the constructor's check."""
    return forced(StepSignal(0, "acquire", "ACQUIRED", None), data=data)


MUTATED: dict[str, object] = {"ok": 1}  # checked at construction, then changed in place


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


def make_producer(redis: fakeredis.FakeRedis, max_envelope_bytes: int = 1024 * 1024) -> Producer:
    settings = QueueSettings(
        queue_name="wire-q", key_prefix="wire", max_envelope_bytes=max_envelope_bytes
    )
    return Producer(redis, settings)


# --- every bad input is refused, by name, and nothing reaches Redis ------------------------

NAN = float("nan")
_MUTATED_SIGNAL = StepSignal(0, "acquire", "ACQUIRED", MUTATED)
MUTATED["later"] = NAN
BAD_EVENTS: list[tuple[str, FlowEvent, tuple[Artifact, ...], str, object]] = [
    # (id, event, artifacts, the field InvalidEvent must name, the value it must carry)
    ("flow-id-str", event(StepStarted(0, "a"), flow=str(F1)), (), "flow_id", str(F1)),
    ("flow-id-int", event(StepStarted(0, "a"), flow=42), (), "flow_id", 42),
    ("seq-negative", event(StepStarted(0, "a"), seq=-1), (), "seq", -1),
    ("seq-bool", event(StepStarted(0, "a"), seq=True), (), "seq", True),
    ("seq-str", event(StepStarted(0, "a"), seq="0"), (), "seq", "0"),  # type: ignore[arg-type]
    ("ts-naive", event(StepStarted(0, "a"), ts=datetime(2024, 5, 1)), (), "ts", None),
    ("ts-str", event(StepStarted(0, "a"), ts="2024-05-01T12:00:00Z"), (), "ts", None),
    ("kind-unknown", event(object()), (), "kind", None),  # type: ignore[arg-type]
    (
        "kind-step-index-str",
        event(forced(StepStarted(0, "acquire"), step_index="0")),
        (),
        "kind.StepStarted.step_index",
        "0",
    ),
    (
        "kind-step-id-int",
        event(forced(StepStarted(0, "acquire"), step_id=7)),
        (),
        "kind.StepStarted.step_id",
        7,
    ),
    (
        "kind-step-count-float",
        event(forced(FlowInitialized(H, 2), step_count=2.0)),
        (),
        "kind.FlowInitialized.step_count",
        2.0,
    ),
    (
        "output-uppercase",
        event(finished("AB" * 32)),
        (),
        "kind.StepFinished.outputs[0]",
        "AB" * 32,
    ),
    ("output-63-chars", event(finished(H, "a" * 63)), (), "kind.StepFinished.outputs[1]", "a" * 63),
    ("artifacts-on-started", event(StepStarted(0, "a")), (ART,), "artifacts", 1),
    ("artifact-not-an-output", event(finished(H)), (ART,), "artifacts[0].hash", ART.hash),
    ("json-nan", event(signal({"x": NAN})), (), "kind.StepSignal.data.x", NAN),
    (
        "json-mutated-after-construction",
        event(_MUTATED_SIGNAL),
        (),
        "kind.StepSignal.data.later",
        NAN,
    ),
    ("json-infinity", event(signal([1, math.inf])), (), "kind.StepSignal.data[1]", math.inf),
    ("json-nul", event(signal("a\x00b")), (), "kind.StepSignal.data", "a\x00b"),
    (
        "json-nul-in-id",
        event(forced(StepStarted(0, "ac"), step_id="ac\x00")),
        (),
        "kind.StepStarted.step_id",
        "ac\x00",
    ),
    ("json-lone-surrogate", event(signal({"k": "\ud800"})), (), "kind.StepSignal.data.k", "\ud800"),
    ("json-int-key", event(signal({1: "one"})), (), "kind.StepSignal.data", 1),
    ("json-set", event(signal({"s": {1, 2}})), (), "kind.StepSignal.data.s", {1, 2}),
    (
        "json-set-in-rationale",
        event(forced(PropertyPreferenceAssigned("weight", "minvar", H, None), rationale={1, 2})),
        (),
        "kind.PropertyPreferenceAssigned.rationale",
        {1, 2},
    ),
    (
        "artifact-payload-nan",
        event(finished(ART.hash)),
        (Artifact("molecule_batch", {"w": NAN}),),
        "artifacts[0].payload.w",
        NAN,
    ),
    (
        "artifact-metadata-nul",
        event(finished(ART.hash)),
        (Artifact(ART.kind, ART.payload, {"note": "\x00"}),),
        "artifacts[0].metadata.note",
        "\x00",
    ),
]


def _same_value(a: object, b: object) -> bool:
    return repr(a) == repr(b)  # NaN != NaN, but its repr is the same


@pytest.mark.parametrize(
    ("bad", "artifacts", "field", "value"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_EVENTS],
)
@pytest.mark.parametrize("how", ["emit", "emit_many"])
def test_bad_event_is_refused_by_name_and_nothing_reaches_redis(
    redis: fakeredis.FakeRedis,
    bad: FlowEvent,
    artifacts: tuple[Artifact, ...],
    field: str,
    value: object,
    how: str,
) -> None:
    producer = make_producer(redis)
    with pytest.raises(InvalidEvent) as caught:
        if how == "emit":
            producer.emit(bad, artifacts)
        else:
            producer.emit_many([(bad, artifacts)])
    error = caught.value
    assert error.field == field
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{field}: ")
    if value is not None:
        assert _same_value(error.value, value)
        assert repr(value)[:40] in str(error)
    else:
        assert _same_value(error.value, getattr(bad, field))
    assert str(error).count("(got ") == 1, str(error)
    assert redis.dbsize() == 0


def test_a_good_event_does_reach_redis(redis: fakeredis.FakeRedis) -> None:
    """The control for the test above: the same producer does write a valid event."""
    producer = make_producer(redis)
    producer.emit(event(finished(ART.hash, ART2.hash)), [ART, ART2])
    assert redis.llen(WIRE_KEYS.queue(str(F1))) == 1
    assert producer.queue.count == 1
    assert redis.dbsize() > 0


def test_envelope_size_limit(redis: fakeredis.FakeRedis) -> None:
    big = event(signal({"blob": "x" * 2000}))
    size = len(encode_envelope(big).encode("utf-8"))
    with pytest.raises(InvalidEvent) as caught:
        make_producer(redis, max_envelope_bytes=size - 1).emit(big)
    assert caught.value.field == "envelope"
    assert f"{size} bytes" in str(caught.value)
    assert f"limit of {size - 1}" in str(caught.value)
    assert redis.dbsize() == 0

    make_producer(redis, max_envelope_bytes=size).emit(big)  # exactly at the limit: accepted
    assert redis.llen(WIRE_KEYS.queue(str(F1))) == 1


def test_size_limit_counts_utf8_bytes_not_characters(redis: fakeredis.FakeRedis) -> None:
    wide = event(signal("苯" * 400))  # 3 bytes per character
    text = encode_envelope(wide)
    assert len(text.encode("utf-8")) > len(text) + 700
    with pytest.raises(InvalidEvent, match="envelope"):
        make_producer(redis, max_envelope_bytes=len(text) + 10).emit(wide)
    assert redis.dbsize() == 0


@pytest.mark.parametrize("bad_index", [0, 3, 5])
def test_emit_many_is_all_or_nothing(redis: fakeredis.FakeRedis, bad_index: int) -> None:
    producer = make_producer(redis)
    items: list[FlowEvent | tuple[FlowEvent, tuple[Artifact, ...]]] = [
        event(StepStarted(i, "s"), seq=i, flow=F1 if i % 2 else F2) for i in range(6)
    ]
    items[bad_index] = event(signal({"x": NAN}), seq=bad_index)
    with pytest.raises(InvalidEvent):
        producer.emit_many(items)
    assert redis.dbsize() == 0


def test_emit_many_accepts_events_and_event_artifact_pairs(redis: fakeredis.FakeRedis) -> None:
    producer = make_producer(redis)
    first = event(StepStarted(1, "properties"))
    second = event(finished(ART.hash), seq=1)
    assert producer.emit_many([first, (second, (ART,))]) == 2
    entries = redis.lrange(WIRE_KEYS.queue(str(F1)), 0, -1)
    assert [decode_envelope(e) for e in entries] == [(first, {}), (second, {ART.hash: ART})]


# --- encode → decode ---------------------------------------------------------------------------

ALL_KINDS: list[FlowEventKind] = [
    FlowInitialized(H, 4),
    StepStarted(0, "acquire"),
    StepSignal(0, "acquire", "ACQUIRED", {"count": 3, "ratio": 0.5, "big": 1e16, "n": None}),
    PropertyPreferenceAssigned("weight", "minvar", H, {"why": "lowest variance", "score": 0.75}),
    StepFinished(0, "acquire", (ART.hash, ART2.hash), H),
    StepFailed(1, "properties", UnitError("MissingInputs"), H),
    StepFailed(1, "properties", MessageError("PolicyViolation", "poids > 1"), H),
    StepFailed(1, "properties", InvalidTransition("Pending", "FinishedOk"), H),
    StepFailed(1, "properties", RetryNotAllowed("properties", "budget spent"), H),
    StepSignal(2, "β-step", "步骤", ["ацетон", True, -0.25, [], {}]),
    FlowCompleted(H),
]


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: type(k).__name__)
def test_encode_decode_round_trip(kind: FlowEventKind) -> None:
    original = FlowEvent(7, F1, kind, T0 + timedelta(microseconds=1))
    bodies = (ART, ART2) if isinstance(kind, StepFinished) else ()
    text = encode_envelope(original, bodies)
    data = json.loads(text)
    assert data["v"] == ENVELOPE_VERSION
    assert (data["flow_id"], data["seq"], data["event_type"]) == (str(F1), 7, kind.event_type)
    assert ("artifacts" in data) == bool(bodies)
    for raw in (text, text.encode("utf-8")):  # Redis gives bytes back
        decoded, decoded_bodies = decode_envelope(raw)
        assert decoded == original
        assert decoded.ts == original.ts and decoded.ts.utcoffset() is not None
        assert decoded_bodies == {a.hash: a for a in bodies}


def test_round_trip_keeps_a_non_utc_offset_instant() -> None:
    ts = datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    decoded, _ = decode_envelope(encode_envelope(event(StepStarted(0, "a"), ts=ts)))
    assert decoded.ts == ts


@settings(max_examples=100, deadline=None)
@given(flow_event(), st.lists(artifact_bodies(), max_size=3))
def test_any_legal_event_round_trips(original: FlowEvent, bodies: list[Artifact]) -> None:
    if isinstance(original.kind, StepFinished):
        kind = StepFinished(
            original.kind.step_index,
            original.kind.step_id,
            (*original.kind.outputs, *(b.hash for b in bodies)),
            original.kind.fingerprint,
        )
        original = FlowEvent(original.seq, original.flow_id, kind, original.ts)
    else:
        bodies = []
    decoded, decoded_bodies = decode_envelope(encode_envelope(original, bodies))
    assert decoded == original
    assert decoded_bodies == {b.hash: b for b in bodies}


# --- decode_envelope refuses garbage ----------------------------------------------------------


def _envelope(**changes: object) -> str:
    data = json.loads(encode_envelope(event(StepStarted(0, "acquire"))))
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


_DROP = object()
GARBAGE: list[tuple[str, Callable[[], bytes | str], str]] = [
    ("not-json", lambda: "{not json", "envelope"),
    ("not-utf8", lambda: b"\xff\xfe\xfa garbage \x00", "envelope"),
    ("empty", lambda: b"", "envelope"),
    ("json-array", lambda: "[1, 2]", "envelope"),
    ("json-string", lambda: '"StepStarted"', "envelope"),
    ("version-2", lambda: _envelope(v=2), "v"),
    ("version-missing", lambda: _envelope(v=_DROP), "v"),
    ("version-str", lambda: _envelope(v="1"), "v"),
    ("flow-id-missing", lambda: _envelope(flow_id=_DROP), "flow_id"),
    ("flow-id-bad-uuid", lambda: _envelope(flow_id="not-a-uuid"), "flow_id"),
    ("flow-id-int", lambda: _envelope(flow_id=12), "flow_id"),
    ("seq-missing", lambda: _envelope(seq=_DROP), "seq"),
    ("seq-negative", lambda: _envelope(seq=-3), "seq"),
    ("seq-bool", lambda: _envelope(seq=True), "seq"),
    ("seq-float", lambda: _envelope(seq=1.0), "seq"),
    ("ts-missing", lambda: _envelope(ts=_DROP), "ts"),
    ("ts-not-a-time", lambda: _envelope(ts="yesterday"), "ts"),
    ("ts-naive", lambda: _envelope(ts="2024-05-01T12:00:00"), "ts"),
    ("payload-missing", lambda: _envelope(payload=_DROP), "payload"),
    ("payload-unknown-kind", lambda: _envelope(payload={"StepExploded": {}}), "payload"),
    (
        "payload-bad-field",
        lambda: _envelope(payload={"StepStarted": {"step_index": "0", "step_id": "a"}}),
        "payload.StepStarted.step_index",
    ),
    ("event-type-mismatch", lambda: _envelope(event_type="stepfinished"), "event_type"),
    ("event-type-missing", lambda: _envelope(event_type=_DROP), "event_type"),
    ("artifact-not-object", lambda: _envelope(artifacts=["x"]), "artifacts[0]"),
    ("artifact-no-kind", lambda: _envelope(artifacts=[{"hash": H}]), "artifacts[0]"),
]


@pytest.mark.parametrize(("make", "field"), [pytest.param(c[1], c[2], id=c[0]) for c in GARBAGE])
def test_decode_envelope_refuses_garbage(make: Callable[[], bytes | str], field: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_envelope(make())
    assert caught.value.field.startswith(field), str(caught.value)
    assert str(caught.value).startswith(f"{caught.value.field}: ")


def test_decode_envelope_accepts_the_untouched_control() -> None:
    decoded, bodies = decode_envelope(_envelope())
    assert decoded == event(StepStarted(0, "acquire"))
    assert bodies == {}
