"""The engine's domain, pure: events, their JSON, hashing, stores' reference semantics, replay."""

from domain.codec import DecodeError, decode_kind, encode_kind
from domain.definition import (
    PROPERTY_PREFERENCE_ASSIGNED,
    FlowDefinition,
    Signal,
    StepDefinition,
    StepFailure,
    StepSuccess,
)
from domain.engine import ENGINE_VERSION, FlowEngine
from domain.errors import ArtifactHashMismatch, EngineError, SeqConflict, SeqGap, StoreError
from domain.events import (
    EVENT_TYPES,
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
from domain.replay import FlowInstance, InMemoryFlowRepository, StepSlot, StepState
from domain.store import EventStore, InMemoryEventStore

__all__ = [
    "ENGINE_VERSION",
    "EVENT_TYPES",
    "PROPERTY_PREFERENCE_ASSIGNED",
    "Artifact",
    "ArtifactHashMismatch",
    "CoreEngineError",
    "DecodeError",
    "EngineError",
    "EventStore",
    "FlowCompleted",
    "FlowDefinition",
    "FlowEngine",
    "FlowEvent",
    "FlowEventKind",
    "FlowInitialized",
    "FlowInstance",
    "InMemoryEventStore",
    "InMemoryFlowRepository",
    "InvalidTransition",
    "MessageError",
    "PropertyPreferenceAssigned",
    "RetryNotAllowed",
    "SeqConflict",
    "SeqGap",
    "Signal",
    "StepDefinition",
    "StepFailed",
    "StepFailure",
    "StepFinished",
    "StepSignal",
    "StepSlot",
    "StepStarted",
    "StepState",
    "StepSuccess",
    "StoreError",
    "UnitError",
    "decode_kind",
    "encode_kind",
]
