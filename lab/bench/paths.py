"""(b) the synchronous path (``PgEventStore.append`` per event) and (c) the naive rq path
(one job per event, one SimpleWorker: v1's cost per job, kept as a reference)."""

from __future__ import annotations

from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from lab.bench.config import BenchError
from lab.bench.core import Bench
from lab.bench.measure import Stopwatch
from lab.bench.servers import check_stored, count_rows
from lab.bench.workers import NAIVE_FUNCTION, WorkerSet


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
    with WorkerSet(bench.env, bench.redis, 1, "naive") as workers:

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
