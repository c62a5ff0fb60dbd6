"""Hypothesis strategies for fuzzing the two edges of the queue.

- What the producer is handed: valid events (with artifact bodies), and events broken in one
  place — a field of the wrong type, a negative or non-integer position, a naive or
  out-of-range time, JSON PostgreSQL cannot store (NaN, infinities, U+0000, lone surrogates,
  non-JSON types, non-string keys, nesting too deep), bad artifact hashes and bodies, an
  oversized envelope. Every one of those must be refused with InvalidEvent.
- What a worker may find in Redis: random bytes, random JSON, truncated or non-UTF-8
  envelopes, pathological nesting, and real envelopes with one field mutated (dropped, added,
  replaced by a value of the wrong type, a bad UUID, a negative or huge position, NaN-like
  strings, a wrong version, an unknown kind, bad artifact hashes and bodies).

``expected_fate`` is the oracle of the second kind: what the reference semantics (decode, then
the in-memory store's rules) say must happen to an entry found at a given position;
``check_sweep`` queues a fuzzed flow, runs sweep cycles until a claim finds nothing and holds
the outcome to that oracle (with any store: InMemoryEventStore in the unit tests, PgEventStore
in the integration tests).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

import msgspec
from hypothesis import note
from hypothesis import strategies as st

from chem_persistence.domain.canonical import is_hash
from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.errors import StoreError
from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    InvalidTransition,
    MessageError,
    RetryNotAllowed,
    StepFinished,
    StepSignal,
    UnitError,
)
from chem_persistence.domain.json_values import MAX_DEPTH
from chem_persistence.domain.store import check_artifact_bodies
from chem_persistence.producer.dead_letter import entry_of
from chem_persistence.producer.jobs import EMIT_MAX_SWEEPS, QUEUED_SWEEP_TTL_MS
from chem_persistence.producer.keys import Keys, ShardKeys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import InvalidEvent, decode_envelope, encode_envelope
from chem_persistence.worker.sweep import CycleResult, Sweeper
from tests.strategies import (
    artifacts,
    event_kinds,
    flow_event,
    flow_ids,
    forced,
    hashes,
    json_values,
    same_json,
    texts,
    timestamps,
)

NAN = float("nan")
T = TypeVar("T")
Item = tuple[FlowEvent, tuple[Artifact, ...]]

# --- small pieces ---------------------------------------------------------------------------


def corrupt(obj: T, **changes: object) -> T:
    """A copy with fields set to values that are wrong on purpose: a kind's fields are forced
    past its constructor's checks, a dataclass's (FlowEvent, Artifact) replaced."""
    if isinstance(obj, msgspec.Struct):
        return cast(T, forced(obj, **changes))
    return cast(T, replace(cast(Any, obj), **changes))


def deep_list(depth: int) -> list[Any]:
    """``[[[...]]]`` nested ``depth`` levels (built without recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def with_nul() -> st.SearchStrategy[str]:
    return st.builds(lambda a, b: f"{a}\x00{b}", texts(max_size=4), texts(max_size=4))


def with_lone_surrogate() -> st.SearchStrategy[str]:
    return st.builds(
        lambda a, s: f"{a}{s}", texts(max_size=4), st.integers(0xD800, 0xDFFF).map(chr)
    )


def offsets() -> st.SearchStrategy[timezone]:
    """Fixed UTC offsets, whole minutes, as ``datetime.isoformat`` writes them."""
    return st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def aware_timestamps() -> st.SearchStrategy[datetime]:
    """UTC times of tests.strategies, sometimes shown in another offset (the same instant)."""
    return st.one_of(
        timestamps(), st.builds(lambda t, tz: t.astimezone(tz), timestamps(), offsets())
    )


# --- producer input: valid ------------------------------------------------------------------


@st.composite
def valid_items(draw: st.DrawFn) -> Item:
    """A legal event; a StepFinished sometimes carries the bodies of some of its outputs."""
    event = draw(flow_event())
    event = replace(event, ts=draw(aware_timestamps()))
    if not isinstance(event.kind, StepFinished) or not draw(st.booleans()):
        return event, ()
    bodies = tuple(draw(st.lists(artifacts(), min_size=1, max_size=3)))
    kind = msgspec.structs.replace(
        event.kind, outputs=(*event.kind.outputs, *(b.hash for b in bodies))
    )
    return replace(event, kind=kind), bodies


@st.composite
def finished_with_bodies(draw: st.DrawFn) -> Item:
    """A StepFinished carrying the bodies of its outputs (what artifact fuzzing needs)."""
    event = draw(flow_event())
    bodies = tuple(draw(st.lists(artifacts(), min_size=1, max_size=2)))
    kind = StepFinished(0, "acquire", tuple(b.hash for b in bodies), draw(hashes()))
    return replace(event, kind=kind), bodies


# --- producer input: invalid ----------------------------------------------------------------


def bad_ints() -> st.SearchStrategy[object]:
    """Not a non-negative integer."""
    return st.one_of(
        st.integers(max_value=-1),
        st.booleans(),
        st.floats(),
        st.text(max_size=4),
        st.none(),
        st.just([0]),
        st.just(Decimal(1)),
    )


def bad_strs() -> st.SearchStrategy[object]:
    """Not a string PostgreSQL can store."""
    return st.one_of(
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
        st.binary(max_size=6),
        st.lists(texts(max_size=3), max_size=2),
        with_nul(),
        with_lone_surrogate(),
    )


def bad_hashes() -> st.SearchStrategy[object]:
    """Not 64 lowercase hex characters."""
    return st.one_of(
        hashes().map(str.upper).filter(lambda h: h != h.lower()),
        hashes().map(lambda h: h[:63]),
        hashes().map(lambda h: h + "0"),
        hashes().map(lambda h: "g" + h[1:]),
        hashes().map(lambda h: f" {h[1:]}"),
        st.text(max_size=10),
        st.integers(),
        st.none(),
    )


def poison_leaves() -> st.SearchStrategy[object]:
    """A value that makes a JSON value unstorable wherever it sits."""
    return st.one_of(
        st.sampled_from([NAN, math.inf, -math.inf]),
        st.sampled_from([(1, 2), frozenset({1}), b"bytes", Decimal("1.5"), 1j, object()]),
        st.builds(lambda k: {k: "int key"}, st.integers()),
        with_nul(),
        with_lone_surrogate(),
        st.builds(lambda k: {f"{k}\x00": 1}, texts(max_size=3)),
        st.integers(MAX_DEPTH + 1, MAX_DEPTH + 50).map(deep_list),
    )


def bad_json() -> st.SearchStrategy[object]:
    """Valid JSON with one poison leaf somewhere in it."""
    return st.builds(
        lambda where, leaf, other: [
            leaf,
            [other, leaf],
            {"k": leaf},
            {"a": other, "b": [1, {"c": leaf}]},
        ][where],
        st.integers(0, 3),
        poison_leaves(),
        json_values(max_leaves=4),
    )


def bad_errors() -> st.SearchStrategy[object]:
    return st.one_of(
        st.none(),
        st.sampled_from(["MissingInputs", {"Internal": "x"}, 3]),
        st.builds(lambda m: corrupt(MessageError("Internal", "m"), message=m), bad_strs()),
        st.builds(lambda s: corrupt(InvalidTransition("a", "b"), from_state=s), bad_strs()),
        st.builds(lambda s: corrupt(RetryNotAllowed("a", "b"), reason=s), bad_strs()),
        st.builds(lambda v: corrupt(UnitError("MissingInputs"), variant=v), bad_strs()),
    )


def bad_outputs() -> st.SearchStrategy[object]:
    return st.one_of(
        st.builds(lambda hs, bad: (*hs, bad), st.lists(hashes(), max_size=2), bad_hashes()),
        hashes(),  # one string, not a list of them
        st.none(),
    )


INT_FIELDS = ("step_index", "step_count")
STR_FIELDS = (
    "step_id",
    "signal",
    "definition_hash",
    "fingerprint",
    "property_key",
    "policy_id",
    "params_hash",
    "flow_fingerprint",
)
JSON_FIELDS = ("data", "rationale")


@st.composite
def broken_kinds(draw: st.DrawFn) -> FlowEventKind:
    """A kind with one field of the wrong type or value, forced past its constructor."""
    kind, name, bad = draw(bad_fields())
    return corrupt(kind, **{name: bad})


@st.composite
def bad_fields(draw: st.DrawFn) -> tuple[FlowEventKind, str, object]:
    """(a legal kind, one of its fields, a value that field must refuse)."""
    kind = draw(event_kinds(json_leaves=4))
    name = draw(st.sampled_from(sorted(kind.__struct_fields__)))
    bad: object
    if name in INT_FIELDS:
        bad = draw(bad_ints())
    elif name in STR_FIELDS:
        bad = draw(bad_strs())
    elif name in JSON_FIELDS:
        bad = draw(bad_json())
    elif name == "outputs":
        bad = draw(bad_outputs())
    elif name == "error":
        bad = draw(bad_errors())
    else:  # pragma: no cover - a new field: fail loudly so this strategy gets updated
        raise AssertionError(f"no bad values for field {name!r} of {type(kind).__name__}")
    return kind, name, bad


def bad_timestamps() -> st.SearchStrategy[object]:
    return st.one_of(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1)),  # naive
        timestamps().map(datetime.isoformat),
        st.integers(),
        st.none(),
        st.just(date(2024, 5, 1)),
        # aware, but the instant is outside what a UTC datetime (and a reader) can hold
        st.builds(
            lambda h: datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=h))),
            st.integers(1, 23),
        ),
        st.builds(
            lambda h: datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-h))),
            st.integers(1, 23),
        ),
    )


@st.composite
def invalid_items(draw: st.DrawFn) -> tuple[str, Item]:
    """(what is broken, an event and artifacts the producer must refuse)."""
    event, bodies = draw(valid_items())
    what = draw(
        st.sampled_from(
            [
                "flow_id",
                "seq",
                "ts",
                "kind-type",
                "kind-field",
                "artifacts-on-other-kind",
                "artifact-not-an-output",
                "artifact-bad-body",
                "artifact-bad-kind",
                "artifact-not-an-artifact",
            ]
        )
    )
    if what == "flow_id":
        bad_flow = draw(
            st.one_of(
                flow_ids().map(str),
                flow_ids().map(lambda u: u.bytes),
                st.integers(),
                st.none(),
            )
        )
        return what, (corrupt(event, flow_id=bad_flow), bodies)
    if what == "seq":
        return what, (corrupt(event, seq=draw(bad_ints())), bodies)
    if what == "ts":
        return what, (corrupt(event, ts=draw(bad_timestamps())), bodies)
    if what == "kind-type":
        bad_kind = draw(
            st.sampled_from(
                [None, "StepStarted", 3, {"StepStarted": {"step_index": 0, "step_id": "a"}}]
            )
        )
        return what, (corrupt(event, kind=bad_kind), ())
    if what == "kind-field":
        return what, (replace(event, kind=draw(broken_kinds())), ())
    finished = StepFinished(0, "acquire", (), draw(hashes()))
    body = draw(artifacts())
    if what == "artifacts-on-other-kind":
        other = draw(event_kinds(json_leaves=4).filter(lambda k: not isinstance(k, StepFinished)))
        return what, (replace(event, kind=other), (body,))
    if what == "artifact-not-an-output":
        outputs = tuple(draw(st.lists(hashes(), max_size=2)))
        assert body.hash not in outputs
        return what, (
            replace(event, kind=msgspec.structs.replace(finished, outputs=outputs)),
            (body,),
        )
    if what == "artifact-bad-body":
        field = draw(st.sampled_from(["payload", "metadata"]))
        broken = corrupt(body, **{field: draw(bad_json())})
        outputs = () if field == "payload" else (body.hash,)  # a bad payload has no hash
        kind = msgspec.structs.replace(finished, outputs=outputs)
        return what, (replace(event, kind=kind), (broken,))
    if what == "artifact-bad-kind":
        bad_kind_name = draw(st.one_of(st.just(""), st.integers(), st.none()))
        kind = msgspec.structs.replace(finished, outputs=(body.hash,))
        return what, (replace(event, kind=kind), (corrupt(body, kind=bad_kind_name),))
    # artifact-not-an-artifact
    stranger = draw(st.sampled_from([{"hash": body.hash, "kind": "k"}, body.hash, None]))
    kind = msgspec.structs.replace(finished, outputs=(body.hash,))
    return what, (replace(event, kind=kind), (cast(Artifact, stranger),))


def oversized_items(max_bytes: int) -> st.SearchStrategy[Item]:
    """A legal event whose envelope is larger than ``max_bytes`` (UTF-8 bytes)."""
    return st.builds(
        lambda event, char: (
            replace(event, kind=StepSignal(0, "big", "BIG", char * max_bytes)),
            (),
        ),
        flow_event(),
        st.sampled_from(["x", "é", "苯", "😀"]),
    )


# --- what a worker may find in Redis ----------------------------------------------------------


@dataclass(frozen=True)
class FuzzFlow:
    """One flow's entries as queued: good envelopes, one fuzzed entry at ``position``, more
    good envelopes. ``items`` are the good events at positions 0..n-1; the fuzzed entry takes
    the place of ``items[position]``."""

    flow_id: UUID
    items: list[Item]
    position: int
    entry: bytes
    how: str

    @property
    def events(self) -> list[FlowEvent]:
        return [event for event, _ in self.items]

    @property
    def envelopes(self) -> list[bytes]:
        return [encode_envelope(e, b).encode() for e, b in self.items]

    @property
    def prefix(self) -> list[bytes]:
        return self.envelopes[: self.position]

    @property
    def suffix(self) -> list[bytes]:
        return self.envelopes[self.position + 1 :]

    @property
    def entries(self) -> list[bytes]:
        return [*self.prefix, self.entry, *self.suffix]


def weird_values() -> st.SearchStrategy[object]:
    """Any JSON value, biased toward the edges: wrong types, huge ints, NaN and its lookalikes."""
    return st.one_of(
        st.sampled_from(
            [
                None,
                True,
                False,
                0,
                -1,
                1.0,
                2**31,
                2**63,
                2**64,
                10**30,
                -(2**63) - 1,
                NAN,
                math.inf,
                -math.inf,
                "",
                "NaN",
                "nan",
                "Infinity",
                "-Infinity",
                "null",
                "1",
                "\x00",
                "\ud800",
                "0" * 64,
                [],
                {},
            ]
        ),
        st.integers(-(10**30), 10**30),
        st.floats(),
        texts(max_size=12),
        json_values(max_leaves=4),
    )


def serialize(data: object, ensure_ascii: bool) -> bytes:
    """JSON as a careless writer might produce it: NaN allowed, lone surrogates passed through
    as the (invalid UTF-8) bytes they would be."""
    return json.dumps(data, allow_nan=True, ensure_ascii=ensure_ascii).encode(
        "utf-8", "surrogatepass"
    )


def _payload_mutation(draw: st.DrawFn, payload: dict[str, Any]) -> tuple[str, object]:
    ((name, body),) = payload.items()
    how = draw(
        st.sampled_from(
            ["unknown-kind", "field-replaced", "field-missing", "field-extra", "body-not-object"]
        )
    )
    if how == "unknown-kind":
        return how, {draw(st.sampled_from(["StepExploded", "stepstarted", ""])): body}
    if how == "body-not-object":
        return how, {name: draw(weird_values())}
    body = dict(body)
    if how == "field-replaced":
        body[draw(st.sampled_from(sorted(body)))] = draw(weird_values())
    elif how == "field-missing":
        del body[draw(st.sampled_from(sorted(body)))]
    else:
        body[draw(texts(min_size=1, max_size=6).filter(lambda k: k not in body))] = 1
    return how, {name: body}


def _artifacts_mutation(draw: st.DrawFn, good: list[Any]) -> tuple[str, object]:
    how = draw(
        st.sampled_from(
            [
                "not-a-list",
                "item-not-object",
                "bad-hash",
                "bad-kind",
                "bad-body",
                "tampered-body",
                "extra-body",
            ]
        )
    )
    if how == "not-a-list":
        return how, draw(st.sampled_from([5, True, 1.5, "x", {"hash": "h"}]))
    if how == "item-not-object":
        return how, [*good, draw(weird_values())]
    if not good:
        good = [{"hash": "0" * 64, "kind": "k", "payload": None, "metadata": None}]
    item = dict(good[0])
    if how == "bad-hash":
        item["hash"] = draw(st.one_of(bad_hashes().filter(lambda h: not is_hash(h)), hashes()))
    elif how == "bad-kind":
        item["kind"] = draw(st.one_of(st.just(""), st.integers(), st.none(), st.just([])))
    elif how == "bad-body":
        field = draw(st.sampled_from(["payload", "metadata"]))
        item[field] = draw(
            st.one_of(
                st.sampled_from([NAN, math.inf, "\x00", "\ud800", {"k": "a\x00"}]),
                st.integers(MAX_DEPTH + 1, MAX_DEPTH + 20).map(deep_list),
            )
        )
    elif how == "tampered-body":  # storable, but no longer what its hash says
        item["payload"] = [item.get("payload"), draw(json_values(max_leaves=3))]
    else:  # a body for a hash the event does not output
        item = {"hash": draw(hashes()), "kind": "k", "payload": 1, "metadata": None}
    return how, [item, *good[1:]]


@st.composite
def mutated_envelopes(
    draw: st.DrawFn, event: FlowEvent, bodies: tuple[Artifact, ...]
) -> tuple[str, bytes]:
    data: dict[str, Any] = json.loads(encode_envelope(event, bodies))
    what = draw(
        st.sampled_from(
            [
                "drop-key",
                "extra-key",
                "replace-value",
                "v",
                "flow_id",
                "seq",
                "ts",
                "event_type",
                "payload",
                "artifacts",
            ]
        )
    )
    how = what
    if what == "drop-key":
        key = draw(st.sampled_from(sorted(data)))
        del data[key]
        how = f"drop-{key}"
    elif what == "extra-key":
        data[draw(texts(min_size=1, max_size=8).filter(lambda k: k not in data))] = draw(
            weird_values()
        )
    elif what == "replace-value":
        key = draw(st.sampled_from([*sorted(data), "artifacts"]))
        data[key] = draw(weird_values())
        how = f"replace-{key}"
    elif what == "v":
        data["v"] = draw(st.sampled_from([0, 2, -1, "1", 1.0, True, None, [1], 2**64]))
    elif what == "flow_id":
        data["flow_id"] = draw(
            st.one_of(
                flow_ids().map(str),  # another flow's id
                st.just(str(event.flow_id).upper()),  # the same id, spelled otherwise
                st.just(f"urn:uuid:{event.flow_id}"),
                st.sampled_from(["not-a-uuid", "", str(event.flow_id)[:-1], "0" * 33]),
                st.integers(),
            )
        )
    elif what == "seq":
        candidates = [-1, -(2**63), event.seq + 1, event.seq + 2, 2**31, 2**63, 2**64, 10**30]
        if event.seq:
            candidates.append(event.seq - 1)
        data["seq"] = draw(st.one_of(st.sampled_from(candidates), weird_values()))
    elif what == "ts":
        data["ts"] = draw(
            st.one_of(
                st.sampled_from(
                    ["yesterday", "", "2024-05-01T12:00:00", "2024-13-01T00:00:00+00:00"]
                ),
                aware_timestamps().map(datetime.isoformat),  # another legal time
                weird_values(),
            )
        )
    elif what == "event_type":
        data["event_type"] = draw(
            st.one_of(
                st.sampled_from(["StepStarted", "flowcompleted", "stepexploded", ""]),
                weird_values(),
            )
        )
    elif what == "payload":
        how, data["payload"] = _payload_mutation(draw, data["payload"])
        how = f"payload-{how}"
    else:
        how, data["artifacts"] = _artifacts_mutation(draw, list(data.get("artifacts", [])))
        how = f"artifacts-{how}"
    return how, serialize(data, draw(st.booleans()))


@st.composite
def raw_entries(
    draw: st.DrawFn, event: FlowEvent, bodies: tuple[Artifact, ...]
) -> tuple[str, bytes]:
    """(how it was made, an entry) to put where ``event``'s envelope belongs."""
    good = encode_envelope(event, bodies).encode()
    what = draw(
        st.sampled_from(
            [
                "mutated",
                "mutated",
                "mutated",
                "mutated",
                "random-bytes",
                "random-json",
                "truncated",
                "non-utf8",
                "deep",
            ]
        )
    )
    if what == "mutated":
        return draw(mutated_envelopes(event, bodies))
    if what == "random-bytes":
        return what, draw(st.binary(max_size=80))
    if what == "random-json":
        return what, serialize(draw(weird_values()), draw(st.booleans()))
    if what == "truncated":
        return what, good[: draw(st.integers(0, len(good) - 1))]
    if what == "non-utf8":
        at = draw(st.integers(0, len(good)))
        byte = draw(st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80"]))
        return what, good[:at] + byte + good[at:]
    depth = draw(st.sampled_from([MAX_DEPTH + 10, 2_000, 100_000]))
    if draw(st.booleans()):
        return what, b"[" * depth + b"]" * depth
    data = json.loads(good)
    data["payload"] = {"StepSignal": {"step_index": 0, "step_id": "s", "signal": "x", "data": "@"}}
    data["event_type"] = "stepsignal"
    text = json.dumps(data).replace('"@"', "[" * depth + "]" * depth)
    return what, text.encode()


@st.composite
def fuzz_flows(draw: st.DrawFn, max_events: int = 6) -> FuzzFlow:
    """Good events of one flow at strictly increasing times, one replaced by a fuzzed entry."""
    # A new id on every draw, replays and shrinking included: a database keeps every flow.
    flow_id = draw(st.builds(uuid4))
    count = draw(st.integers(1, max_events))
    start = draw(timestamps())
    items: list[Item] = []
    position = draw(st.integers(0, count - 1))
    for seq in range(count):
        ts = start + timedelta(milliseconds=seq, microseconds=draw(st.integers(0, 999)))
        at_position = st.one_of(valid_items(), finished_with_bodies())
        event, bodies = draw(at_position if seq == position else valid_items())
        items.append((FlowEvent(seq, flow_id, event.kind, ts.astimezone(UTC)), bodies))
    how, entry = draw(raw_entries(*items[position]))
    return FuzzFlow(flow_id, items, position, entry, how)


# --- the oracle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fate:
    """What must become of a fuzzed entry: stored as ``event``, or dead-lettered for ``reason``."""

    reason: str | None
    event: FlowEvent | None = None


def _check_decoded(flow: FuzzFlow, event: FlowEvent, bodies: dict[str, Artifact]) -> None:
    """The decoded event is what the accepted entry says, field by field, as the standard
    library reads it (types strict: a position is an int, not a float or a bool)."""
    data = json.loads(flow.entry)
    assert isinstance(data, dict), f"the decoder accepted a {type(data).__name__} ({flow.how})"
    seq = data.get("seq")
    assert type(seq) is int and event.seq == seq, (flow.how, seq, event.seq)
    assert event.flow_id == UUID(str(data.get("flow_id"))), (flow.how, data.get("flow_id"))
    ts = datetime.fromisoformat(str(data.get("ts")))
    assert ts.utcoffset() is not None and event.ts == ts, (flow.how, data.get("ts"))
    assert event.event_type == data.get("event_type"), (flow.how, data.get("event_type"))
    assert same_json(encode_kind(event.kind), data.get("payload")), (flow.how, event.kind)
    sent = {item["hash"]: item for item in data.get("artifacts") or []}
    for artifact_hash, body in bodies.items():
        item = sent[artifact_hash]
        # keyed by the hash it claims; whether the body hashes to it is the store's check
        # (check_artifact_bodies below), so a tampered body decodes and is refused there
        assert body.kind == item["kind"], flow.how
        assert same_json(body.payload, item["payload"]), flow.how
        assert same_json(body.metadata, item["metadata"]), flow.how


#: Entries that cannot be an envelope, whatever the decoder says: no decoder in the oracle.
NEVER_ENVELOPES = frozenset({"random-bytes", "random-json", "truncated", "non-utf8", "deep"})


def expected_fate(flow: FuzzFlow) -> Fate:
    """The reference semantics: the entry decodes (see below), the sweep's flow check, then
    the store's rules (a gap, a different event at an occupied position, an artifact body that
    does not hash to its claimed hash).

    The oracle does not take the decoder's word for it (that would make the decoder its own
    judge): an entry made to be garbage must be refused, and what the decoder makes of an
    entry it accepts must be what the entry says, read without the decoder
    (``_check_decoded``)."""
    if flow.how in NEVER_ENVELOPES:
        return Fate("InvalidEvent")
    try:
        event, bodies = decode_envelope(flow.entry)
    except InvalidEvent:
        return Fate("InvalidEvent")
    _check_decoded(flow, event, bodies)
    if event.flow_id != flow.flow_id:
        return Fate("InvalidEvent")
    if event.seq > flow.position:
        return Fate("SeqGap")
    if event.seq < flow.position:
        # times strictly increase within the flow: never identical to the stored event
        return Fate("SeqConflict")
    try:
        check_artifact_bodies(bodies)
    except StoreError as exc:
        return Fate(type(exc).__name__)
    return Fate(None, event)


# --- sweeping a fuzzed flow, held to the oracle ---------------------------------------------

#: More cycles than any fuzzed flow needs (at most a handful of entries, batches of 1 or more).
MAX_CYCLES = 50


def sweep_until_empty(sweeper: Sweeper, shard: ShardKeys) -> list[CycleResult]:
    """Sweep cycles until a claim finds nothing (never raises: that is the point)."""
    results: list[CycleResult] = []
    for _ in range(MAX_CYCLES):
        result = sweeper.cycle(shard, "fuzz-sweep")
        if not result.flows:
            return results
        results.append(result)
    raise AssertionError(f"the sweep never ran dry: {results[-3:]}")


def check_sweep(
    flow: FuzzFlow,
    redis: Any,
    scripts: Scripts,
    sweeper: Sweeper,
    stored: Any,
    keys: Keys,
) -> None:
    """Queue the flow's entries with the emit script, sweep until the claim is empty, and hold
    the outcome to ``expected_fate``.

    Shared with the integration fuzz test (real Redis, PgEventStore).
    """
    fid = str(flow.flow_id)
    shard = keys.for_flow(fid)
    scripts.emit(
        keys=[shard.ready, shard.leased, shard.sweeps, shard.wake],
        args=[shard.base, fid, QUEUED_SWEEP_TTL_MS, EMIT_MAX_SWEEPS, *flow.entries],
    )
    assert redis.zscore(shard.ready, fid) is not None
    fate = expected_fate(flow)
    note(f"expected: {fate}")

    results = sweep_until_empty(sweeper, shard)

    queued = cast(list[bytes], redis.lrange(shard.queue(fid), 0, -1))
    dead = cast(list[bytes], redis.lrange(shard.dead(fid), 0, -1))
    assert redis.zscore(shard.leased, fid) is None, "the lease is released"
    assert redis.hget(shard.leases, fid) is None, "the lease's token is gone"
    assert redis.zscore(shard.ready, fid) is None
    assert sum(r.lost for r in results) == 0, results
    if fate.reason is None:
        assert fate.event is not None
        assert sum(r.parked for r in results) == 0, (results, dead)
        expected = [*flow.events[: flow.position], fate.event, *flow.events[flow.position + 1 :]]
        assert stored(flow.flow_id) == expected
        assert sum(r.events for r in results) == len(expected)
        assert queued == [] and dead == []
        assert not redis.exists(shard.reason(fid))
        assert redis.zscore(shard.parked, fid) is None
        assert redis.hget(shard.removed, fid) is None, "an empty queue keeps no count"
        return
    assert sum(r.parked for r in results) == 1, results
    assert sum(r.events for r in results) == flow.position
    assert stored(flow.flow_id) == flow.events[: flow.position], "the valid prefix is stored"
    assert queued == flow.suffix, "the later events wait, untouched and in order"
    [raw] = dead
    record = json.loads(raw)
    assert record["reason"] == fate.reason, record
    # the error says what is wrong, in the words of the refusal it records
    expected_words = {
        "SeqGap": f"flow {flow.flow_id}: event at position",
        "SeqConflict": f"flow {flow.flow_id}: a different event is already stored at position",
        "ArtifactHashMismatch": "not to its claimed hash",
        "InvalidEvent": ": ",
    }[fate.reason]
    assert expected_words in record["error"], record
    # ...and names the position the entry claimed (none when it could not be read)
    expected_position = None if fate.reason == "InvalidEvent" else json.loads(flow.entry)["seq"]
    assert record["position"] == expected_position, record
    assert entry_of(record) == flow.entry
    reason = cast(bytes, redis.get(shard.reason(fid)))
    assert reason.decode().startswith(fate.reason)
    assert redis.zscore(shard.parked, fid) is not None
    # a parked flow stays parked: another sweep claims nothing, touches nothing
    assert sweeper.cycle(shard, "fuzz-sweep").flows == 0
    assert cast(list[bytes], redis.lrange(shard.queue(fid), 0, -1)) == flow.suffix
    assert stored(flow.flow_id) == flow.events[: flow.position]
