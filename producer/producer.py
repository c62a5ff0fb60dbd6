"""Producer: the engine's side of the queue. ``emit`` is one EVALSHA; an rq job is enqueued
only when no sweep is queued or running (the script says so and names the job).

Redis connection errors are retried here, with the same envelopes, for up to
``emit_retry_seconds``: every script is safe to run twice (a reply lost after Redis ran it),
so retrying can neither lose nor duplicate an event. redis-py's own retries stay on too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import redis.exceptions
from redis import Redis
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from chem_persistence.domain.events import Artifact, FlowEvent
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import (
    EMIT_MAX_SWEEPS,
    QUEUED_SWEEP_TTL_MS,
    enqueue_sweep,
    ingest_queue,
)
from chem_persistence.producer.keys import Keys, ShardKeys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import encode_envelope

log = logging.getLogger(__name__)

EMIT_MANY_CHUNK = 1000  # envelopes per Lua call (Lua's unpack limit is ~8000)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class EmitFailed(RuntimeError):
    """Redis did not confirm the emit in time; the event may or may not be queued.

    Emitting the same envelope again is always safe (see QueuedEventStore, which does).
    """


class Producer:
    def __init__(self, redis: Redis, settings: QueueSettings | None = None) -> None:
        self.redis = redis
        self.settings = settings or QueueSettings()
        self.keys = Keys(self.settings.key_prefix, self.settings.shards)
        self.scripts = Scripts.register(redis)
        self.queue = ingest_queue(redis, self.settings.queue_name)

    @classmethod
    def from_env(cls) -> Producer:
        settings = QueueSettings.from_env()
        return cls(settings.redis(), settings)

    def encode(self, event: FlowEvent, artifacts: Sequence[Artifact] = ()) -> str:
        """Validate and serialize; raises InvalidEvent naming the field. Writes nothing."""
        return encode_envelope(event, artifacts, self.settings.max_envelope_bytes)

    def emit(self, event: FlowEvent, artifacts: Sequence[Artifact] | None = None) -> None:
        """Queued in Redis when this returns (EmitFailed if Redis could not confirm it)."""
        envelope = self.encode(event, artifacts or ())
        self.send(str(event.flow_id), [envelope])

    def emit_many(self, events: Iterable[FlowEvent | tuple[FlowEvent, Sequence[Artifact]]]) -> int:
        """Validate every event first (all or nothing), then pipeline one Lua call per flow.

        Each flow's events go in the order given.
        """
        by_flow: dict[str, list[str]] = defaultdict(list)
        count = 0
        for item in events:
            event, artifacts = item if isinstance(item, tuple) else (item, ())
            by_flow[str(event.flow_id)].append(self.encode(event, artifacts))
            count += 1
        self._retrying(lambda: self._send_many(by_flow))
        return count

    def send(self, flow_id: str, envelopes: Sequence[str]) -> None:
        """Push already-encoded envelopes of one flow, in order."""
        shard = self.keys.for_flow(flow_id)
        result = self._retrying(
            lambda: self.scripts.emit(
                keys=_emit_keys(shard), args=_emit_args(shard, flow_id, envelopes)
            )
        )
        self._start_sweep(result, shard)

    def _send_many(self, by_flow: dict[str, list[str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        shards: list[ShardKeys] = []
        for flow_id, envelopes in by_flow.items():
            shard = self.keys.for_flow(flow_id)
            for start in range(0, len(envelopes), EMIT_MANY_CHUNK):
                chunk = envelopes[start : start + EMIT_MANY_CHUNK]
                args = _emit_args(shard, flow_id, chunk)
                self.scripts.emit(keys=_emit_keys(shard), args=args, client=pipe)
                shards.append(shard)
        for shard, result in zip(shards, pipe.execute(), strict=True):
            self._start_sweep(result, shard)

    def _start_sweep(self, result: object, shard: ShardKeys) -> None:
        """Enqueue the sweep the script registered, if it did. Best effort: the events are
        queued already, and a registration whose job never arrives lapses and is renewed."""
        if not isinstance(result, bytes):
            return
        try:
            enqueue_sweep(self.queue, result.decode(), shard.shard)
        except REDIS_ERRORS as exc:
            log.warning(
                "action=enqueue_sweep_failed shard=%d error=%s (recovery will start it)",
                shard.shard,
                type(exc).__name__,
            )

    def _retrying(self, call: Any) -> Any:
        try:
            return call()  # the common case: no retry machinery on the hot path
        except REDIS_ERRORS as first:
            log.warning("action=emit_retry error=%s", type(first).__name__)
        retrying = Retrying(
            retry=retry_if_exception_type(REDIS_ERRORS),
            stop=stop_after_delay(self.settings.emit_retry_seconds),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            reraise=True,
        )
        try:
            return retrying(call)
        except REDIS_ERRORS as exc:
            raise EmitFailed(
                f"Redis did not confirm the emit within {self.settings.emit_retry_seconds:g}s"
                f" ({type(exc).__name__}); check REDIS_URL and that Redis is up"
            ) from exc


def _emit_keys(shard: ShardKeys) -> list[str]:
    return [shard.ready, shard.leased, shard.sweeps, shard.wake]


def _emit_args(shard: ShardKeys, flow_id: str, envelopes: Sequence[str]) -> list[str | int]:
    return [shard.base, flow_id, QUEUED_SWEEP_TTL_MS, EMIT_MAX_SWEEPS, *envelopes]
