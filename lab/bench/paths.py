"""(b) the synchronous path (``PgEventStore.append`` per event) and (c) the naive rq path
(one job per event, one SimpleWorker), with rq's own cost per job."""

from __future__ import annotations

import statistics
import time
from functools import partial

from redis import Redis
from rq import Queue
from rq.registry import (
    FailedJobRegistry,
)
from rq.serializers import JSONSerializer

from lab.bench.config import BenchError, say
from lab.bench.core import Bench
from lab.bench.measure import Stopwatch, ping_rtt_us
from lab.bench.servers import check_stored, count_rows
from lab.bench.workers import NAIVE_FUNCTION, NOOP_FUNCTION, WorkerSet


def run_sync(bench: Bench) -> None:
    n = min(bench.scale.sync_events, len(bench.data.events))
    data = bench.data.head(n)
    row = bench.new_row(
        "b.sync", "b", "synchronous PgEventStore.append", "1 event/txn, in the engine's thread"
    )

    def once(watch: Stopwatch) -> None:
        bench.reset()
        watch.start()
        for event in data.events:
            bench.store.append(event.flow_id, event.kind, event.ts)
        watch.stop(n)
        check_stored(bench.conn, data, "synchronous path")

    bench.repeat(row, once)
    row.extra["us_per_event"] = 1e6 / row.median


# -- (c) naive rq --


def run_naive(bench: Bench) -> None:
    n = min(bench.scale.naive_events, len(bench.data.events))
    data = bench.data.head(n)
    row = bench.new_row(
        "c.naive",
        "c",
        "naive rq: one job per event",
        "1 SimpleWorker (more would reorder a flow)",
    )
    queue = Queue(bench.env.naive_queue_name, connection=bench.redis, serializer=JSONSerializer)
    env = {"CHEM_QUEUE": bench.env.naive_queue_name}
    with WorkerSet(
        bench.env, bench.forks, bench.redis, bench.env.naive_queue_name, 1, "naive", env
    ) as workers:
        bench.rq_noop = _rq_noop_jobs(bench, queue, workers)

        def once(watch: Stopwatch) -> None:
            bench.reset()
            watch.start()
            for envelope in data.envelopes:
                queue.enqueue(
                    NAIVE_FUNCTION, envelope, result_ttl=0, failure_ttl=3600, job_timeout=60
                )
            bench.wait_for(lambda: count_rows(bench.conn)[0] >= n, workers, 0.02)
            watch.stop(n)
            failed = FailedJobRegistry(queue=queue).count
            if failed:
                raise BenchError(f"naive rq: {failed} job(s) failed; see {bench.env.worker_log}")
            check_stored(bench.conn, data, "naive rq")

        bench.repeat(row, once, workers)
        row.extra["peak_rss_kib"] = workers.peak_rss_kib()


def _rq_noop_jobs(bench: Bench, queue: Queue, workers: WorkerSet) -> dict[str, float]:
    """rq's own cost per job: no-op jobs (``builtins.len``) through one SimpleWorker."""
    n = max(50, bench.scale.naive_events // 2)
    ping = ping_rtt_us(bench.redis)
    rates = []
    for _ in range(bench.scale.runs):
        start = time.perf_counter()
        last = ""
        for _ in range(n):
            last = queue.enqueue(NOOP_FUNCTION, "x", result_ttl=0).id
        # FIFO, one worker: the last job gone (result_ttl=0) = every job done
        bench.wait_for(partial(_gone, bench.redis, f"rq:job:{last}"), workers)
        rates.append(n / (time.perf_counter() - start))
    rate = statistics.median(rates)
    say(f"rq no-op jobs, 1 SimpleWorker: {rate:,.0f} jobs/s ({1000 / rate:.2f} ms/job)")
    return {"jobs_per_s": rate, "ms_per_job": 1000 / rate, "ping_us": ping}


def _gone(redis: Redis, key: str) -> bool:
    return not redis.exists(key)
