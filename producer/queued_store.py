"""QueuedEventStore: an EventStore for the engine that never waits on PostgreSQL.

It keeps the engine's state in memory (the reference store), so the engine decides its next
step at memory speed, and emits every event through the producer. ``wait_durable`` is the
read-your-writes barrier for the callers that need one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from domain.events import Artifact, FlowEvent, FlowEventKind
from domain.store import InMemoryEventStore, utc_now
from producer.producer import Producer

_POLL_START_SECONDS = 0.001
_POLL_MAX_SECONDS = 0.05


class FlowParked(RuntimeError):
    """The flow's head event was dead-lettered; later events wait for an operator."""

    def __init__(self, flow_id: UUID, reason: str) -> None:
        super().__init__(f"flow {flow_id} is parked: {reason}; see `chem-persistence dlq show`")
        self.flow_id = flow_id
        self.reason = reason


class QueuedEventStore:
    def __init__(self, producer: Producer, memory: InMemoryEventStore | None = None) -> None:
        self.producer = producer
        self.memory = memory or InMemoryEventStore()

    def append(
        self,
        flow_id: UUID,
        kind: FlowEventKind,
        ts: datetime | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> FlowEvent:
        """Validate, push to Redis, then record in memory: a failed emit changes nothing."""
        seq = len(self.memory.list(flow_id))
        event = FlowEvent(seq, flow_id, kind, ts or utc_now())
        envelope = self.producer.encode(event, artifacts)
        self.producer.send(str(flow_id), [envelope])
        self.memory.append_batch(flow_id, [event], {a.hash: a for a in artifacts})
        return event

    def list(self, flow_id: UUID) -> list[FlowEvent]:
        return self.memory.list(flow_id)

    def wait_durable(self, flow_id: UUID, timeout: float = 30.0) -> None:
        """Return once every event emitted for the flow is committed in PostgreSQL.

        A worker removes entries from the flow's queue only after their COMMIT, and the
        engine is the flow's only emitter, so an empty queue on an unparked flow means durable.
        Raises FlowParked if an event was dead-lettered, TimeoutError after ``timeout`` s.
        """
        keys = self.producer.keys
        flow = str(flow_id)
        deadline = time.monotonic() + timeout
        pause = _POLL_START_SECONDS
        while True:
            pipe = self.producer.redis.pipeline(transaction=False)
            pipe.llen(keys.queue(flow))
            pipe.get(keys.parked(flow))
            queued, parked = pipe.execute()
            if parked is not None:
                raise FlowParked(flow_id, parked.decode("utf-8", "replace"))
            if queued == 0:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"flow {flow_id}: {queued} events still queued after {timeout}s")
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_SECONDS)
