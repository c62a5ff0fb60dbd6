"""`chem-persistence replay FLOW`: read a flow from PostgreSQL and show its replayed state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.definition import FlowDefinition, StepDefinition, StepFailure
from chem_persistence.domain.events import (
    FlowEvent,
    FlowInitialized,
    MessageError,
    StepFailed,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.replay import FlowInstance, InMemoryFlowRepository


def _not_runnable(*_: Any) -> StepFailure:
    return StepFailure(MessageError("Internal", "an outline step cannot run"))


def outline_definition(events: Sequence[FlowEvent]) -> FlowDefinition:
    """A definition shaped after the recorded flow: its step count and the step ids it used.

    Replay needs only the number of steps and their ids; the code of the steps lives in the
    engine, not in the log.
    """
    count = 0
    ids: dict[int, str] = {}
    for event in events:
        kind = event.kind
        if isinstance(kind, FlowInitialized):
            count = max(count, kind.step_count)
        elif isinstance(kind, StepStarted | StepFinished | StepFailed | StepSignal):
            ids.setdefault(kind.step_index, kind.step_id)
            count = max(count, kind.step_index + 1)
    steps = tuple(
        StepDefinition(ids.get(i, f"step-{i}"), _not_runnable, source=i == 0) for i in range(count)
    )
    return FlowDefinition(steps)


def replay(events: Sequence[FlowEvent]) -> FlowInstance | None:
    if not events:
        return None
    return InMemoryFlowRepository.load(events[0].flow_id, events, outline_definition(events))


def as_json(events: Sequence[FlowEvent], instance: FlowInstance | None) -> dict[str, Any]:
    return {
        "flow_id": str(events[0].flow_id) if events else None,
        "completed": instance.completed if instance else False,
        "cursor": instance.cursor if instance else 0,
        "steps": [
            {
                "step_id": s.step_id,
                "state": s.state.value,
                "attempts": s.attempts,
                "fingerprint": s.fingerprint,
                "outputs": list(s.outputs),
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            }
            for s in (instance.steps if instance else ())
        ],
        "events": [
            {
                "seq": e.seq,
                "log_seq": e.log_seq,
                "ts": e.ts.isoformat(),
                "kind": encode_kind(e.kind),
            }
            for e in events
        ],
    }


def render(events: Sequence[FlowEvent], instance: FlowInstance | None) -> str:
    if instance is None:
        return "no events stored for this flow"
    state = "completed" if instance.completed else ("failed" if instance.failed else "in progress")
    lines = [f"flow {instance.flow_id}: {state}, {len(events)} events, cursor {instance.cursor}"]
    lines.append(f"\n{'#':>3} {'step':<16} {'state':<11} {'tries':>5}  fingerprint")
    for i, s in enumerate(instance.steps):
        fp = (s.fingerprint or "")[:16]
        lines.append(f"{i:>3} {s.step_id:<16} {s.state.value:<11} {s.attempts:>5}  {fp}")
    lines.append(f"\n{'pos':>4} {'log seq':>8}  {'ts':<32} event")
    for e in events:
        lines.append(f"{e.seq:>4} {e.log_seq or '':>8}  {e.ts.isoformat():<32} {e.event_type}")
    return "\n".join(lines)
