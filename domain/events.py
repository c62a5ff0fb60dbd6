"""The engine's events as frozen values: the seven kinds, CoreEngineError, FlowEvent, Artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import ClassVar, TypeAlias
from uuid import UUID

from domain.canonical import hash_value
from domain.json_values import JsonValue

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


@dataclass(frozen=True)
class UnitError:
    """A unit variant, serialized as a bare string: ``"MissingInputs"``."""

    variant: str

    def __post_init__(self) -> None:
        if self.variant not in UNIT_ERRORS:
            raise ValueError(f"CoreEngineError: unknown unit variant {self.variant!r}")


@dataclass(frozen=True)
class MessageError:
    """A newtype variant carrying a message: ``{"PolicyViolation": "msg"}``."""

    variant: str
    message: str

    def __post_init__(self) -> None:
        if self.variant not in MESSAGE_ERRORS:
            raise ValueError(f"CoreEngineError: unknown message variant {self.variant!r}")


@dataclass(frozen=True)
class InvalidTransition:
    """``{"InvalidTransition": {"from": "...", "to": "..."}}``."""

    from_state: str
    to_state: str


@dataclass(frozen=True)
class RetryNotAllowed:
    """``{"RetryNotAllowed": {"step_id": "...", "reason": "..."}}``."""

    step_id: str
    reason: str


CoreEngineError: TypeAlias = UnitError | MessageError | InvalidTransition | RetryNotAllowed


# --- The seven event kinds --------------------------------------------------------------------


@dataclass(frozen=True)
class FlowInitialized:
    definition_hash: str
    step_count: int
    event_type: ClassVar[str] = "flowinitialized"


@dataclass(frozen=True)
class StepStarted:
    step_index: int
    step_id: str
    event_type: ClassVar[str] = "stepstarted"


@dataclass(frozen=True)
class StepFinished:
    step_index: int
    step_id: str
    outputs: tuple[str, ...]  # artifact hashes
    fingerprint: str
    event_type: ClassVar[str] = "stepfinished"


@dataclass(frozen=True)
class StepFailed:
    step_index: int
    step_id: str
    error: CoreEngineError
    fingerprint: str
    event_type: ClassVar[str] = "stepfailed"


@dataclass(frozen=True)
class StepSignal:
    step_index: int
    step_id: str
    signal: str
    data: JsonValue
    event_type: ClassVar[str] = "stepsignal"


@dataclass(frozen=True)
class PropertyPreferenceAssigned:
    property_key: str
    policy_id: str
    params_hash: str
    rationale: JsonValue
    event_type: ClassVar[str] = "propertypreferenceassigned"


@dataclass(frozen=True)
class FlowCompleted:
    flow_fingerprint: str
    event_type: ClassVar[str] = "flowcompleted"


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


@dataclass(frozen=True)
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
