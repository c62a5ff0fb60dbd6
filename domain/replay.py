"""Replay: a flow's state rebuilt from its events. The same rules for every store (parity)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from chem_persistence.domain.definition import FlowDefinition
from chem_persistence.domain.events import (
    FlowCompleted,
    FlowEvent,
    StepFailed,
    StepFinished,
    StepStarted,
)


class StepState(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    FINISHED_OK = "FinishedOk"
    FAILED = "Failed"


@dataclass(frozen=True)
class StepSlot:
    step_id: str
    state: StepState = StepState.PENDING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    fingerprint: str | None = None
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlowInstance:
    flow_id: UUID
    steps: tuple[StepSlot, ...]
    cursor: int
    completed: bool

    @property
    def failed(self) -> bool:
        return any(slot.state is StepState.FAILED for slot in self.steps)


class InMemoryFlowRepository:
    """Rebuilds a FlowInstance from events; PgFlowRepository delegates here for exact parity."""

    @staticmethod
    def load(
        flow_id: UUID, events: Sequence[FlowEvent], definition: FlowDefinition
    ) -> FlowInstance:
        slots = [StepSlot(step_id) for step_id in definition.step_ids]
        completed = False
        for event in events:
            kind = event.kind
            if isinstance(kind, FlowCompleted):
                completed = True
                continue
            if not isinstance(kind, StepStarted | StepFinished | StepFailed):
                continue  # FlowInitialized, signals and preferences change no slot
            if not 0 <= kind.step_index < len(slots):
                continue  # out of range: ignored, as the engine does
            slot = slots[kind.step_index]
            # The slot rebuilt field by field (not dataclasses.replace: a hot path of replay)
            if isinstance(kind, StepStarted):
                slot = StepSlot(
                    slot.step_id,
                    StepState.RUNNING,
                    slot.attempts + 1,
                    event.ts,
                    slot.finished_at,
                    slot.fingerprint,
                    slot.outputs,
                )
            elif isinstance(kind, StepFinished):
                slot = StepSlot(
                    slot.step_id,
                    StepState.FINISHED_OK,
                    slot.attempts,
                    slot.started_at,
                    event.ts,
                    kind.fingerprint,
                    kind.outputs,
                )
            else:
                slot = StepSlot(
                    slot.step_id,
                    StepState.FAILED,
                    slot.attempts,
                    slot.started_at,
                    event.ts,
                    kind.fingerprint,
                    slot.outputs,
                )
            slots[kind.step_index] = slot
        cursor = next(
            (i for i, slot in enumerate(slots) if slot.state is StepState.PENDING), len(slots)
        )
        return FlowInstance(flow_id, tuple(slots), cursor, completed)
