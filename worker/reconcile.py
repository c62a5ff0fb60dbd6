"""reconcile: re-enqueue the drain of every pending flow that nobody is draining.

A flow can be owed a drain with no job to do it: a worker was killed mid-drain (its lock
expires), the producer died between its Lua call and the rq enqueue, a drain job failed after
spending its retry budget. Every step here is idempotent, so killing it at any point is safe;
a drain enqueued twice is harmless (the second finds the lock held or the queue empty).
"""

from __future__ import annotations

import logging
import threading
from typing import cast

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer.jobs import enqueue_drain
from producer.wire import Keys, now_ms

log = logging.getLogger(__name__)


def reconcile(redis: Redis, keys: Keys, queue: Queue, grace_seconds: float) -> list[str]:
    """Enqueue drains for flows pending longer than ``grace_seconds`` with no live lock.

    A flow whose last drain job is still waiting in the rq queue is left alone (a long queue
    must not make every pass add another job per flow). The pending score of every flow looked
    at is bumped to now, so the next pass skips it for another grace period. Returns the flows
    re-enqueued.
    """
    now = now_ms()
    cutoff = now - int(grace_seconds * 1000)
    stale = [
        f.decode() for f in cast(list[bytes], redis.zrangebyscore(keys.pending, "-inf", cutoff))
    ]
    if not stale:
        return []
    pipe = redis.pipeline(transaction=False)
    for flow in stale:
        pipe.exists(keys.lock(flow))
        pipe.exists(keys.parked(flow))
        pipe.get(keys.job(flow))
    flags = pipe.execute()
    waiting = _queued_job_ids(redis, queue, [f for f in flags[2::3] if f is not None])
    enqueued = []
    for i, flow in enumerate(stale):
        locked, parked, job_id = flags[3 * i : 3 * i + 3]
        if locked or parked:
            continue
        redis.zadd(keys.pending, {flow: now}, xx=True)
        if job_id is not None and job_id.decode() in waiting:
            continue  # its drain is still waiting in the rq queue: don't pile up another
        enqueue_drain(queue, flow, keys.job(flow))
        enqueued.append(flow)
    if enqueued:
        log.info("action=reconcile enqueued=%d stale=%d", len(enqueued), len(stale))
    return enqueued


def _queued_job_ids(redis: Redis, queue: Queue, job_ids: list[bytes]) -> set[str]:
    """Which of these rq jobs are really waiting in ``queue``: status queued AND still listed.

    A worker killed between taking a job id off the queue and marking the job started leaves
    a job that says "queued" but is in no queue: trusting the status alone would strand its flow.
    """
    ids = [j.decode() for j in job_ids]
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer) if ids else []
    candidates = [
        job.id
        for job in jobs
        if job is not None and job.get_status(refresh=False) == JobStatus.QUEUED
    ]
    if not candidates:
        return set()
    pipe = redis.pipeline(transaction=False)
    for job_id in candidates:
        pipe.lpos(queue.key, job_id)
    positions = pipe.execute()
    return {job_id for job_id, pos in zip(candidates, positions, strict=True) if pos is not None}


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
