"""Producer: the engine's side of the queue; ``emit`` is one round trip when the flow is busy."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from redis import Redis

from domain.events import Artifact, FlowEvent
from producer.config import QueueSettings
from producer.jobs import enqueue_drain, ingest_queue
from producer.scripts import Scripts
from producer.wire import Keys, encode_envelope, now_ms

log = logging.getLogger(__name__)

EMIT_MANY_CHUNK = 1000  # envelopes per Lua call (Lua's unpack limit is ~8000)


class Producer:
    def __init__(self, redis: Redis, settings: QueueSettings | None = None) -> None:
        self.redis = redis
        self.settings = settings or QueueSettings()
        self.keys = Keys(self.settings.key_prefix)
        self.scripts = Scripts.register(redis)
        self.queue = ingest_queue(redis, self.settings.queue_name)

    @classmethod
    def from_env(cls) -> Producer:
        settings = QueueSettings.from_env()
        return cls(Redis.from_url(settings.redis_url), settings)

    def encode(self, event: FlowEvent, artifacts: Sequence[Artifact] = ()) -> str:
        """Validate and serialize; raises InvalidEvent naming the field. Writes nothing."""
        return encode_envelope(event, artifacts, self.settings.max_envelope_bytes)

    def emit(self, event: FlowEvent, artifacts: Sequence[Artifact] | None = None) -> None:
        """Durable in Redis when this returns; a drain job is enqueued if the flow was idle."""
        envelope = self.encode(event, artifacts or ())
        self.send(str(event.flow_id), [envelope])

    def emit_many(self, events: Iterable[FlowEvent | tuple[FlowEvent, Sequence[Artifact]]]) -> int:
        """Validate every event first (all or nothing), then pipeline one Lua call per flow."""
        by_flow: dict[str, list[str]] = defaultdict(list)
        count = 0
        for item in events:
            event, artifacts = item if isinstance(item, tuple) else (item, ())
            by_flow[str(event.flow_id)].append(self.encode(event, artifacts))
            count += 1
        self.send_many(by_flow)
        return count

    def send(self, flow_id: str, envelopes: Sequence[str]) -> None:
        """Push already-encoded envelopes of one flow (in order)."""
        keys = [self.keys.queue(flow_id), self.keys.parked(flow_id), self.keys.pending]
        became_pending = self.scripts.emit(keys=keys, args=[flow_id, now_ms(), *envelopes])
        if became_pending == 1:
            enqueue_drain(self.queue, flow_id, self.keys.job(flow_id))

    def send_many(self, by_flow: dict[str, list[str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        calls: list[str] = []
        stamp = now_ms()
        for flow_id, envelopes in by_flow.items():
            keys = [self.keys.queue(flow_id), self.keys.parked(flow_id), self.keys.pending]
            for start in range(0, len(envelopes), EMIT_MANY_CHUNK):
                chunk = envelopes[start : start + EMIT_MANY_CHUNK]
                self.scripts.emit(keys=keys, args=[flow_id, stamp, *chunk], client=pipe)
                calls.append(flow_id)
        results = pipe.execute()
        for flow_id in {f for f, r in zip(calls, results, strict=True) if r == 1}:
            enqueue_drain(self.queue, flow_id, self.keys.job(flow_id))
