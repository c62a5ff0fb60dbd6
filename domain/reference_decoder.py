"""The reference decoder: plain Python, slow, and precise — it names the field and the value
of whatever it refuses (``DecodeError``). The codec (``domain/codec.py``) decodes in C and
falls back to this only when msgspec refuses, so that an error always says where and what.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import msgspec

from chem_persistence.domain.canonical import is_hash
from chem_persistence.domain.errors import InvalidKind, InvalidValue
from chem_persistence.domain.events import (
    MESSAGE_ERRORS,
    UNIT_ERRORS,
    Artifact,
    CoreEngineError,
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
from chem_persistence.domain.json_values import InvalidJson, check_json

ENVELOPE_VERSION = 1
ENVELOPE_FIELDS = ("v", "flow_id", "seq", "ts", "event_type", "payload", "artifacts")


class DecodeError(InvalidValue):
    """JSON that is not a valid event kind or envelope; ``field`` names where, ``value`` what
    was found."""


# --- decoding: the reference (plain Python; names the field and the value) --------------------


def head(raw: bytes | str) -> bytes | str:
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


def reference_envelope(raw: bytes | str) -> tuple[FlowEvent, dict[str, Artifact]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("envelope", head(raw), f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError("envelope", data, "not a JSON object")
    unknown = sorted(set(data) - {*ENVELOPE_FIELDS})
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
