"""The engine's events as frozen values: the seven kinds, CoreEngineError, FlowEvent, Artifact.

The kinds and the error variants are msgspec Structs: immutable, and decoded from JSON by the
codec (``domain.codec``) in C. They accept what a Python caller naturally passes (a list for
``outputs`` is kept as a tuple) and check every field when built: a value of the wrong type or
one PostgreSQL cannot store raises ``InvalidKind`` (or ``InvalidJson`` inside a JSON value)
naming the field path, ``StepFinished.outputs[1]``, and the value.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, ClassVar, TypeAlias
from uuid import UUID

import msgspec
from msgspec.structs import force_setattr

from chem_persistence.domain.canonical import hash_value
from chem_persistence.domain.errors import InvalidKind
from chem_persistence.domain.json_values import JsonValue, check_json, check_text, text_ok

# --- field checks (shared by every kind) ------------------------------------------------------


class _Checks(threading.local):
    """Per thread: ``skip`` is set by the codec (``domain.codec.checked_by_decoder``) while
    msgspec builds kinds from JSON whose every check it has already made (types and bounds in
    C; no NUL, lone surrogate, NaN or deep nesting in the text). Everywhere else, a kind
    checks itself when built."""

    skip = False


CHECKS = _Checks()
#: A non-negative integer, for msgspec (the kinds check it themselves when built).
Index: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]


def _index(value: object, where: str) -> None:
    """A non-negative integer (not a bool)."""
    if type(value) is int:
        if value < 0:
            raise InvalidKind(where, value, "expected a non-negative integer")
        return
    raise InvalidKind(where, value, "expected a non-negative integer")


def _text(value: object, where: str) -> None:
    """A string PostgreSQL can store."""
    if type(value) is str:
        if not text_ok(value):
            check_text(value, where)  # raises, naming why
        return
    raise InvalidKind(where, value, "expected a string")


def _strings(obj: msgspec.Struct, name: str, value: object, where: str) -> None:
    """A tuple of strings; a list (what callers naturally pass) is kept as a tuple."""
    if type(value) is not tuple:
        if not isinstance(value, list | tuple):
            raise InvalidKind(where, value, "expected a list of strings")
        value = tuple(value)
        force_setattr(obj, name, value)
    for i, item in enumerate(value):
        if type(item) is not str or not text_ok(item):
            _text(item, f"{where}[{i}]")


# --- CoreEngineError: the engine's error enum, as serde writes it -----------------------------

UNIT_ERRORS = (
    "FlowCompleted",
    "InvalidStepIndex",
    "StepAlreadyTerminal",
    "MissingInputs",
    "FirstStepMustBeSource",
    "FlowHasFailed",
)
MESSAGE_ERRORS = ("PolicyViolation", "StorageError", "Internal")


class UnitError(msgspec.Struct, frozen=True, gc=False):
    """A unit variant, serialized as a bare string: ``"MissingInputs"``."""

    variant: str

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("UnitError")

    def check(self, where: str) -> None:
        if type(self.variant) is not str or self.variant not in UNIT_ERRORS:
            raise InvalidKind(
                f"{where}.variant",
                self.variant,
                f"unknown unit variant; expected one of {UNIT_ERRORS}",
            )


class MessageError(msgspec.Struct, frozen=True, gc=False):
    """A newtype variant carrying a message: ``{"PolicyViolation": "msg"}``."""

    variant: str
    message: str

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("MessageError")

    def check(self, where: str) -> None:
        if type(self.variant) is not str or self.variant not in MESSAGE_ERRORS:
            raise InvalidKind(
                f"{where}.variant",
                self.variant,
                f"unknown message variant; expected one of {MESSAGE_ERRORS}",
            )
        _text(self.message, f"{where}.message")


class InvalidTransition(msgspec.Struct, frozen=True, gc=False):
    """``{"InvalidTransition": {"from": "...", "to": "..."}}``."""

    from_state: str = msgspec.field(name="from")
    to_state: str = msgspec.field(name="to")

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("InvalidTransition")

    def check(self, where: str) -> None:
        _text(self.from_state, f"{where}.from_state")
        _text(self.to_state, f"{where}.to_state")


class RetryNotAllowed(msgspec.Struct, frozen=True, gc=False):
    """``{"RetryNotAllowed": {"step_id": "...", "reason": "..."}}``."""

    step_id: str
    reason: str

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("RetryNotAllowed")

    def check(self, where: str) -> None:
        _text(self.step_id, f"{where}.step_id")
        _text(self.reason, f"{where}.reason")


CoreEngineError: TypeAlias = UnitError | MessageError | InvalidTransition | RetryNotAllowed
ERROR_CLASSES = (UnitError, MessageError, InvalidTransition, RetryNotAllowed)


# --- The seven event kinds --------------------------------------------------------------------
#
# Each kind's fields, in this order, are its JSON body (the codec decodes a body straight into
# the Struct). ``check`` is the one validation of a kind: run when it is built, when msgspec
# decodes it, and again by the producer (a field may have been forced past it).


class FlowInitialized(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    definition_hash: str
    step_count: Index
    event_type: ClassVar[str] = "flowinitialized"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("FlowInitialized")

    def check(self, where: str) -> None:
        _text(self.definition_hash, f"{where}.definition_hash")
        _index(self.step_count, f"{where}.step_count")


class StepStarted(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    step_index: Index
    step_id: str
    event_type: ClassVar[str] = "stepstarted"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("StepStarted")

    def check(self, where: str) -> None:
        _index(self.step_index, f"{where}.step_index")
        _text(self.step_id, f"{where}.step_id")


class StepFinished(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    step_index: Index
    step_id: str
    outputs: tuple[str, ...]  # artifact hashes; a list is accepted and kept as a tuple
    fingerprint: str
    event_type: ClassVar[str] = "stepfinished"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("StepFinished")

    def check(self, where: str) -> None:
        _index(self.step_index, f"{where}.step_index")
        _text(self.step_id, f"{where}.step_id")
        _strings(self, "outputs", self.outputs, f"{where}.outputs")
        _text(self.fingerprint, f"{where}.fingerprint")


class StepFailed(msgspec.Struct, frozen=True, gc=False):
    step_index: Index
    step_id: str
    error: CoreEngineError
    fingerprint: str
    event_type: ClassVar[str] = "stepfailed"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("StepFailed")

    def check(self, where: str) -> None:
        _index(self.step_index, f"{where}.step_index")
        _text(self.step_id, f"{where}.step_id")
        if not isinstance(self.error, ERROR_CLASSES):
            raise InvalidKind(f"{where}.error", self.error, "expected a CoreEngineError")
        self.error.check(f"{where}.error")
        _text(self.fingerprint, f"{where}.fingerprint")


class StepSignal(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    step_index: Index
    step_id: str
    signal: str
    data: Any  # JSON (JsonValue; msgspec decodes it as any JSON), checked by check_json
    event_type: ClassVar[str] = "stepsignal"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("StepSignal")

    def check(self, where: str) -> None:
        _index(self.step_index, f"{where}.step_index")
        _text(self.step_id, f"{where}.step_id")
        _text(self.signal, f"{where}.signal")
        check_json(self.data, f"{where}.data")


class PropertyPreferenceAssigned(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    property_key: str
    policy_id: str
    params_hash: str
    rationale: Any  # JSON, as ``data``
    event_type: ClassVar[str] = "propertypreferenceassigned"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("PropertyPreferenceAssigned")

    def check(self, where: str) -> None:
        _text(self.property_key, f"{where}.property_key")
        _text(self.policy_id, f"{where}.policy_id")
        _text(self.params_hash, f"{where}.params_hash")
        check_json(self.rationale, f"{where}.rationale")


class FlowCompleted(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    flow_fingerprint: str
    event_type: ClassVar[str] = "flowcompleted"

    def __post_init__(self) -> None:
        if not CHECKS.skip:
            self.check("FlowCompleted")

    def check(self, where: str) -> None:
        _text(self.flow_fingerprint, f"{where}.flow_fingerprint")


FlowEventKind: TypeAlias = (
    FlowInitialized
    | StepStarted
    | StepFinished
    | StepFailed
    | StepSignal
    | PropertyPreferenceAssigned
    | FlowCompleted
)

KIND_CLASSES: tuple[type[FlowEventKind], ...] = (
    FlowInitialized,
    StepStarted,
    StepFinished,
    StepFailed,
    StepSignal,
    PropertyPreferenceAssigned,
    FlowCompleted,
)
EVENT_TYPES: tuple[str, ...] = tuple(k.event_type for k in KIND_CLASSES)


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """One event of one flow.

    ``seq`` is the 0-based position in its flow. ``log_seq`` is the global ``event_log.seq``
    when the event was read from PostgreSQL, ``None`` in memory; it is not part of equality,
    so an event read back from PostgreSQL equals the one the engine emitted.
    """

    seq: int
    flow_id: UUID
    kind: FlowEventKind
    ts: datetime
    log_seq: int | None = field(default=None, compare=False)

    @property
    def event_type(self) -> str:
        return self.kind.event_type


@dataclass(frozen=True)
class Artifact:
    """A step output. Its hash is the BLAKE3 of the canonical JSON of its payload."""

    kind: str
    payload: JsonValue
    metadata: JsonValue = None

    @cached_property
    def hash(self) -> str:
        return hash_value(self.payload)
