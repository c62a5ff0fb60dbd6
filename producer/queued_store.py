"""QueuedEventStore: an EventStore for the engine that never waits on PostgreSQL.

It keeps the engine's state in memory (the reference store), so the engine decides its next
step at memory speed, and emits every event through the producer. Once an event is recorded
here it counts as emitted: if Redis could not confirm it (``EmitFailed``), the same envelope
is sent again before the flow's next event (and by ``flush``), never a new one with another
timestamp. ``wait_durable`` is the read-your-writes barrier for the callers that need one.

An engine restart is a new QueuedEventStore: given the durable store (``durable``, anything
with ``list(flow_id)``, e.g. PgEventStore), a flow it has not seen is loaded from what is
still queued in Redis plus what PostgreSQL holds, and continues at the right position.
``forget`` drops a finished flow from memory.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, cast
from uuid import UUID

from chem_persistence.domain.events import Artifact, FlowEvent, FlowEventKind
from chem_persistence.domain.store import InMemoryEventStore, utc_now
from chem_persistence.producer.dead_letter import entry_of, parse_record
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.wire import decode_envelope

_POLL_START_SECONDS = 0.001
_POLL_MAX_SECONDS = 0.05


class FlowParked(RuntimeError):
    """The flow's head event was dead-lettered; later events wait for an operator."""

    def __init__(self, flow_id: UUID, reason: str) -> None:
        super().__init__(f"flow {flow_id} is parked: {reason}; see `chem-persistence dlq show`")
        self.flow_id = flow_id
        self.reason = reason


class DurableReader(Protocol):
    def list(self, flow_id: UUID) -> list[FlowEvent]: ...


class QueuedEventStore:
    def __init__(
        self,
        producer: Producer,
        memory: InMemoryEventStore | None = None,
        durable: DurableReader | None = None,
    ) -> None:
        self.producer = producer
        self.memory = memory or InMemoryEventStore()
        self.durable = durable
        self._unconfirmed: dict[UUID, list[str]] = {}  # flow -> envelopes not confirmed
        self._loaded: set[UUID] = set()
        self._lock = threading.RLock()

    def append(
        self,
        flow_id: UUID,
        kind: FlowEventKind,
        ts: datetime | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> FlowEvent:
        """Validate, record in memory, push to Redis. InvalidEvent changes nothing;
        EmitFailed means the event IS recorded and will be re-sent, identical."""
        with self._lock:
            self._load(flow_id)
            self.flush(flow_id)  # an earlier unconfirmed event goes first, or nothing does
            seq = len(self.memory.list(flow_id))
            event = FlowEvent(seq, flow_id, kind, ts or utc_now())
            envelope = self.producer.encode(event, artifacts)
            self.memory.append_batch(flow_id, [event], {a.hash: a for a in artifacts})
            self._unconfirmed.setdefault(flow_id, []).append(envelope)
            self.flush(flow_id)
            return event

    def flush(self, flow_id: UUID | None = None) -> None:
        """Send again what Redis has not confirmed (one flow, or all); EmitFailed if it still
        cannot."""
        with self._lock:
            flows = [flow_id] if flow_id is not None else list(self._unconfirmed)
            for flow in flows:
                pending = self._unconfirmed.get(flow)
                if not pending:
                    continue
                self.producer.send(str(flow), pending)
                del self._unconfirmed[flow]

    def list(self, flow_id: UUID) -> builtins.list[FlowEvent]:
        with self._lock:
            self._load(flow_id)
            return self.memory.list(flow_id)

    def forget(self, flow_id: UUID) -> None:
        """Drop a flow from memory (e.g. once it completed and is durable); a later use loads
        it again from Redis and PostgreSQL when ``durable`` is set."""
        with self._lock:
            if self._unconfirmed.get(flow_id):
                raise RuntimeError(f"flow {flow_id}: unconfirmed events; flush() first")
            self.memory.forget(flow_id)
            self._loaded.discard(flow_id)

    def _load(self, flow_id: UUID) -> None:
        """First use of a flow by this process: what is queued, then what is durable."""
        if self.durable is None or flow_id in self._loaded or self.memory.list(flow_id):
            return
        queued = self.queued(flow_id)  # read before PostgreSQL: a sweep may move them meanwhile
        stored = self.durable.list(flow_id)
        events = {e.seq: e for e in stored}
        bodies: dict[str, Artifact] = {}
        for event, event_bodies in queued:
            events.setdefault(event.seq, event)
            bodies.update(event_bodies)
        ordered = [events[s] for s in sorted(events)]
        if ordered:
            plain = [FlowEvent(e.seq, e.flow_id, e.kind, e.ts) for e in ordered]
            self.memory.append_batch(flow_id, plain, bodies)
        self._loaded.add(flow_id)

    def queued(self, flow_id: UUID) -> builtins.list[tuple[FlowEvent, dict[str, Artifact]]]:
        """The flow's events still in Redis (dead letters first, then the queue)."""
        shard = self.producer.keys.for_flow(str(flow_id))
        pipe = self.producer.redis.pipeline(transaction=False)
        pipe.lrange(shard.dead(str(flow_id)), 0, -1)
        pipe.lrange(shard.queue(str(flow_id)), 0, -1)
        dead, queue = cast(list[list[bytes]], pipe.execute())
        records = [parse_record(r) for r in dead]
        entries = [entry_of(r) for r in records if r is not None] + queue
        result = []
        for entry in entries:
            try:
                result.append(decode_envelope(entry))
            except ValueError:
                continue  # a malformed entry is the worker's to dead-letter, not a position
        return result

    def wait_durable(self, flow_id: UUID, timeout: float = 30.0) -> None:
        """Return once every event emitted for the flow is committed in PostgreSQL.

        A sweep removes entries from the flow's queue only after their COMMIT, and the
        engine is the flow's only emitter, so an empty queue on an unparked flow means durable.
        Raises FlowParked if an event was dead-lettered, TimeoutError after ``timeout`` s.
        """
        shard = self.producer.keys.for_flow(str(flow_id))
        flow = str(flow_id)
        deadline = time.monotonic() + timeout
        pause = _POLL_START_SECONDS
        while True:
            self.flush(flow_id)
            pipe = self.producer.redis.pipeline(transaction=False)
            pipe.llen(shard.queue(flow))
            pipe.get(shard.reason(flow))
            queued, parked = pipe.execute()
            if parked is not None:
                raise FlowParked(flow_id, parked.decode("utf-8", "replace"))
            if queued == 0:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"flow {flow_id}: {queued} events still queued after {timeout}s")
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_SECONDS)
