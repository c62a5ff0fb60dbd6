"""The rq side of the protocol: the sweep job's name and how it is enqueued (JSON, never pickle).

The function is named by its import path, so the producer never imports the worker. A sweep's
job id comes from the Lua script that registered it in the shard's ``sweeps`` index, so the
index and rq agree on which sweeps exist.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

SWEEP_FUNCTION = "chem_persistence.worker.job.sweep"
#: rq kills a job running longer than this; a sweep's slice is far shorter (worker settings).
SWEEP_JOB_TIMEOUT_SECONDS = 300
FAILED_JOB_TTL_SECONDS = 7 * 24 * 3600
#: A registered sweep that has not started within this is presumed lost (its rq job never
#: made it): the registration lapses and the next emit or the periodic check registers another.
QUEUED_SWEEP_TTL_MS = 30_000
#: An emit registers a sweep only when none is queued or running.
EMIT_MAX_SWEEPS = 1


def ingest_queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def enqueue_sweep(queue: Queue, job_id: str, shard: int) -> str:
    """Enqueue ``sweep(shard)`` under the id its registration got; returns the job id."""
    job = queue.enqueue_call(
        SWEEP_FUNCTION,
        args=(shard,),
        job_id=job_id,
        timeout=SWEEP_JOB_TIMEOUT_SECONDS,
        result_ttl=0,  # a sweep's result is in PostgreSQL; keep Redis small
        failure_ttl=FAILED_JOB_TTL_SECONDS,
        description=f"sweep of shard {shard}: starting",
    )
    return str(job.id)
