"""PgEventStore: the event log in PostgreSQL, with the reference semantics of InMemoryEventStore.

One transaction per call: a per-flow advisory lock, the flow's next position read under it,
stored events compared (identical → no-op, different → SeqConflict), the first new event at
exactly the next position (else SeqGap), then every new event and its artifact rows written
by ONE statement (``insert_events``: the batch travels as one JSON parameter).
``append_flows`` does the same for many flows in one transaction (eventlog/batch.py), each flow
judged alone: what a sweep commits for a whole claim.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from chem_persistence.domain.batches import FlowBatch, FlowOutcome
from chem_persistence.domain.errors import SeqConflict
from chem_persistence.domain.events import Artifact, FlowEvent, FlowEventKind, StepFinished
from chem_persistence.domain.store import (
    check_artifact_bodies,
    check_batch_shape,
    same_event,
    utc_now,
)
from chem_persistence.eventlog.batch import (
    LOCK_NAMESPACE,
    insert_events,
    rows_to_events,
    write_flows,
)
from chem_persistence.eventlog.errors import ErrorClass, classify, sqlstate_of
from chem_persistence.eventlog.queries import query
from chem_persistence.eventlog.retry import RetryPolicy


@dataclass(frozen=True)
class StoredArtifact:
    artifact_hash: str
    kind: str
    payload: Any
    metadata: Any
    produced_in_seq: int


class PgEventStore:
    def __init__(
        self,
        pool: ConnectionPool,
        *,
        no_artifact_insert: bool = False,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.pool = pool
        self.no_artifact_insert = no_artifact_insert
        self.retry = retry or RetryPolicy()
        self._on_retry = on_retry

    # --- writes -------------------------------------------------------------------------------

    def append(
        self,
        flow_id: UUID,
        kind: FlowEventKind,
        ts: datetime | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> FlowEvent:
        """Append at the flow's next position (assigned under the flow lock)."""
        event = FlowEvent(-1, flow_id, kind, _aware(ts or utc_now(), "ts"))
        bodies = {a.hash: a for a in artifacts}
        check_artifact_bodies(bodies)
        # The position an attempt wrote at, kept across retries: a retry after a COMMIT whose
        # outcome was unknown (connection lost) finds the event there instead of adding a copy.
        attempted: builtins.list[int] = []
        return self.retry.call(
            "append",
            lambda: self._write_assigned(flow_id, event, bodies, attempted),
            self._on_retry,
        )[0]

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> builtins.list[FlowEvent]:
        """Store events at their own positions, all or nothing; idempotent on (flow_id, seq)."""
        if not events:
            return []
        check_batch_shape(flow_id, events)
        bodies = dict(artifacts or {})
        check_artifact_bodies(bodies)
        for i, event in enumerate(events):
            _aware(event.ts, f"events[{i}].ts")
        batch = FlowBatch(flow_id, events, _first_carriers(events, bodies))

        def write() -> builtins.list[FlowEvent]:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                (outcome,) = write_flows(cur, [batch], artifacts=not self.no_artifact_insert)
                if outcome.poison is not None:
                    raise outcome.poison  # rolls the whole batch back
                return self._with_log_seqs(cur, flow_id, events, outcome)

        return self.retry.call("append_batch", write, self._on_retry)

    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> builtins.list[FlowOutcome]:
        """Many flows in ONE transaction (transient errors retried); each flow judged alone.

        A flow whose events cannot all be stored gets its accepted prefix stored and its poison
        reported; the other flows commit. Should the INSERT itself fail for good (data the
        server refuses, a size limit), the claim is split until the culprit stands alone.
        """
        if not batches:
            return []
        try:
            return self.retry.call(
                "append_flows", partial(self._write_flows, batches, before_commit), self._on_retry
            )
        except Exception as exc:
            if not _splittable(exc):
                raise
        if len(batches) > 1:
            half = len(batches) // 2
            first = self.append_flows(batches[:half], before_commit)
            return first + self.append_flows(batches[half:], before_commit)
        return [self._isolate(batches[0])]

    def _write_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> builtins.list[FlowOutcome]:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            outcomes = write_flows(cur, batches, artifacts=not self.no_artifact_insert)
            if before_commit is not None:
                before_commit()  # a seam for crash tests: inside the transaction, all written
            return outcomes

    def _isolate(self, batch: FlowBatch) -> FlowOutcome:
        """One flow whose INSERT fails: store its events one at a time up to the bad one."""
        outcome = FlowOutcome(batch.flow_id)
        for i, event in enumerate(batch.events):
            one = [FlowBatch(batch.flow_id, [event], [batch.bodies_of(i)])]
            try:
                (result,) = self.retry.call(
                    "append_flows", partial(self._write_flows, one), self._on_retry
                )
            except Exception as exc:
                if not _splittable(exc):
                    raise
                outcome.poison = exc
                return outcome
            outcome.stored += result.stored
            if result.poison is not None:
                outcome.poison = result.poison
                return outcome
            outcome.accepted += 1
        return outcome

    def _with_log_seqs(
        self,
        cur: psycopg.Cursor[Any],
        flow_id: UUID,
        events: Sequence[FlowEvent],
        outcome: FlowOutcome,
    ) -> builtins.list[FlowEvent]:
        """The batch as stored: the re-appended events as read, then the new rows."""
        new = {e.seq for e in outcome.stored}
        repeated = [e for e in events if e.seq not in new]
        return [*self._compare_stored(cur, flow_id, repeated), *outcome.stored]

    def _write_assigned(
        self,
        flow_id: UUID,
        event: FlowEvent,
        bodies: Mapping[str, Artifact],
        attempted: builtins.list[int],
    ) -> builtins.list[FlowEvent]:
        """``append``'s transaction: the event at the flow's next position, read under the
        flow's lock (so there is never a gap to check)."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(query("lock_flow"), {"namespace": LOCK_NAMESPACE, "flow_id": flow_id})
            cur.execute(query("next_position"), {"flow_id": flow_id})
            next_seq = _one(cur)
            if attempted and attempted[-1] < next_seq:  # did an earlier attempt commit?
                earlier = replace(event, seq=attempted[-1])
                stored = self._compare_stored(cur, flow_id, [earlier], raise_conflict=False)
                if stored:
                    return stored
            placed = replace(event, seq=next_seq)
            attempted.append(next_seq)
            carriers = _first_carriers([placed], bodies)
            return insert_events(
                cur, [(placed, carriers[0])], artifacts=not self.no_artifact_insert
            )

    def _compare_stored(
        self,
        cur: psycopg.Cursor[Any],
        flow_id: UUID,
        events: Sequence[FlowEvent],
        *,
        raise_conflict: bool = True,
    ) -> builtins.list[FlowEvent]:
        """The stored events at these positions; SeqConflict (or [] if not raise_conflict)
        when one differs."""
        if not events:
            return []
        params = {"flow_id": flow_id, "first": events[0].seq, "last": events[-1].seq}
        _payload_as_text(cur)
        cur.execute(query("events_in_range"), params)
        stored = rows_to_events(flow_id, cur.fetchall())
        for old, event in zip(stored, events, strict=True):
            if not same_event(old, event):
                if not raise_conflict:
                    return []
                raise SeqConflict(flow_id, event.seq, f"stored {old.event_type} at {old.ts}")
        return stored

    # --- reads --------------------------------------------------------------------------------

    def list(self, flow_id: UUID) -> builtins.list[FlowEvent]:
        """The flow in position order; ``seq`` = position, ``log_seq`` = event_log.seq."""
        return self.retry.call("list", lambda: self._list_once(flow_id), self._on_retry)

    def _list_once(self, flow_id: UUID) -> builtins.list[FlowEvent]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            _payload_as_text(cur)
            cur.execute(query("list_flow"), {"flow_id": flow_id})
            return rows_to_events(flow_id, cur.fetchall())

    def artifact(self, artifact_hash: str) -> StoredArtifact | None:
        def read() -> StoredArtifact | None:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(query("get_artifact"), {"artifact_hash": artifact_hash})
                row = cur.fetchone()
            return StoredArtifact(artifact_hash, *row) if row else None

        return self.retry.call("artifact", read, self._on_retry)

    def count_events(self, flow_ids: Sequence[UUID]) -> int:
        """How many events of these flows are stored."""
        return self._count("count_flows_events", flow_ids)

    def count_artifacts(self, flow_ids: Sequence[UUID]) -> int:
        """How many artifact rows were first produced by events of these flows."""
        return self._count("count_flows_artifacts", flow_ids)

    def count_stored_artifacts(self, hashes: Sequence[str]) -> int:
        """How many of these artifact hashes have a row (whoever produced them first)."""
        return self._count("count_artifacts_by_hash", hashes, "hashes")

    def _count(self, name: str, values: Sequence[object], param: str = "flow_ids") -> int:
        def read() -> int:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(query(name), {param: list(values)})
                return _one(cur)

        return self.retry.call(name, read, self._on_retry)

    def flow_ids(self) -> builtins.list[UUID]:
        def read() -> builtins.list[UUID]:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(query("flow_ids"))
                return [row[0] for row in cur.fetchall()]

        return self.retry.call("flow_ids", read, self._on_retry)


def _payload_as_text(cur: psycopg.Cursor[Any]) -> None:
    """Read jsonb columns as ``str``, decoded by ``_rows_to_events`` straight into the kinds
    (in C): replay's hot path. (The pool's sessions are in UTC: ts needs no conversion.)"""
    cur.adapters.register_loader("jsonb", TextLoader)


def _one(cur: psycopg.Cursor[Any]) -> int:
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _first_carriers(
    events: Sequence[FlowEvent], bodies: Mapping[str, Artifact]
) -> builtins.list[dict[str, Artifact]]:
    """Each event's share of a batch's bodies: a body goes with the first event that outputs
    its hash (the first producer, whose row it becomes)."""
    left = dict(bodies)
    shares: builtins.list[dict[str, Artifact]] = []
    for event in events:
        share: dict[str, Artifact] = {}
        if isinstance(event.kind, StepFinished):
            for h in event.kind.outputs:
                if h in left:
                    share[h] = left.pop(h)
        shares.append(share)
    return shares


def _splittable(exc: BaseException) -> bool:
    """Errors that a smaller transaction may not meet: data the server refuses (one event of
    the claim is the cause) or a size limit (the claim is too big)."""
    state = sqlstate_of(exc) or ""
    return classify(exc) is ErrorClass.PERMANENT or state.startswith("54")


def _aware(ts: datetime, field: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{field}: {ts!r} has no time zone; use an aware UTC datetime")
    return ts
