"""Many flows in ONE transaction: what a sweep commits for everything it claimed.

``write_flows`` runs inside the caller's transaction: the flows' advisory locks in one fixed
order, their next positions in one query, the stored events compared for re-appends in one
query, then every new event of every flow and their artifact rows in one statement. Each flow
is judged alone, as the in-memory store judges it (domain/batches.py): its leading events that
can be stored are, and the first one that cannot is its poison, without stopping the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.string import TextLoader

from chem_persistence.domain.batches import FlowBatch, FlowOutcome, judge
from chem_persistence.domain.codec import decode_stored_kinds, kind_json
from chem_persistence.domain.events import Artifact, FlowEvent, StepFinished
from chem_persistence.domain.json_values import dumps
from chem_persistence.domain.store import same_event
from chem_persistence.eventlog.queries import query

LOCK_NAMESPACE = 0x63686D31  # "chm1": the first key of every per-flow advisory lock
UNKNOWN_ARTIFACT_KIND = "unknown"


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
        outcome, fresh = judge(
            batch, next_of[batch.flow_id], partial(_stored_at, stored_of, batch.flow_id), same_event
        )
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


def _stored_at(
    stored: Mapping[tuple[UUID, int], FlowEvent], flow_id: UUID, seq: int
) -> FlowEvent | None:
    return stored.get((flow_id, seq))


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
    stored: dict[tuple[UUID, int], FlowEvent] = {}
    for row in cur.fetchall():
        (event,) = rows_to_events(row[0], [row[1:]])
        stored[(row[0], event.seq)] = event
    return stored


def rows_to_events(flow_id: UUID, rows: Sequence[Sequence[Any]]) -> list[FlowEvent]:
    """event_log rows (seq, flow_seq, ts, payload as JSON text) of one flow as FlowEvents,
    the payloads decoded in one batch, in C (the pool's sessions are in UTC)."""
    kinds = decode_stored_kinds([row[3] for row in rows])
    return [
        FlowEvent(flow_seq, flow_id, kind, ts if ts.tzinfo is UTC else ts.astimezone(UTC), log_seq)
        for (log_seq, flow_seq, ts, _), kind in zip(rows, kinds, strict=True)
    ]


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
            f"{kind_json(event.kind).decode()},{carried}]"
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
