"""Many flows in one call: the unit a sweep stores, and how each flow of it is judged.

Every store judges a flow's events the same way (the in-memory store is the reference):
walking them in queue order from the flow's next free position, an event at a position
already taken must equal what is there (an identical re-append: accepted, a no-op), else it
is a SeqConflict; the event at the next position is new; one past it is a SeqGap. The
leading accepted events are stored; the first refused one is the flow's poison.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from chem_persistence.domain.errors import SeqConflict, SeqGap
from chem_persistence.domain.events import Artifact, FlowEvent


@dataclass(frozen=True)
class FlowBatch:
    """One flow's events in queue order, each with the artifact bodies it carries."""

    flow_id: UUID
    events: Sequence[FlowEvent]
    bodies: Sequence[Mapping[str, Artifact]] = ()

    def bodies_of(self, index: int) -> Mapping[str, Artifact]:
        return self.bodies[index] if index < len(self.bodies) else {}


@dataclass
class FlowOutcome:
    """``accepted`` leading events are stored (``stored``: the ones this call added);
    ``poison`` is the error of ``events[accepted]`` when not every event was accepted."""

    flow_id: UUID
    accepted: int = 0
    stored: list[FlowEvent] = field(default_factory=list)
    poison: Exception | None = None


Fresh = list[tuple[FlowEvent, Mapping[str, Artifact]]]


def judge(
    batch: FlowBatch,
    next_seq: int,
    stored_at: Callable[[int], FlowEvent | None],
    same: Callable[[FlowEvent, FlowEvent], bool],
) -> tuple[FlowOutcome, Fresh]:
    """The flow's outcome (``stored`` left empty) and its new events with their bodies.

    ``stored_at(seq)`` is the event stored at a position below ``next_seq``.
    """
    outcome = FlowOutcome(batch.flow_id)
    expected = next_seq
    earlier: dict[int, FlowEvent] = {}  # new events of this batch, for a repeated entry
    fresh: Fresh = []
    for i, event in enumerate(batch.events):
        if event.seq < expected:
            old = stored_at(event.seq) if event.seq < next_seq else earlier.get(event.seq)
            if old is None or not same(old, event):
                detail = f"stored {old.event_type} at {old.ts}" if old is not None else ""
                outcome.poison = SeqConflict(batch.flow_id, event.seq, detail)
                break
        elif event.seq == expected:
            earlier[event.seq] = event
            fresh.append((event, batch.bodies_of(i)))
            expected += 1
        else:
            outcome.poison = SeqGap(batch.flow_id, event.seq, expected)
            break
        outcome.accepted += 1
    return outcome, fresh
