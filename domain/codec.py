"""The one codec: event kinds, the envelope and the stored payload ↔ JSON, on msgspec (C).

The payload is the kind as the engine writes it, externally tagged (serde's default enum
form): ``{"StepStarted": {"step_index": 0, "step_id": "acquire"}}``. The envelope is one
queued event: ``{"v": 1, "flow_id", "seq", "ts", "event_type", "payload", "artifacts"?}``
where ``ts`` is UTC and ``artifacts``, when the engine has the bodies, is a list of
``{"hash", "kind", "payload", "metadata"}`` for outputs of a StepFinished.

Decoding is strict and runs twice only when it fails: msgspec decodes straight into the kinds
(types checked in C, then each kind's own ``check``); anything it refuses is decoded again by
the plain-Python reference below, which names the field and the value in a ``DecodeError`` —
or, where the two differ on a detail of syntax, accepts, so that the fast path never refuses
what the reference accepts.

Equality where it decides (``stored_form``): the canonical JSON of the kind as storage gives
it back — type-exact (``1``, ``1.0`` and ``true`` differ), independent of key order, with
``-0.0`` as ``0.0`` because PostgreSQL JSONB has no negative zero.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import msgspec

from domain.canonical import canonical_json, is_hash
from domain.errors import InvalidKind, InvalidValue
from domain.events import (
    CHECKS,
    KIND_CLASSES,
    MESSAGE_ERRORS,
    UNIT_ERRORS,
    Artifact,
    CoreEngineError,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    Index,
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
from domain.json_values import MAX_DEPTH, InvalidJson, JsonValue, check_json, encode_json

ENVELOPE_VERSION = 1
KIND_NAMES: dict[str, type[FlowEventKind]] = {cls.__name__: cls for cls in KIND_CLASSES}


class DecodeError(InvalidValue):
    """JSON that is not a valid event kind or envelope; ``field`` names where, ``value`` what
    was found."""


# --- encoding ---------------------------------------------------------------------------------


def encode_error(error: CoreEngineError) -> JsonValue:
    match error:
        case UnitError(variant):
            return variant
        case MessageError(variant, message):
            return {variant: message}
        case InvalidTransition(from_state, to_state):
            return {"InvalidTransition": {"from": from_state, "to": to_state}}
        case RetryNotAllowed(step_id, reason):
            return {"RetryNotAllowed": {"step_id": step_id, "reason": reason}}
    raise TypeError(f"not a CoreEngineError: {error!r}")


def _tagged(kind: FlowEventKind) -> dict[str, Any]:
    """The externally tagged form, ready for msgspec: the kind's Struct is its own body
    (fields in order), except StepFailed, whose error is externally tagged too."""
    if type(kind) is StepFailed:
        return {
            "StepFailed": {
                "step_index": kind.step_index,
                "step_id": kind.step_id,
                "error": encode_error(kind.error),
                "fingerprint": kind.fingerprint,
            }
        }
    return {type(kind).__name__: kind}


def encode_kind(kind: FlowEventKind) -> dict[str, JsonValue]:
    """The externally tagged payload as plain JSON values (dicts, lists, ...)."""
    body: dict[str, JsonValue]
    match kind:
        case StepFinished():
            body = {
                "step_index": kind.step_index,
                "step_id": kind.step_id,
                "outputs": list(kind.outputs),
                "fingerprint": kind.fingerprint,
            }
        case StepFailed():
            return _tagged(kind)
        case (
            FlowInitialized()
            | StepStarted()
            | StepSignal()
            | PropertyPreferenceAssigned()
            | FlowCompleted()
        ):
            body = {name: getattr(kind, name) for name in kind.__struct_fields__}
        case _:
            raise TypeError(f"not an event kind: {kind!r}")
    return {type(kind).__name__: body}


def kind_json(kind: FlowEventKind) -> bytes:
    """The payload as the engine writes it (compact UTF-8 JSON), numbers JSONB-safe."""
    if not isinstance(kind, KIND_CLASSES):
        raise TypeError(f"not an event kind: {kind!r}")
    return encode_json(_tagged(kind))


# --- equality where it decides ----------------------------------------------------------------


def stored_form(kind: FlowEventKind) -> str:
    """The kind's canonical JSON as storage keeps it: two kinds are the same event payload
    exactly when these are equal. Type-exact (``1``, ``1.0``, ``true`` differ), key order
    does not matter (JSONB does not keep it), ``-0.0`` is ``0.0`` (JSONB cannot hold it)."""
    payload = encode_kind(kind)
    text = canonical_json(payload)
    if "-0.0" in text:  # rare: look for real negative zeros, not text that contains "-0.0"
        text = canonical_json(_without_negative_zero(payload))
    return text


def _without_negative_zero(value: JsonValue) -> JsonValue:
    if isinstance(value, float):
        return 0.0 if value == 0.0 else value
    if isinstance(value, list):
        return [_without_negative_zero(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_negative_zero(item) for key, item in value.items()}
    return value


# --- the envelope: encoding (the producer) ----------------------------------------------------


_WRITE = msgspec.json.Encoder().encode


class _EnvelopeOut(msgspec.Struct, omit_defaults=True):
    v: int
    flow_id: UUID
    seq: int
    ts: datetime
    event_type: str
    payload: dict[str, Any]
    artifacts: list[dict[str, Any]] | None = None


def encode_envelope(
    event: FlowEvent, artifacts: Sequence[Artifact] = (), max_bytes: int | None = None
) -> bytes:
    """Check everything, then write the envelope (UTF-8); an InvalidValue names the first bad
    field. ``ts`` is written in UTC, whatever offset the event's time has."""
    if not isinstance(event.flow_id, UUID):
        raise InvalidValue("flow_id", event.flow_id, "must be a uuid.UUID")
    seq = event.seq
    if type(seq) is not int or seq < 0:
        raise InvalidValue("seq", seq, "must be a non-negative integer")
    ts = _utc(event.ts, event.ts)
    kind = event.kind
    if not isinstance(kind, KIND_CLASSES):
        raise InvalidValue("kind", kind, "not one of the seven event kinds")
    name = type(kind).__name__
    kind.check(f"kind.{name}")  # again: a field may have been forced past the constructor
    if type(kind) is StepFinished:
        for i, output in enumerate(kind.outputs):
            if not (type(output) is str and _hex64(output)):
                raise InvalidValue(
                    f"kind.StepFinished.outputs[{i}]", output, "not 64 lowercase hex characters"
                )
    bodies = _artifact_bodies(kind, artifacts) if artifacts else None
    envelope = _EnvelopeOut(
        ENVELOPE_VERSION, event.flow_id, seq, ts, kind.event_type, _tagged(kind), bodies
    )
    # Floats as msgspec writes them (1e16 too): read back as floats by the worker, whose
    # write to PostgreSQL puts them in fixed notation for JSONB (json_values.dumps).
    data = _WRITE(envelope)
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidValue(
            "envelope", f"{len(data)} bytes", f"larger than the limit of {max_bytes}"
        )
    return data


def _utc(ts: object, shown: object) -> datetime:
    """An aware datetime as UTC (PostgreSQL refuses offsets with seconds; a reader in UTC
    cannot hold an instant outside years 1-9999)."""
    if not isinstance(ts, datetime) or ts.utcoffset() is None:
        raise InvalidValue("ts", shown, "must be a timezone-aware datetime")
    if ts.tzinfo is UTC:
        return ts
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise InvalidValue("ts", shown, "out of range once converted to UTC") from None


def _artifact_bodies(kind: FlowEventKind, artifacts: Sequence[Artifact]) -> list[dict[str, Any]]:
    """The bodies as the envelope carries them, checked."""
    if type(kind) is not StepFinished:
        raise InvalidValue("artifacts", len(artifacts), "only a StepFinished carries artifacts")
    outputs = set(kind.outputs)
    result: list[dict[str, Any]] = []
    for i, artifact in enumerate(artifacts):
        where = f"artifacts[{i}]"
        if not isinstance(artifact, Artifact):
            raise InvalidValue(where, artifact, "must be a domain Artifact")
        if not isinstance(artifact.kind, str) or not artifact.kind:
            raise InvalidValue(f"{where}.kind", artifact.kind, "must be a non-empty string")
        check_json(artifact.payload, f"{where}.payload")
        check_json(artifact.metadata, f"{where}.metadata")
        if artifact.hash not in outputs:
            raise InvalidValue(f"{where}.hash", artifact.hash, "is not among the event's outputs")
        result.append(
            {
                "hash": artifact.hash,
                "kind": artifact.kind,
                "payload": artifact.payload,
                "metadata": artifact.metadata,
            }
        )
    return result


# --- decoding: the fast path (msgspec, C) -----------------------------------------------------


class _StepFailedBody(msgspec.Struct, forbid_unknown_fields=True):
    step_index: Index
    step_id: str
    error: Any
    fingerprint: str


class _ArtifactIn(msgspec.Struct, forbid_unknown_fields=True):
    hash: str
    kind: str
    payload: Any = None
    metadata: Any = None


class _EnvelopeIn(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    flow_id: UUID
    seq: int
    ts: datetime
    event_type: str
    payload: msgspec.Raw
    artifacts: list[_ArtifactIn] | None = None


_TAGGED = msgspec.json.Decoder(dict[str, msgspec.Raw])
_BODIES: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(_StepFailedBody if cls is StepFailed else cls)
    for name, cls in KIND_NAMES.items()
}
_ENVELOPE = msgspec.json.Decoder(_EnvelopeIn)
#: What the fast path lets the reference below judge instead.
_REFUSED = (msgspec.MsgspecError, InvalidValue, RecursionError, UnicodeDecodeError)


class _Refused(Exception):
    """The fast path refuses: the reference decoder judges (and names the field)."""


@contextmanager
def checked_by_decoder(skip: bool = True) -> Iterator[None]:
    """While msgspec decodes JSON that cannot hold a NUL, a lone surrogate, a NaN or deep
    nesting (text stored in JSONB, or an entry whose bytes were looked at), the kinds it
    builds skip their own checks: types and bounds were checked in C. This thread only."""
    before = CHECKS.skip
    CHECKS.skip = skip
    try:
        yield
    finally:
        CHECKS.skip = before


def _plain_text(raw: bytes | str) -> bool:
    """Whether JSON text from msgspec can hold nothing PostgreSQL refuses: no ``\\u0000``
    escape (the only way to a NUL; msgspec refuses lone surrogates and NaN) and fewer
    brackets than the depth limit."""
    if isinstance(raw, str):
        return "\\u0000" not in raw and raw.count("[") + raw.count("{") < MAX_DEPTH
    return b"\\u0000" not in raw and raw.count(b"[") + raw.count(b"{") < MAX_DEPTH


def _fast_kind(data: bytes | str) -> FlowEventKind:
    tagged = _TAGGED.decode(data)
    if len(tagged) != 1:
        raise _Refused
    ((name, body),) = tagged.items()
    decoder = _BODIES.get(name)
    if decoder is None:
        raise _Refused
    kind = decoder.decode(body)
    if type(kind) is _StepFailedBody:
        error = decode_error(kind.error, "error")
        return StepFailed(kind.step_index, kind.step_id, error, kind.fingerprint)
    return cast(FlowEventKind, kind)


def decode_kind_json(data: bytes | str, field: str = "kind") -> FlowEventKind:
    """The kind from the payload's JSON text; DecodeError naming the field otherwise."""
    try:
        return _fast_kind(data)
    except (*_REFUSED, _Refused):
        pass
    with checked_by_decoder(skip=False):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(field, _head(data), f"not JSON: {exc}") from None
        return decode_kind(obj, field)


def decode_stored_kinds(payloads: Sequence[str]) -> list[FlowEventKind]:
    """The kinds of payloads read back from JSONB (which holds no NUL, lone surrogate, NaN or
    infinity): decoded in C, the kinds' own checks left to the decoder."""
    with checked_by_decoder():
        return [
            decode_kind_json(p, "payload")
            if p.count("[") + p.count("{") >= MAX_DEPTH
            else _stored_kind(p)
            for p in payloads
        ]


def _stored_kind(payload: str) -> FlowEventKind:
    try:
        return _fast_kind(payload)
    except (*_REFUSED, _Refused):
        return decode_kind_json(payload, "payload")


def decode_envelope(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    """An entry read from Redis as (event, artifact bodies by hash); DecodeError (an
    InvalidValue) naming the field otherwise. ``ts`` comes back in UTC.

    It accepts what ``encode_envelope`` writes and nothing else that could fail later: any
    other entry (garbage, nesting too deep, text PostgreSQL cannot store, malformed artifact
    bodies) is an InvalidValue, never another exception.
    """
    try:
        with checked_by_decoder(_plain_text(raw)):
            return _fast_envelope(raw)
    except (*_REFUSED, _Refused):
        pass
    try:
        with checked_by_decoder(skip=False):
            return _reference_envelope(raw)
    except RecursionError:
        raise DecodeError("envelope", _head(raw), "nested too deeply to decode") from None


def _fast_envelope(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    env = _ENVELOPE.decode(raw)
    if env.v != ENVELOPE_VERSION or env.seq < 0 or env.ts.tzinfo is None:
        raise _Refused
    ts = env.ts if env.ts.tzinfo is UTC else env.ts.astimezone(UTC)
    kind = _fast_kind(env.payload)  # every field checked by the kind itself
    if env.event_type != kind.event_type:
        raise _Refused
    if not env.artifacts:
        return FlowEvent(env.seq, env.flow_id, kind, ts), {}
    if type(kind) is not StepFinished:
        raise _Refused
    # JSON from msgspec holds no NaN, infinity or lone surrogate; a NUL needs an escape and
    # deep nesting needs brackets: only then are the bodies walked.
    walk = not CHECKS.skip
    outputs = kind.outputs
    bodies: dict[str, Artifact] = {}
    for i, item in enumerate(env.artifacts):
        if not item.kind or item.hash not in outputs or not _hex64(item.hash):
            raise _Refused
        if walk:
            check_json(item.kind, f"artifacts[{i}].kind")
            check_json(item.payload, f"artifacts[{i}].payload")
            check_json(item.metadata, f"artifacts[{i}].metadata")
        bodies[item.hash] = Artifact(item.kind, item.payload, item.metadata)
    return FlowEvent(env.seq, env.flow_id, kind, ts), bodies


def _hex64(text: str) -> bool:
    """``is_hash`` for a str, without a regular expression."""
    return len(text) == 64 and not text.strip("0123456789abcdef")


# --- decoding: the reference (plain Python; names the field and the value) --------------------


def _head(raw: bytes | str) -> bytes | str:
    return raw[:80]


def _int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(field, value, "expected an integer")
    return value


def _index(value: object, field: str) -> int:
    number = _int(value, field)
    if number < 0:
        raise DecodeError(field, value, "expected a non-negative integer")
    return number


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(field, value, "expected a string")
    return value


def _str_list(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DecodeError(field, value, "expected a list of strings")
    return tuple(_str(item, f"{field}[{i}]") for i, item in enumerate(value))


def _single_key(obj: object, field: str, what: str) -> tuple[str, Any]:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise DecodeError(field, obj, f"expected an object with exactly one key, the {what}")
    ((key, value),) = obj.items()
    return key, value


def _fields(body: object, field: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise DecodeError(field, body, "expected an object")
    for name in names:
        if name not in body:
            raise DecodeError(f"{field}.{name}", body, "missing field")
    for name in body:
        if name not in names:
            raise DecodeError(f"{field}.{name}", body[name], "unknown field")
    return body


def decode_error(obj: object, field: str = "error") -> CoreEngineError:
    if isinstance(obj, str):
        if obj not in UNIT_ERRORS:
            raise DecodeError(field, obj, "unknown CoreEngineError variant")
        return UnitError(obj)
    variant, value = _single_key(obj, field, "CoreEngineError variant")
    where = f"{field}.{variant}"
    if variant in MESSAGE_ERRORS:
        return MessageError(variant, _str(value, where))
    if variant == "InvalidTransition":
        body = _fields(value, where, ("from", "to"))
        return InvalidTransition(
            _str(body["from"], f"{where}.from"), _str(body["to"], f"{where}.to")
        )
    if variant == "RetryNotAllowed":
        body = _fields(value, where, ("step_id", "reason"))
        return RetryNotAllowed(
            _str(body["step_id"], f"{where}.step_id"), _str(body["reason"], f"{where}.reason")
        )
    if variant in UNIT_ERRORS:
        raise DecodeError(field, obj, f"{variant} is a unit variant: write it as a bare string")
    raise DecodeError(field, variant, "unknown CoreEngineError variant")


def _decode_flow_initialized(b: dict[str, Any], f: str) -> FlowEventKind:
    return FlowInitialized(
        _str(b["definition_hash"], f"{f}.definition_hash"),
        _index(b["step_count"], f"{f}.step_count"),
    )


def _decode_step_started(b: dict[str, Any], f: str) -> FlowEventKind:
    return StepStarted(
        _index(b["step_index"], f"{f}.step_index"), _str(b["step_id"], f"{f}.step_id")
    )


def _decode_step_finished(b: dict[str, Any], f: str) -> FlowEventKind:
    return StepFinished(
        _index(b["step_index"], f"{f}.step_index"),
        _str(b["step_id"], f"{f}.step_id"),
        _str_list(b["outputs"], f"{f}.outputs"),
        _str(b["fingerprint"], f"{f}.fingerprint"),
    )


def _decode_step_failed(b: dict[str, Any], f: str) -> FlowEventKind:
    return StepFailed(
        _index(b["step_index"], f"{f}.step_index"),
        _str(b["step_id"], f"{f}.step_id"),
        decode_error(b["error"], f"{f}.error"),
        _str(b["fingerprint"], f"{f}.fingerprint"),
    )


def _decode_step_signal(b: dict[str, Any], f: str) -> FlowEventKind:
    return StepSignal(
        _index(b["step_index"], f"{f}.step_index"),
        _str(b["step_id"], f"{f}.step_id"),
        _str(b["signal"], f"{f}.signal"),
        b["data"],
    )


def _decode_preference(b: dict[str, Any], f: str) -> FlowEventKind:
    return PropertyPreferenceAssigned(
        _str(b["property_key"], f"{f}.property_key"),
        _str(b["policy_id"], f"{f}.policy_id"),
        _str(b["params_hash"], f"{f}.params_hash"),
        b["rationale"],
    )


def _decode_flow_completed(b: dict[str, Any], f: str) -> FlowEventKind:
    return FlowCompleted(_str(b["flow_fingerprint"], f"{f}.flow_fingerprint"))


_DECODERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any], str], FlowEventKind]]] = {
    "FlowInitialized": (("definition_hash", "step_count"), _decode_flow_initialized),
    "StepStarted": (("step_index", "step_id"), _decode_step_started),
    "StepFinished": (("step_index", "step_id", "outputs", "fingerprint"), _decode_step_finished),
    "StepFailed": (("step_index", "step_id", "error", "fingerprint"), _decode_step_failed),
    "StepSignal": (("step_index", "step_id", "signal", "data"), _decode_step_signal),
    "PropertyPreferenceAssigned": (
        ("property_key", "policy_id", "params_hash", "rationale"),
        _decode_preference,
    ),
    "FlowCompleted": (("flow_fingerprint",), _decode_flow_completed),
}


def decode_kind(obj: object, field: str = "kind") -> FlowEventKind:
    """The kind from its externally tagged JSON, as Python values; DecodeError naming the
    field otherwise (every string storable, every JSON value checked)."""
    name, body = _single_key(obj, field, "event kind")
    if name not in _DECODERS:
        raise DecodeError(field, name, f"unknown event kind; expected one of {sorted(_DECODERS)}")
    names, decoder = _DECODERS[name]
    where = f"{field}.{name}"
    try:
        check_json(body, where)  # NUL, lone surrogates, NaN, depth: named by their path
        return decoder(_fields(body, where, names), where)
    except InvalidKind as exc:  # a check of the kind itself, named from the kind: re-rooted
        raise DecodeError(f"{field}.{exc.field}", exc.value, exc.why) from exc
    except InvalidJson as exc:
        raise DecodeError(exc.field, exc.value, exc.why) from exc


def _reference_envelope(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("envelope", _head(raw), f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError("envelope", data, "not a JSON object")
    unknown = sorted(set(data) - {*_EnvelopeIn.__struct_fields__})
    if unknown:
        raise DecodeError(unknown[0], data[unknown[0]], "unknown envelope field")
    version = data.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:  # not true, not 1.0
        raise DecodeError(
            "v", version, f"unsupported envelope version (expected {ENVELOPE_VERSION})"
        )
    flow = _field(data, "flow_id", str)
    try:
        flow_id = msgspec.convert(flow, UUID)
    except ValueError:  # msgspec's ValidationError, or a lone surrogate
        raise DecodeError("flow_id", flow, "not a UUID") from None
    seq = _field(data, "seq", int)
    if isinstance(seq, bool) or seq < 0:
        raise DecodeError("seq", seq, "must be a non-negative integer")
    ts_text = _field(data, "ts", str)
    try:
        ts = msgspec.convert(ts_text, datetime)
    except ValueError:
        raise DecodeError("ts", ts_text, "not an RFC 3339 time") from None
    if ts.tzinfo is None:
        raise DecodeError("ts", ts_text, "has no time zone")
    try:
        ts = ts.astimezone(UTC)
    except OverflowError:
        raise DecodeError("ts", ts_text, "out of range once converted to UTC") from None
    kind = decode_kind(data.get("payload"), "payload")
    if data.get("event_type") != kind.event_type:
        raise DecodeError("event_type", data.get("event_type"), f"does not match {kind.event_type}")
    return FlowEvent(seq, flow_id, kind, ts), _reference_artifacts(kind, data.get("artifacts"))


def _reference_artifacts(kind: FlowEventKind, items: object) -> dict[str, Artifact]:
    if items is None or items == []:
        return {}
    if not isinstance(items, list):
        raise DecodeError("artifacts", items, "not a list")
    outputs = kind.outputs if isinstance(kind, StepFinished) else ()
    bodies: dict[str, Artifact] = {}
    for i, item in enumerate(items):
        where = f"artifacts[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
            raise DecodeError(where, item, "not an artifact object")
        unknown = sorted(set(item) - {"hash", "kind", "payload", "metadata"})
        if unknown:
            raise DecodeError(f"{where}.{unknown[0]}", item[unknown[0]], "unknown field")
        if not item["kind"]:
            raise DecodeError(f"{where}.kind", item["kind"], "must be a non-empty string")
        claimed = item.get("hash")
        if not is_hash(claimed) or claimed not in outputs:
            # (only a StepFinished has outputs: no other kind carries artifacts)
            raise DecodeError(f"{where}.hash", claimed, "is not among the event's outputs")
        check_json(item["kind"], f"{where}.kind")
        check_json(item.get("payload"), f"{where}.payload")
        check_json(item.get("metadata"), f"{where}.metadata")
        bodies[cast(str, claimed)] = Artifact(
            item["kind"], item.get("payload"), item.get("metadata")
        )
    return bodies


def _field(data: dict[str, Any], name: str, typ: type) -> Any:
    value = data.get(name)
    if not isinstance(value, typ):
        raise DecodeError(name, value, f"missing or not a {typ.__name__}")
    return value
