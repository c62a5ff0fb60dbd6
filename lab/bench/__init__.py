"""`chem-persistence bench`: what each way of storing the engine's events costs, on this machine.

One invocation, the same servers, the same generated events (realistic payloads of about 300
bytes, StepFinished with two artifact hashes among them, spread over many flows):

(a) ceilings: COPY, and the fastest batched INSERTs at 1,000 events per transaction, writing
    the same rows the pipeline writes (events + the StepFinished artifact rows); events-only
    variants are shown too. "(a)" in the ratios is the fastest batched INSERT of those rows.
(b) the synchronous path: ``PgEventStore.append`` per event, one transaction each.
(c) the naive rq path: one rq job per event, each appending one event, one SimpleWorker
    (one worker: more would store a flow's events out of order).
(d) this pipeline: producer → Redis → drain workers → PostgreSQL, with 1, 2, 4 workers and
    batch sizes 100, 500, 2,000; draining a pre-filled backlog, and sustained (the producer's
    ``emit_many`` running at the same time); emit→durable latency at half the sustained maximum;
    the workers' peak RSS. Also the producer's cost per ``emit`` / ``emit_many`` event, and
    read + replay of one 100,000-event flow.

Every throughput is the median of ``runs`` runs (min-max shown). The PostgreSQL database is
fresh (``chem_bench_<random>``, dropped at the end) and emptied before every run; the Redis
keys and rq queues are this run's own and deleted at the end. A Redis PING round trip (median of
1,000) is recorded just before each scenario: this VM's idle cores wake slowly, so compare
scenarios as ratios within one run.

Latency method: each drain worker of (d) is the real ``run_worker`` whose store records, after
every ``append_batch`` returns (COMMIT done), the flow, the positions and ``time.time()``; the
bench emits one event at a time at half load with ``ts`` = the emit time (the events due in one
``emit_many`` when its thread falls behind), and joins the two: emit→durable = commit time - ts,
per event, same clock.

CPU: every timed run also records the CPU time spent, per stored event, by this process, the
workers, this database's PostgreSQL processes, redis-server and the rest of the machine (other
users of the VM), from /proc: what bounds a scenario shows there.
"""

from lab.bench.config import (
    ADMIN_URL_ENV,
    BATCH_SIZES,
    COMMIT_LOG_ENV,
    FULL,
    QUICK,
    SCALE_ENV,
    WORKER_COUNTS,
    BenchError,
    Scale,
)
from lab.bench.data import Dataset, event_source, flow_definition, flow_kinds
from lab.bench.markdown import render_markdown
from lab.bench.report import build_report, evaluate_targets
from lab.bench.run import run_bench
from lab.bench.workers import forkserver_main, naive_append, subprocess_main

__all__ = [
    "ADMIN_URL_ENV",
    "BATCH_SIZES",
    "COMMIT_LOG_ENV",
    "FULL",
    "QUICK",
    "SCALE_ENV",
    "WORKER_COUNTS",
    "BenchError",
    "Dataset",
    "Scale",
    "build_report",
    "evaluate_targets",
    "event_source",
    "flow_definition",
    "flow_kinds",
    "forkserver_main",
    "naive_append",
    "render_markdown",
    "run_bench",
    "subprocess_main",
]
