"""(d) the pipeline: producer → Redis → drain workers → PostgreSQL per (workers, batch size):
backlog drain, sustained, emit→durable latency at half load, the workers' peak RSS."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from itertools import islice
from typing import Any
from uuid import UUID

from domain.events import (
    FlowEvent,
    FlowEventKind,
)
from domain.store import utc_now
from lab.bench.config import BATCH_SIZES, SUSTAINED_CHUNK, WORKER_COUNTS, BenchError, say
from lab.bench.core import Bench
from lab.bench.data import event_source
from lab.bench.measure import PipelineConfig, Stopwatch, chunks, percentile
from lab.bench.servers import check_stored
from lab.bench.workers import WorkerSet
from producer.jobs import enqueue_drain
from producer.producer import EMIT_MANY_CHUNK
from producer.wire import now_ms


def run_pipeline(bench: Bench) -> None:
    for workers in WORKER_COUNTS:
        for batch in BATCH_SIZES:
            bench.configs.append(_pipeline_config(bench, workers, batch))


def _pipeline_config(bench: Bench, count: int, batch: int) -> PipelineConfig:
    label = f"{count} worker{'s' if count > 1 else ''} x batch {batch}"
    env = {"CHEM_BATCH_SIZE": str(batch)}
    say(f"(d) starting {label}")
    with WorkerSet(
        bench.env,
        bench.forks,
        bench.redis,
        bench.env.queue_name,
        count,
        "pipeline",
        env,
        commit_logs=True,
        tag=f"-w{count}b{batch}",
    ) as workers:
        backlog = bench.new_row(
            f"d.backlog.w{count}.b{batch}", "d", "pipeline: backlog drain", label
        )
        bench.repeat(backlog, partial(_backlog_once, bench, workers), workers)
        sustained = bench.new_row(
            f"d.sustained.w{count}.b{batch}",
            "d",
            "pipeline: sustained (producer running)",
            label,
        )
        bench.repeat(sustained, partial(_sustained_once, bench, workers), workers)
        config = PipelineConfig(count, batch, backlog, sustained)
        config.latency = _latency_run(bench, workers, 0.5 * sustained.median)
        config.peak_rss_kib = workers.peak_rss_kib()
        backlog.extra["peak_rss_kib"] = sustained.extra["peak_rss_kib"] = config.peak_rss_kib
        sustained.extra["latency"] = {
            k: v for k, v in config.latency.items() if k != "quantiles_ms"
        }
    return config


def _fill(bench: Bench, by_flow: Mapping[str, list[str]]) -> list[str]:
    """What ``Producer.send_many`` does, without enqueueing the drain jobs yet."""
    pipe = bench.redis.pipeline(transaction=False)
    calls: list[str] = []
    stamp = now_ms()
    keys = bench.producer.keys
    for flow, envelopes in by_flow.items():
        flow_keys = [keys.queue(flow), keys.parked(flow), keys.pending]
        for chunk in chunks(envelopes, EMIT_MANY_CHUNK):
            bench.producer.scripts.emit(keys=flow_keys, args=[flow, stamp, *chunk], client=pipe)
            calls.append(flow)
    results = pipe.execute()
    return sorted({f for f, r in zip(calls, results, strict=True) if r == 1})


def _backlog_once(bench: Bench, workers: WorkerSet, watch: Stopwatch) -> None:
    bench.reset()
    flows = _fill(bench, bench.data.by_flow())
    watch.start()
    for flow in flows:
        enqueue_drain(bench.producer.queue, flow, bench.producer.keys.job(flow))
    bench.wait_for(bench.pipeline_done, workers)
    watch.stop(len(bench.data.events))
    check_stored(bench.conn, bench.data, "backlog drain")


def _sustained_once(bench: Bench, workers: WorkerSet, watch: Stopwatch) -> None:
    bench.reset()
    watch.start()
    for chunk in chunks(bench.data.events, SUSTAINED_CHUNK):
        bench.producer.emit_many(chunk)
    bench.wait_for(bench.pipeline_done, workers)
    watch.stop(len(bench.data.events))
    check_stored(bench.conn, bench.data, "sustained")


def paced_emit(
    bench: Bench,
    rate: float,
    seconds: float,
    source: Iterator[tuple[UUID, int, FlowEventKind]],
    record: dict[tuple[UUID, int], float] | None = None,
    tick: Callable[[float], None] | None = None,
) -> dict[str, float]:
    """Emit ``source``'s events at ``rate`` events/s for ``seconds``, as an engine would:
    one ``Producer.emit`` per event (ts = now) while it keeps up; when it falls behind (an
    emit costs ~0.25 ms of CPU here), the events due go in one ``emit_many`` (ts = that
    call's time). ``record`` gets each event's emit time; ``tick`` is called in between."""
    total = max(1, int(rate * seconds))
    emitted = singles = 0
    start = time.perf_counter()
    while emitted < total:
        now = time.perf_counter()
        if tick is not None:
            tick(now - start)
        due = min(total, int((now - start) * rate) + 1)
        if due <= emitted:
            time.sleep(max(0.0, start + emitted / rate - now))
            continue
        ts = utc_now()
        events = [FlowEvent(p, f, k, ts) for f, p, k in islice(source, due - emitted)]
        if len(events) == 1:
            bench.producer.emit(events[0])
            singles += 1
        else:
            bench.producer.emit_many(events)
        if record is not None:
            stamp = ts.timestamp()
            for event in events:
                record[(event.flow_id, event.seq)] = stamp
        emitted += len(events)
    elapsed = time.perf_counter() - start
    return {
        "events": emitted,
        "seconds": elapsed,
        "achieved_events_per_s": emitted / elapsed,
        "single_emit_share": singles / emitted,
    }


def _latency_run(bench: Bench, workers: WorkerSet, rate: float) -> dict[str, Any]:
    bench.reset()
    for path in workers.commit_logs:
        path.write_text("")  # the runs before were throughput runs
    seconds = bench.scale.latency_seconds
    flows = bench.scale.flows
    emitted: dict[tuple[UUID, int], float] = {}
    source = event_source(flows, 7_000_000, math.ceil(rate * seconds / flows) + 2)
    paced = paced_emit(bench, rate, seconds, source, record=emitted)
    achieved = paced["achieved_events_per_s"]
    bench.wait_for(bench.pipeline_done, workers)
    committed: dict[tuple[UUID, int], float] = {}
    for path in workers.commit_logs:
        for line in path.read_text().splitlines():
            flow_text, first, last, at = line.split()
            flow = UUID(flow_text)
            for position in range(int(first), int(last) + 1):
                committed.setdefault((flow, position), float(at))
    drains = 0
    drained = 0
    first_commit, last_commit = math.inf, 0.0
    for path in workers.commit_logs:
        for line in path.read_text().splitlines():
            _, first, last, at = line.split()
            drains += 1
            drained += int(last) - int(first) + 1
            first_commit, last_commit = (
                min(first_commit, float(at)),
                max(last_commit, float(at)),
            )
    span = max(1e-9, last_commit - first_commit)
    latencies = sorted(
        (committed[key] - ts) * 1000 for key, ts in emitted.items() if key in committed
    )
    if len(latencies) != len(emitted):
        raise BenchError(
            f"latency run: {len(emitted) - len(latencies)} of {len(emitted)} events "
            "have no recorded COMMIT"
        )
    result = {
        "offered_events_per_s": rate,
        "achieved_events_per_s": achieved,
        "events": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1],
        "quantiles_ms": [round(percentile(latencies, q), 3) for q in range(101)],
        "single_emit_share": paced["single_emit_share"],
        "flows": bench.scale.flows,
        "workers": workers.count,
        "drains": drains,
        "events_per_drain": drained / max(1, drains),
        "drains_per_s": drains / span,
        # busy workers: the time one drain (its rq job included) takes, at most
        "ms_per_drain": 1000 * workers.count * span / max(1, drains),
    }
    say(
        f"(d) latency at {achieved:,.0f} events/s (half load {rate:,.0f}): "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )
    return result
