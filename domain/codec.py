"""Event kinds ↔ the externally tagged JSON the engine writes (serde's default enum form).

``{"StepStarted": {"step_index": 0, "step_id": "acquire"}}``. Decoding is strict: an unknown
kind, a missing or extra field, or a value of the wrong type raises ``DecodeError`` naming the
field and the value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.events import (
    KIND_CLASSES,
    MESSAGE_ERRORS,
    UNIT_ERRORS,
    CoreEngineError,
    FlowCompleted,
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
from domain.json_values import InvalidJson, JsonValue, check_json

KIND_NAMES: dict[str, type[FlowEventKind]] = {cls.__name__: cls for cls in KIND_CLASSES}


class DecodeError(ValueError):
    """JSON that is not a valid event kind; ``field`` names where, ``value`` what was found."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"{field}: {why} (got {value!r:.200})")
        self.field = field
        self.value = value


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


def encode_kind(kind: FlowEventKind) -> dict[str, JsonValue]:
    body: dict[str, JsonValue]
    match kind:
        case FlowInitialized():
            body = {"definition_hash": kind.definition_hash, "step_count": kind.step_count}
        case StepStarted():
            body = {"step_index": kind.step_index, "step_id": kind.step_id}
        case StepFinished():
            body = {
                "step_index": kind.step_index,
                "step_id": kind.step_id,
                "outputs": list(kind.outputs),
                "fingerprint": kind.fingerprint,
            }
        case StepFailed():
            body = {
                "step_index": kind.step_index,
                "step_id": kind.step_id,
                "error": encode_error(kind.error),
                "fingerprint": kind.fingerprint,
            }
        case StepSignal():
            body = {
                "step_index": kind.step_index,
                "step_id": kind.step_id,
                "signal": kind.signal,
                "data": kind.data,
            }
        case PropertyPreferenceAssigned():
            body = {
                "property_key": kind.property_key,
                "policy_id": kind.policy_id,
                "params_hash": kind.params_hash,
                "rationale": kind.rationale,
            }
        case FlowCompleted():
            body = {"flow_fingerprint": kind.flow_fingerprint}
        case _:
            raise TypeError(f"not an event kind: {kind!r}")
    return {type(kind).__name__: body}


# --- decoding ---------------------------------------------------------------------------------


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


def _json(value: object, field: str) -> JsonValue:
    try:
        check_json(value, field)
    except InvalidJson as exc:
        raise DecodeError(exc.field, exc.value, "not storable JSON") from exc
    return value  # type: ignore[return-value]  # checked just above


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
        _json(b["data"], f"{f}.data"),
    )


def _decode_preference(b: dict[str, Any], f: str) -> FlowEventKind:
    return PropertyPreferenceAssigned(
        _str(b["property_key"], f"{f}.property_key"),
        _str(b["policy_id"], f"{f}.policy_id"),
        _str(b["params_hash"], f"{f}.params_hash"),
        _json(b["rationale"], f"{f}.rationale"),
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
    """The kind from its externally tagged JSON; DecodeError naming the field otherwise."""
    name, body = _single_key(obj, field, "event kind")
    if name not in _DECODERS:
        raise DecodeError(field, name, f"unknown event kind; expected one of {sorted(_DECODERS)}")
    names, decoder = _DECODERS[name]
    where = f"{field}.{name}"
    return decoder(_fields(body, where, names), where)


def event_type_of(kind_name: str) -> str:
    """``StepStarted`` → ``stepstarted``: the event_type column is the lowercase kind name."""
    return kind_name.lower()
