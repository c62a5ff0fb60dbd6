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

Equality where it decides is ``domain/equality.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import msgspec

from chem_persistence.domain.errors import InvalidValue
from chem_persistence.domain.events import (
    CHECKS,
    KIND_CLASSES,
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
from chem_persistence.domain.json_values import MAX_DEPTH, JsonValue, check_json, encode_json
from chem_persistence.domain.reference_decoder import ENVELOPE_VERSION as ENVELOPE_VERSION
from chem_persistence.domain.reference_decoder import DecodeError as DecodeError
from chem_persistence.domain.reference_decoder import decode_error as decode_error
from chem_persistence.domain.reference_decoder import decode_kind as decode_kind
from chem_persistence.domain.reference_decoder import head, reference_envelope

KIND_NAMES: dict[str, type[FlowEventKind]] = {cls.__name__: cls for cls in KIND_CLASSES}


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
            raise DecodeError(field, head(data), f"not JSON: {exc}") from None
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
            return reference_envelope(raw)
    except RecursionError:
        raise DecodeError("envelope", head(raw), "nested too deeply to decode") from None


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
