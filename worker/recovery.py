"""The periodic check every worker runs: nothing stays queued without a sweep to move it.

Each check, per shard: expired leases go back to ready (a SIGKILLed sweep's flows); a
registered sweep whose rq job is gone (lost mid-dequeue, never enqueued) is forgotten; a few
queue keys are scanned for orphans (events in no index, e.g. after an AOF rewind) and re-readied;
then, if flows are ready and no sweep is queued or running, one is registered and enqueued.
Every step is a Redis script that is safe to run twice, by any number of workers at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from chem_persistence.producer.jobs import EMIT_MAX_SWEEPS, QUEUED_SWEEP_TTL_MS
from chem_persistence.producer.keys import Keys, ShardKeys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import REDIS_ERRORS

log = logging.getLogger(__name__)

#: A registration younger than this may belong to a job still being enqueued.
PHANTOM_GRACE_MS = 2_000


@dataclass
class CheckResult:
    reaped: int = 0
    orphans: int = 0
    phantoms: int = 0
    started: list[str] = field(default_factory=list)


class Recovery:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        queue: Queue,
        settings: WorkerSettings,
        start_sweep: Callable[[str, int], None],
    ) -> None:
        self.redis, self.keys, self.scripts, self.queue = redis, keys, scripts, queue
        self.settings = settings
        self.start_sweep = start_sweep
        self._cursors: dict[int, int] = {}

    def check(self) -> CheckResult:
        result = CheckResult()
        for shard in self.keys.all_shards():
            result.phantoms += self._forget_phantoms(shard)
            candidates = self._scan(shard)
            reply = cast(
                list[Any],
                self.scripts.recover(
                    keys=[shard.ready, shard.leased, shard.parked, shard.sweeps, shard.wake],
                    args=[shard.base, QUEUED_SWEEP_TTL_MS, EMIT_MAX_SWEEPS, *candidates],
                ),
            )
            result.reaped += int(reply[0])
            result.orphans += int(reply[1])
            if isinstance(reply[2], bytes):
                job_id = reply[2].decode()
                self.start_sweep(job_id, shard.shard)
                result.started.append(job_id)
        if result.reaped or result.orphans or result.phantoms or result.started:
            log.info(
                "action=recovery reaped=%d orphans=%d phantoms=%d sweeps_started=%d",
                result.reaped,
                result.orphans,
                result.phantoms,
                len(result.started),
            )
        return result

    def _scan(self, shard: ShardKeys) -> list[str]:
        """A slice of the shard's queue keys (the cursor goes on at the next check)."""
        if self.settings.orphan_scan_keys <= 0:
            return []
        cursor, found = self.redis.scan(
            cursor=self._cursors.get(shard.shard, 0),
            match=shard.queue_pattern,
            count=self.settings.orphan_scan_keys,
        )
        self._cursors[shard.shard] = int(cursor)
        return [shard.flow_of_queue(k.decode()) for k in cast(list[bytes], found)]

    def _forget_phantoms(self, shard: ShardKeys) -> int:
        """Registered sweeps whose rq job is neither waiting in the queue nor running."""
        members = cast(
            list[tuple[bytes, float]], self.redis.zrange(shard.sweeps, 0, -1, withscores=True)
        )
        if not members:
            return 0
        seconds, micros = self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        ids = [m.decode() for m, _ in members]
        jobs = Job.fetch_many(ids, connection=self.redis, serializer=JSONSerializer)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.lpos(self.queue.key, job_id)
        positions = pipe.execute()
        gone = []
        for (member, deadline), job, position in zip(members, jobs, positions, strict=True):
            registered_at = deadline - QUEUED_SWEEP_TTL_MS
            if now_ms - registered_at < PHANTOM_GRACE_MS:
                continue
            status = job.get_status(refresh=False) if job is not None else None
            waiting = status == JobStatus.QUEUED and position is not None
            if (
                job is None
                or (status == JobStatus.QUEUED and not waiting)
                or status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)
            ):
                gone.append(member)
        if gone:
            self.redis.zrem(shard.sweeps, *gone)
        return len(gone)


class PeriodicRecovery(threading.Thread):
    """Runs ``Recovery.check`` every interval until stopped (a daemon thread of the worker)."""

    def __init__(self, recovery: Recovery, interval: float) -> None:
        super().__init__(name="chem-recovery", daemon=True)
        self.recovery, self.interval = recovery, interval
        self.stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.recovery.check()
                if self._failing:
                    log.warning("action=recovery_resumed")
                self._failing = False
            except REDIS_ERRORS as exc:  # Redis away: say so once, try again next period
                if not self._failing:
                    log.warning("action=recovery_failed error=%s", type(exc).__name__)
                self._failing = True

    def stop(self) -> None:
        self.stopped.set()
