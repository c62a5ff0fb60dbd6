"""(d) the pipeline (producer → Redis → sweeps in 2 worker processes → PostgreSQL) at 1, 32,
1,000 and 10,000 flows: draining a pre-filled backlog, and sustained (the producer's
``emit_many`` running at the same time); Redis memory before and after a drain."""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

from chem_persistence.producer.jobs import EMIT_MAX_SWEEPS, QUEUED_SWEEP_TTL_MS, enqueue_sweep
from chem_persistence.producer.producer import EMIT_MANY_CHUNK
from lab.bench.config import PIPELINE_FLOWS, REDIS_KEPT_KEYS, SUSTAINED_CHUNK, say
from lab.bench.core import Bench
from lab.bench.data import Dataset
from lab.bench.measure import Stopwatch, chunks
from lab.bench.servers import check_stored
from lab.bench.workers import WorkerSet

IDLE_TIMEOUT_SECONDS = 60.0  # sweeps end after their linger (5 s by default)


def run_pipeline(bench: Bench, workers: WorkerSet) -> None:
    for flows in PIPELINE_FLOWS:
        per_flow = max(1, bench.scale.pipeline_events // flows)
        data = Dataset.generate(flows, per_flow, seed=flows, whole=False)
        label = f"{flows:,} flow{'s' if flows > 1 else ''} x {per_flow:,} events"
        say(f"(d) {label}: {len(data.events):,} events, {workers.count} workers")
        if flows == max(PIPELINE_FLOWS):
            bench.results["redis_memory"] = _memory_run(bench, workers, data)
        backlog = bench.new_row(f"d.backlog.f{flows}", "d", "pipeline: backlog drain", label)
        bench.repeat(backlog, partial(_backlog_once, bench, workers, data), workers)
        sustained = bench.new_row(
            f"d.sustained.f{flows}", "d", "pipeline: sustained (producer running)", label
        )
        bench.repeat(sustained, partial(_sustained_once, bench, workers, data), workers)
        for row in (backlog, sustained):
            row.extra["flows"] = flows
            row.extra["avg_payload_bytes"] = data.describe()["avg_payload_bytes"]


def _fill(bench: Bench, data: Dataset) -> list[str]:
    """Queue the data set as ``emit_many`` does (the emit script, pipelined), without enqueueing
    the sweep it asks for: returns the sweep ids to enqueue when the clock starts."""
    shard = bench.shard
    keys = [shard.ready, shard.leased, shard.sweeps, shard.wake]
    pipe = bench.redis.pipeline(transaction=False)
    for flow, envelopes in data.by_flow().items():
        for start in range(0, len(envelopes), EMIT_MANY_CHUNK):
            chunk = envelopes[start : start + EMIT_MANY_CHUNK]
            args: list[str | int] = [shard.base, flow, QUEUED_SWEEP_TTL_MS, EMIT_MAX_SWEEPS]
            args += chunk
            bench.producer.scripts.emit(keys=keys, args=args, client=pipe)
    return [r.decode() for r in pipe.execute() if isinstance(r, bytes)]


def _backlog_once(bench: Bench, workers: WorkerSet, data: Dataset, watch: Stopwatch) -> None:
    # a lingering sweep would drain the backlog while it is filled: wait until none runs
    bench.wait_for(bench.sweeps_idle, workers, 0.05, IDLE_TIMEOUT_SECONDS, "sweeps ending")
    bench.reset()
    sweeps = _fill(bench, data)
    watch.start()
    for sweep_id in sweeps:
        enqueue_sweep(bench.queue, sweep_id, 0)
    bench.wait_for(bench.pipeline_done, workers, what="backlog drain")
    watch.stop(len(data.events))
    check_stored(bench.conn, data, "backlog drain")


def _sustained_once(bench: Bench, workers: WorkerSet, data: Dataset, watch: Stopwatch) -> None:
    bench.reset()
    watch.start()
    for chunk in chunks(data.events, SUSTAINED_CHUNK):
        bench.producer.emit_many(chunk)
    bench.wait_for(bench.pipeline_done, workers, what="sustained")
    watch.stop(len(data.events))
    check_stored(bench.conn, data, "sustained")


def _memory_snapshot(bench: Bench) -> tuple[int, set[str]]:
    """Redis ``used_memory`` (median of 5 readings) and this run's keys."""
    readings = []
    for _ in range(5):
        readings.append(int(bench.redis.info("memory")["used_memory"]))
        time.sleep(0.05)
    keys = {k.decode() for k in bench.redis.scan_iter(match=f"{bench.env.key_prefix}:*")}
    return int(statistics.median(readings)), keys


def _memory_run(bench: Bench, workers: WorkerSet, data: Dataset) -> dict[str, Any]:
    """Fill a backlog, drain it, wait for the sweeps to end: Redis memory and keys as before."""
    bench.wait_for(bench.sweeps_idle, workers, 0.05, IDLE_TIMEOUT_SECONDS, "sweeps ending")
    bench.reset()
    before, keys_before = _memory_snapshot(bench)
    sweeps = _fill(bench, data)
    filled, _ = _memory_snapshot(bench)
    for sweep_id in sweeps:
        enqueue_sweep(bench.queue, sweep_id, 0)
    bench.wait_for(bench.pipeline_done, workers, what="memory drain")
    check_stored(bench.conn, data, "memory drain")
    bench.wait_for(bench.sweeps_idle, workers, 0.05, IDLE_TIMEOUT_SECONDS, "sweeps ending")
    after, keys_after = _memory_snapshot(bench)
    allowed = {bench.shard.base + name for name in REDIS_KEPT_KEYS}
    left = sorted(keys_after - keys_before - allowed)
    result = {
        "flows": len(data.flows),
        "events": len(data.events),
        "used_memory_before": before,
        "used_memory_filled": filled,
        "used_memory_after": after,
        "delta_bytes": after - before,
        "keys_before": sorted(keys_before),
        "keys_after": sorted(keys_after),
        "leftover_keys": left,
        "allowed_keys": sorted(allowed),
    }
    say(
        f"Redis used_memory {before / 2**20:.2f} MiB → filled {filled / 2**20:.2f} MiB → "
        f"drained {after / 2**20:.2f} MiB (Δ {after - before:+,} B); leftover keys:"
        f" {left or 'none'}"
    )
    return result
