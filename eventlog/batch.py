"""Many flows in ONE transaction: what a sweep commits for everything it claimed.

``write_flows`` runs inside the caller's transaction: the flows' advisory locks in one fixed
order, their next positions in one query, the stored events compared for re-appends in one
query, then every new event of every flow and their artifact rows in one statement. Each flow
is judged alone: the leading events that can be stored are (identical re-appends count as
stored), and the first one that cannot is returned as that flow's poison, with the error the
in-memory store would raise (SeqConflict, SeqGap), without stopping the other flows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.string import TextLoader

from domain.codec import decode_kind, encode_kind
from domain.errors import SeqConflict, SeqGap
from domain.events import Artifact, FlowEvent, StepFinished
from domain.json_values import dumps
from domain.store import same_event
from eventlog.queries import query

LOCK_NAMESPACE = 0x63686D31  # "chm1": the first key of every per-flow advisory lock
UNKNOWN_ARTIFACT_KIND = "unknown"


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
    """``accepted`` leading events are stored (``stored``: the rows this call inserted);
    ``poison`` is the error of ``events[accepted]`` when not every event was accepted."""

    flow_id: UUID
    accepted: int = 0
    stored: list[FlowEvent] = field(default_factory=list)
    poison: Exception | None = None


def write_flows(
    cur: psycopg.Cursor[Any], batches: Sequence[FlowBatch], *, artifacts: bool = True
) -> list[FlowOutcome]:
    """Store what can be stored of each flow, inside the caller's transaction."""
    flow_ids = [b.flow_id for b in batches]
    if len(set(flow_ids)) != len(flow_ids):
        raise ValueError("write_flows: one batch per flow")
    cur.execute(query("lock_flows"), {"namespace": LOCK_NAMESPACE, "flow_ids": flow_ids})
    cur.execute(query("next_positions"), {"flow_ids": flow_ids})
    next_of: dict[UUID, int] = {row[0]: int(row[1]) for row in cur.fetchall()}
    stored_of = _stored_for_reappends(cur, batches, next_of)
    outcomes: list[FlowOutcome] = []
    new: list[tuple[FlowEvent, Mapping[str, Artifact]]] = []
    for batch in batches:
        outcome, fresh = _judge(batch, next_of[batch.flow_id], stored_of)
        outcomes.append(outcome)
        new += fresh
    if new:
        inserted = insert_events(cur, new, artifacts=artifacts)
        by_flow = {o.flow_id: o for o in outcomes}
        for event in inserted:
            by_flow[event.flow_id].stored.append(event)
    return outcomes


def insert_events(
    cur: psycopg.Cursor[Any],
    events: Sequence[tuple[FlowEvent, Mapping[str, Artifact]]],
    *,
    artifacts: bool = True,
) -> list[FlowEvent]:
    """INSERT these events (and their artifact rows) in one statement; the stored events."""
    params = {
        "events": _events_json(events, artifacts),
        "artifacts": artifacts,
        "unknown_kind": UNKNOWN_ARTIFACT_KIND,
    }
    cur.execute(query("insert_events"), params)
    log_seq = {(row[1], int(row[2])): int(row[0]) for row in cur.fetchall()}
    return [
        FlowEvent(e.seq, e.flow_id, e.kind, e.ts, log_seq[(e.flow_id, e.seq)]) for e, _ in events
    ]


def _judge(
    batch: FlowBatch, next_seq: int, stored: Mapping[tuple[UUID, int], FlowEvent]
) -> tuple[FlowOutcome, list[tuple[FlowEvent, Mapping[str, Artifact]]]]:
    outcome = FlowOutcome(batch.flow_id)
    expected = next_seq
    earlier: dict[int, FlowEvent] = {}  # new events of this batch, for a repeated entry
    fresh: list[tuple[FlowEvent, Mapping[str, Artifact]]] = []
    for i, event in enumerate(batch.events):
        if event.seq < expected:
            old = stored.get((batch.flow_id, event.seq)) or earlier.get(event.seq)
            if old is None or not same_event(old, event):
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


def _stored_for_reappends(
    cur: psycopg.Cursor[Any], batches: Sequence[FlowBatch], next_of: Mapping[UUID, int]
) -> dict[tuple[UUID, int], FlowEvent]:
    """The stored events at the positions the batches repeat (usually none: one query)."""
    flows, firsts, lasts = [], [], []
    for batch in batches:
        below = [e.seq for e in batch.events if e.seq < next_of[batch.flow_id]]
        if below:
            flows.append(batch.flow_id)
            firsts.append(min(below))
            lasts.append(max(below))
    if not flows:
        return {}
    cur.adapters.register_loader("jsonb", TextLoader)
    cur.execute(query("stored_in_ranges"), {"flow_ids": flows, "firsts": firsts, "lasts": lasts})
    return {(row[0], int(row[2])): row_to_event(row[0], row[1:]) for row in cur.fetchall()}


def row_to_event(flow_id: UUID, row: Sequence[Any]) -> FlowEvent:
    """An event_log row (seq, flow_seq, ts, payload as JSON text) as a FlowEvent."""
    log_seq, flow_seq, ts, payload = row
    kind = decode_kind(json.loads(payload))
    return FlowEvent(flow_seq, flow_id, kind, ts.astimezone(UTC), log_seq)


def _events_json(
    events: Sequence[tuple[FlowEvent, Mapping[str, Artifact]]], artifacts: bool
) -> str:
    """The ``%(events)s`` parameter of insert_events: payloads written once, as the engine
    serializes them, parsed once by the server. A body goes with the event that carries it."""
    items = []
    for event, bodies in events:
        carried = _bodies_json(event, bodies) if artifacts else "{}"
        items.append(
            f'["{event.flow_id}",{event.seq},"{event.ts.isoformat()}","{event.event_type}",'
            f"{dumps(encode_kind(event.kind))},{carried}]"
        )
    return "[" + ",".join(items) + "]"


def _bodies_json(event: FlowEvent, bodies: Mapping[str, Artifact]) -> str:
    """``{hash: [kind, payload, metadata]}`` of the bodies this event's outputs have."""
    if not bodies or not isinstance(event.kind, StepFinished):
        return "{}"
    items = [
        f"{json.dumps(h)}:[{json.dumps(bodies[h].kind, ensure_ascii=False)},"
        f"{dumps(bodies[h].payload)},{dumps(bodies[h].metadata)}]"
        for h in dict.fromkeys(event.kind.outputs)
        if h in bodies
    ]
    return "{" + ",".join(items) + "}"
