"""`chem-persistence bench`: what each way of storing the engine's events costs, on this machine,
and whether protocol v2 meets issue 11's targets. One invocation, the same servers:

(a) ceilings: COPY, and batched INSERTs of 1,000 events per statement, writing the rows the
    pipeline writes (events + the StepFinished artifact rows); events-only variants too.
(b) the synchronous path: ``PgEventStore.append`` per event, one transaction each.
(c) the naive rq path (v1's shape, a reference): one rq job per event, one SimpleWorker.
(d) the pipeline with 2 worker processes (``python -m lab.faulty_worker --commit-log``, no
    fault): backlog drain and sustained end to end at 1, 32, 1,000 and 10,000 flows, as ratios
    of the ceiling; Redis memory before a backlog and after its drain.
Trickle: the engine's real load, thousands of concurrent flows whose events are far apart,
    offered at fixed rates by 2 engine processes through ``Producer.emit``, and the same
    schedule through the synchronous append: durable within the window, p50/p99 emit→durable,
    cost per call; the highest rate kept up by each and their ratio.
Producer: ``emit`` against one raw EVALSHA of a 3-command script. Replay of one long flow.
``--soak``: the trickle for ten minutes with fresh workers, their RSS sampled.

The PostgreSQL database is fresh (``chem_bench_<random>``, dropped at the end); the Redis keys
and rq queues are this run's own and deleted at the end. Progress on stderr; the Markdown table
(or ``--json``) on stdout; JSON, Markdown and PNG in the results folder.
"""

from lab.bench.config import (
    ADMIN_URL_ENV,
    FULL,
    PIPELINE_FLOWS,
    QUICK,
    SCALE_ENV,
    BenchError,
    Scale,
)
from lab.bench.data import Dataset, KindSource, flow_definition, flow_kinds
from lab.bench.markdown import render_markdown
from lab.bench.report import build_report, evaluate_targets
from lab.bench.run import run_bench
from lab.bench.workers import naive_append

__all__ = [
    "ADMIN_URL_ENV",
    "FULL",
    "PIPELINE_FLOWS",
    "QUICK",
    "SCALE_ENV",
    "BenchError",
    "Dataset",
    "KindSource",
    "Scale",
    "build_report",
    "evaluate_targets",
    "flow_definition",
    "flow_kinds",
    "naive_append",
    "render_markdown",
    "run_bench",
]
