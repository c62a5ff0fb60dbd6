"""The EventStore protocol and its reference implementation, InMemoryEventStore.

Every other store (PostgreSQL, the queue-backed one) is tested against these semantics:
positions are 0-based per flow; ``append_batch`` is idempotent on (flow_id, seq) — an identical
re-append is a no-op that returns the stored events, a different event at an occupied position
raises SeqConflict, a position past the next free one raises SeqGap.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from chem_persistence.domain.batches import FlowBatch, FlowOutcome, judge
from chem_persistence.domain.equality import stored_form
from chem_persistence.domain.errors import ArtifactHashMismatch, SeqConflict, SeqGap
from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    PropertyPreferenceAssigned,
    StepFinished,
    StepSignal,
)


def utc_now() -> datetime:
    """The emit time: timezone-aware UTC, to the microsecond (what PostgreSQL keeps)."""
    return datetime.now(UTC)


class EventStore(Protocol):
    def append(
        self,
        flow_id: UUID,
        kind: FlowEventKind,
        ts: datetime | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> FlowEvent: ...

    def list(self, flow_id: UUID) -> list[FlowEvent]: ...


def check_batch_shape(flow_id: UUID, events: Sequence[FlowEvent]) -> None:
    """A batch is one flow's events at consecutive positions; anything else is a caller bug."""
    for i, event in enumerate(events):
        if event.flow_id != flow_id:
            raise ValueError(f"events[{i}].flow_id: {event.flow_id} is not the batch's {flow_id}")
        if event.seq < 0:
            raise ValueError(f"events[{i}].seq: {event.seq} is negative; positions start at 0")
        if i and event.seq != events[i - 1].seq + 1:
            raise SeqGap(flow_id, event.seq, events[i - 1].seq + 1)


def check_artifact_bodies(artifacts: Mapping[str, Artifact]) -> None:
    for claimed, body in artifacts.items():
        if body.hash != claimed:
            raise ArtifactHashMismatch(claimed, body.hash)


def same_event(stored: FlowEvent, new: FlowEvent) -> bool:
    """Whether ``new`` is an identical re-append of ``stored``: the same instant and the same
    payload as storage keeps it, type for type (``codec.stored_form``: ``1``, ``1.0`` and
    ``true`` differ, key order does not matter, ``-0.0`` is ``0.0``). Not Python ``==``,
    where ``True == 1 == 1.0``: a different event must never pass for a re-append."""
    if stored.ts != new.ts or type(stored.kind) is not type(new.kind):
        return False
    if stored.kind == new.kind and _plain(stored.kind) and _plain(new.kind):
        return True  # no JSON value: == on ints and strings (checked types) is exact
    return stored_form(stored.kind) == stored_form(new.kind)


def _plain(kind: FlowEventKind) -> bool:
    return not isinstance(kind, StepSignal | PropertyPreferenceAssigned)


class InMemoryEventStore:
    """The engine's in-memory store: the reference semantics. Thread-safe."""

    def __init__(self) -> None:
        self._flows: dict[UUID, list[FlowEvent]] = {}
        self._artifacts: dict[str, Artifact | None] = {}  # first producer wins
        self._lock = threading.RLock()  # re-entrant: append holds it across append_batch

    def append(
        self,
        flow_id: UUID,
        kind: FlowEventKind,
        ts: datetime | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> FlowEvent:
        with self._lock:  # held until stored: two appends to one flow never share a position
            seq = len(self._flows.get(flow_id, ()))
            event = FlowEvent(seq, flow_id, kind, ts or utc_now())
            return self.append_batch(flow_id, [event], {a.hash: a for a in artifacts})[0]

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> list[FlowEvent]:
        bodies = artifacts or {}
        check_batch_shape(flow_id, events)
        check_artifact_bodies(bodies)
        with self._lock:
            stored = self._flows.get(flow_id, [])
            next_seq = len(stored)
            new = [e for e in events if e.seq >= next_seq]
            if new and new[0].seq != next_seq:
                raise SeqGap(flow_id, new[0].seq, next_seq)
            existing = [stored[e.seq] for e in events[: len(events) - len(new)]]
            for old, event in zip(existing, events, strict=False):
                if not same_event(old, event):
                    raise SeqConflict(flow_id, event.seq)
            # everything validated: apply all of it (a flow exists once it has an event)
            if new:
                self._flows[flow_id] = stored
            for event in new:
                stored.append(event)
                if isinstance(event.kind, StepFinished):
                    for output in event.kind.outputs:
                        self._artifacts.setdefault(output, bodies.get(output))
            return [*existing, *new]

    def flow_ids(self) -> list[UUID]:
        with self._lock:
            return list(self._flows)

    def artifact(self, artifact_hash: str) -> Artifact | None:
        with self._lock:
            return self._artifacts.get(artifact_hash)

    def list(self, flow_id: UUID) -> list[FlowEvent]:
        with self._lock:
            return list(self._flows.get(flow_id, ()))

    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> builtins.list[FlowOutcome]:
        """Many flows at once, each judged alone (domain/batches.py): the reference of
        PgEventStore.append_flows. ``before_commit`` runs once everything is decided."""
        with self._lock:
            plans = []
            for batch in batches:
                stored = self._flows.get(batch.flow_id, [])
                outcome, fresh = judge(batch, len(stored), stored.__getitem__, same_event)
                plans.append((outcome, fresh))
            if before_commit is not None:
                before_commit()
            for outcome, fresh in plans:
                for event, bodies in fresh:
                    self.append_batch(outcome.flow_id, [event], dict(bodies))
                outcome.stored = [event for event, _ in fresh]
            return [outcome for outcome, _ in plans]

    def forget(self, flow_id: UUID) -> None:
        """Drop a flow's events from memory (its artifacts stay: other flows may share them)."""
        with self._lock:
            self._flows.pop(flow_id, None)
