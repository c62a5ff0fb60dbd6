"""reconcile: re-enqueue the drain of every pending flow that nobody is draining.

A flow can be owed a drain with no job to do it: a worker was killed mid-drain (its lock
expires), the producer died between its Lua call and the rq enqueue, a drain job failed after
spending its retry budget. Every step here is idempotent, so killing it at any point is safe;
a drain enqueued twice is harmless (the second finds the lock held or the queue empty).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

from redis import Redis
from rq import Queue

from producer.jobs import enqueue_drain
from producer.wire import Keys

log = logging.getLogger(__name__)


def reconcile(redis: Redis, keys: Keys, queue: Queue, grace_seconds: float) -> list[str]:
    """Enqueue drains for flows pending longer than ``grace_seconds`` with no live lock.

    The flow's pending score is bumped to now, so the next pass leaves it alone for another
    grace period while its new job waits in the queue. Returns the flows re-enqueued.
    """
    now_ms = int(time.time() * 1000)
    cutoff = now_ms - int(grace_seconds * 1000)
    stale = [
        f.decode() for f in cast(list[bytes], redis.zrangebyscore(keys.pending, "-inf", cutoff))
    ]
    if not stale:
        return []
    pipe = redis.pipeline(transaction=False)
    for flow in stale:
        pipe.exists(keys.lock(flow))
        pipe.exists(keys.parked(flow))
    flags = pipe.execute()
    enqueued = []
    for i, flow in enumerate(stale):
        locked, parked = flags[2 * i], flags[2 * i + 1]
        if locked or parked:
            continue
        redis.zadd(keys.pending, {flow: now_ms}, xx=True)
        enqueue_drain(queue, flow)
        enqueued.append(flow)
    if enqueued:
        log.info("action=reconcile enqueued=%d stale=%d", len(enqueued), len(stale))
    return enqueued


class PeriodicReconciler(threading.Thread):
    """Runs reconcile every ``interval`` seconds until stopped (a daemon thread of the worker)."""

    def __init__(
        self, redis: Redis, keys: Keys, queue: Queue, interval: float, grace_seconds: float
    ) -> None:
        super().__init__(name="chem-reconcile", daemon=True)
        self.redis, self.keys, self.queue = redis, keys, queue
        self.interval, self.grace_seconds = interval, grace_seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                reconcile(self.redis, self.keys, self.queue, self.grace_seconds)
            except Exception:  # Redis away for a moment: try again next period
                log.exception("action=reconcile_failed")

    def stop(self) -> None:
        self.stopped.set()
