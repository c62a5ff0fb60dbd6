"""The rq side of the protocol: the drain job's name and how it is enqueued (JSON, never pickle).

The function is named by its import path, so the producer never imports the worker.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

DRAIN_FUNCTION = "worker.runtime.drain_flow"
DRAIN_JOB_TIMEOUT_SECONDS = 300  # a drain hands over after ~30 s; a job this old is abandoned
FAILED_JOB_TTL_SECONDS = 7 * 24 * 3600
MARKER_TTL_SECONDS = 24 * 3600  # a backstop: a marker outliving its job only delays reconcile


def ingest_queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def enqueue_drain(queue: Queue, flow_id: str, marker_key: str | None = None) -> str:
    """Enqueue ``drain_flow(flow_id)``; returns the rq job id.

    With ``marker_key`` (Keys.job) the job id is recorded there in the same round trip, so
    that reconcile can tell a drain still waiting in the queue from one that was lost.
    """
    pipe = queue.connection.pipeline()
    job = queue.enqueue_call(
        DRAIN_FUNCTION,
        args=(flow_id,),
        timeout=DRAIN_JOB_TIMEOUT_SECONDS,
        result_ttl=0,  # a drain's result is in PostgreSQL; keep Redis small
        failure_ttl=FAILED_JOB_TTL_SECONDS,
        description=f"drain_flow({flow_id})",
        pipeline=pipe,
    )
    if marker_key is not None:
        pipe.set(marker_key, job.id, ex=MARKER_TTL_SECONDS)
    pipe.execute()
    return str(job.id)
