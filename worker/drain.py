"""The drainer: move one flow's queued events into PostgreSQL, in order, exactly once.

Protocol (see DESIGN §4):
1. take the flow's lock (SET NX PX, owner token), or return: the holder will see new events;
2. unless the flow is parked, loop: read a batch (LRANGE) → append it in ONE transaction →
   ack it (LTRIM, fenced by the token) only after COMMIT;
3. when the queue is empty, atomically "if still empty: clear the pending mark and the lock".

A worker killed after COMMIT and before the ack leaves the batch queued: the next drain
re-appends it, and the idempotency key (flow_id, flow_seq) makes that a no-op. An event that
can never be stored is moved to the flow's dead letters and the flow is parked.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast
from uuid import UUID

from redis import Redis
from rq import Queue

from domain.events import Artifact, FlowEvent
from eventlog.errors import ErrorClass, classify
from producer.jobs import enqueue_drain
from producer.scripts import Scripts
from producer.wire import InvalidEvent, Keys, decode_envelope, now_ms
from worker import faults, metrics
from worker.config import WorkerSettings
from worker.deadletters import make_record, printable

log = logging.getLogger(__name__)


class BatchStore(Protocol):
    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> list[FlowEvent]: ...


class LockLost(RuntimeError):
    """Another drainer owns the flow now (ours expired): stop without touching its queue."""


@dataclass(frozen=True)
class DrainResult:
    outcome: str  # drained | busy | parked | handed_over
    appended: int = 0

    def as_dict(self) -> dict[str, str | int]:
        return {"outcome": self.outcome, "appended": self.appended}


@dataclass(frozen=True)
class _Poison:
    entry: bytes
    error: BaseException
    position: int | None


class Drainer:
    def __init__(
        self,
        redis: Redis,
        store: BatchStore,
        keys: Keys,
        scripts: Scripts,
        queue: Queue,
        settings: WorkerSettings,
    ) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self.scripts = scripts
        self.queue = queue
        self.settings = settings
        self.kill_after_commit = faults.kill_after_commit_probability()

    def drain(self, flow_id: str) -> DrainResult:
        token = secrets.token_hex(16)
        lock = self.keys.lock(flow_id)
        if not self.redis.set(lock, token, nx=True, px=self.settings.lock_ttl_ms):
            return self._done(DrainResult("busy"))
        try:
            result = self._drain_locked(flow_id, token)
        except BaseException:
            self._release(flow_id, token, "keep")  # leave it pending: reconcile takes over
            raise
        return self._done(result)

    def _drain_locked(self, flow_id: str, token: str) -> DrainResult:
        if self.redis.exists(self.keys.parked(flow_id)):
            self._release(flow_id, token, "parked")
            return DrainResult("parked")
        flow_uuid = UUID(flow_id)
        deadline = time.monotonic() + self.settings.drain_slice_seconds
        appended = 0
        while True:
            entries = cast(
                list[bytes],
                self.redis.lrange(self.keys.queue(flow_id), 0, self.settings.batch_size - 1),
            )
            if not entries:
                released = self._release(flow_id, token, "empty")
                if released == 1:
                    return DrainResult("drained", appended)
                if released == -1:
                    raise LockLost(f"flow {flow_id}: lock lost before release")
                continue  # a producer pushed meanwhile
            count, poison = self._apply(flow_uuid, entries)
            faults.maybe_kill(self.kill_after_commit)
            if count:
                self._ack(flow_id, token, count)
                appended += count
            if poison is not None:
                self._dead_letter(flow_id, token, poison)
                return DrainResult("parked", appended)
            if time.monotonic() >= deadline:
                # Fairness: give the worker to other flows; this one stays pending.
                self._release(flow_id, token, "keep")
                enqueue_drain(self.queue, flow_id, self.keys.job(flow_id))
                return DrainResult("handed_over", appended)

    def _apply(self, flow_id: UUID, entries: list[bytes]) -> tuple[int, _Poison | None]:
        """Commit the longest valid prefix of ``entries``; return its length and the poison."""
        events: list[FlowEvent] = []
        own_bodies: list[dict[str, Artifact]] = []  # each event's own, to blame the right one
        bodies: dict[str, Artifact] = {}
        poison: _Poison | None = None
        for entry in entries:
            try:
                event, event_bodies = decode_envelope(entry)
                if event.flow_id != flow_id:
                    raise InvalidEvent(
                        "flow_id", str(event.flow_id), f"queued under flow {flow_id}"
                    )
            except InvalidEvent as exc:
                poison = _Poison(entry, exc, None)
                break
            events.append(event)
            own_bodies.append(event_bodies)
            bodies.update(event_bodies)
        if not events:
            return 0, poison
        try:
            self._append(flow_id, events, bodies)
            return len(events), poison
        except Exception as exc:
            if classify(exc) is not ErrorClass.PERMANENT:
                raise  # transient budget spent, or unexpected: fail the job, keep the events
            if len(events) == 1:
                return 0, _Poison(entries[0], exc, events[0].seq)
        # A permanent error somewhere in the batch: find the first bad event, one at a time.
        for i, event in enumerate(events):
            try:
                self._append(flow_id, [event], own_bodies[i])
            except Exception as exc:
                if classify(exc) is not ErrorClass.PERMANENT:
                    if i:
                        return i, None  # ack what is committed; the error comes back next time
                    raise
                return i, _Poison(entries[i], exc, event.seq)
        return len(events), poison

    def _append(self, flow_id: UUID, events: list[FlowEvent], bodies: dict[str, Artifact]) -> None:
        started = time.monotonic()
        self.store.append_batch(flow_id, events, bodies)
        committed = time.time()
        metrics.APPEND_SECONDS.observe(time.monotonic() - started)
        metrics.BATCH_SIZE.observe(len(events))
        metrics.EVENTS_APPENDED.inc(len(events))
        for event in events:
            metrics.EMIT_TO_DURABLE_SECONDS.observe(max(0.0, committed - event.ts.timestamp()))

    def _ack(self, flow_id: str, token: str, count: int) -> None:
        keys = [self.keys.queue(flow_id), self.keys.lock(flow_id)]
        if self.scripts.ack(keys=keys, args=[token, count, self.settings.lock_ttl_ms]) != 1:
            raise LockLost(f"flow {flow_id}: lock lost after COMMIT; the next drain re-acks")

    def _dead_letter(self, flow_id: str, token: str, poison: _Poison) -> None:
        reason = printable(
            f"{type(poison.error).__name__} at position {poison.position}: {poison.error}"
        )
        record = make_record(poison.entry, poison.error, poison.position)
        keys = [
            *self.keys.flow_keys(flow_id),
            self.keys.pending,
            self.keys.parked_index,
        ]
        now = now_ms()
        args: list[bytes | str | int] = [token, poison.entry, record, reason[:1000], flow_id, now]
        result = self.scripts.deadletter(keys=keys, args=args)
        if result != 1:
            raise LockLost(f"flow {flow_id}: could not dead-letter (code {result})")
        metrics.DEAD_LETTERS.labels(type(poison.error).__name__).inc()
        log.error(
            "action=dead_letter flow=%s position=%s reason=%s",
            flow_id,
            poison.position,
            type(poison.error).__name__,
        )

    def _release(self, flow_id: str, token: str, mode: str) -> int:
        keys = [self.keys.queue(flow_id), self.keys.lock(flow_id), self.keys.pending]
        try:
            return int(self.scripts.release(keys=keys, args=[token, flow_id, mode]))
        except Exception:
            if mode != "keep":
                raise
            log.warning("action=release_failed flow=%s (the lock will expire)", flow_id)
            return -1

    @staticmethod
    def _done(result: DrainResult) -> DrainResult:
        metrics.DRAINS.labels(result.outcome).inc()
        return result
