"""The trickle: the engine's real load. Thousands of concurrent flows, each flow's events far
apart (flow f's next event comes flows/rate seconds after its last: its queue is almost always
empty by then), offered at fixed rates by ``ENGINE_PROCESSES`` processes through the public
``Producer.emit`` with the 2 worker processes running, and the same schedule through the
synchronous ``PgEventStore.append`` in the same number of processes.

Per rate: the share of the offered events durable within the window (COMMIT logged by the
worker, or ``append`` returned, no later than the window's end + a short grace),
emit→durable p50/p99 (after the run has drained), the engine's cost per call (µs of wall
time in the emitting loop).
"""

from __future__ import annotations

import math
import statistics
import uuid
from typing import Any

from lab.bench.config import (
    ENGINE_PROCESSES,
    RUN_TIMEOUT_SECONDS,
    TRICKLE_KEPT_UP,
    TRICKLE_MAX_WINDOW_SECONDS,
    BenchError,
    say,
)
from lab.bench.core import Bench
from lab.bench.engines import EngineResult, Engines, Task
from lab.bench.measure import load_average, percentile
from lab.bench.servers import count_rows
from lab.bench.workers import WorkerSet


def window_for(bench: Bench, rate: float) -> float:
    """The window: the scale's, stretched (up to a limit) so every flow gets an event."""
    flows = bench.scale.trickle_flows
    return max(bench.scale.trickle_window_seconds, min(flows / rate, TRICKLE_MAX_WINDOW_SECONDS))


def tasks_for(
    bench: Bench, mode: str, rate: float, seconds: float, seed: int, record: bool = True
) -> tuple[list[Task], list[list[str]]]:
    flows = [str(uuid.uuid4()) for _ in range(bench.scale.trickle_flows)]
    share = math.ceil(len(flows) / ENGINE_PROCESSES)
    parts = [flows[i * share : (i + 1) * share] for i in range(ENGINE_PROCESSES)]
    env = bench.env
    tasks = [
        Task(
            mode=mode,
            flows=part,
            flow_base=i * share,
            rate=rate / ENGINE_PROCESSES,
            seconds=seconds,
            phase=i / ENGINE_PROCESSES,
            grace=bench.scale.grace_seconds,
            seed=seed,
            record=record,
            redis_url=env.redis_url,
            queue=env.queue_name,
            key_prefix=env.key_prefix,
            database_url=env.database_url,
        )
        for i, part in enumerate(parts)
    ]
    return tasks, parts


def run_trickle(bench: Bench, engines: Engines, workers: WorkerSet) -> None:
    rows: dict[str, list[dict[str, Any]]] = {"pipeline": [], "sync": []}
    for mode in ("pipeline", "sync"):
        for rate in bench.scale.trickle_rates:
            rows[mode].append(trickle_rate(bench, engines, workers, mode, float(rate)))
    summary: dict[str, Any] = {"flows": bench.scale.trickle_flows, "rates": rows}
    for mode in ("pipeline", "sync"):
        summary[mode] = _highest(rows[mode])
    pipeline_best = summary["pipeline"]["highest_kept_up"]
    half = pipeline_best / 2 if pipeline_best else None
    at_half = next((r for r in rows["pipeline"] if half and r["rate"] == half), None)
    if half and at_half is None and half >= 1:
        say(f"trickle: half of the pipeline's highest rate, {half:,.0f}/s, is not a run rate")
        at_half = trickle_rate(bench, engines, workers, "pipeline", half)
        rows["pipeline"].append(at_half)
    summary["pipeline_at_half"] = at_half
    sync_best = summary["sync"]["highest_kept_up"]
    summary["ratio"] = pipeline_best / sync_best if pipeline_best and sync_best else None
    bench.results["trickle"] = summary


def _highest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [r["rate"] for r in rows if r["durable_share"] >= TRICKLE_KEPT_UP]
    top = max((r["rate"] for r in rows), default=0)
    best = max(kept, default=None)
    return {
        "highest_kept_up": best,
        "at_top_rate": best == top,  # kept up even at the highest rate offered: a lower bound
    }


def trickle_rate(
    bench: Bench, engines: Engines, workers: WorkerSet, mode: str, rate: float
) -> dict[str, Any]:
    seconds = window_for(bench, rate)
    bench.reset()
    workers.clear_commit_logs()
    workers.check_alive()
    load = load_average()
    tasks, parts = tasks_for(bench, mode, rate, seconds, seed=int(rate))
    start, results = engines.run(tasks)
    workers.check_alive()
    emitted = sum(r.emitted for r in results)
    if mode == "pipeline":
        bench.wait_for(bench.pipeline_done, workers, 0.02, RUN_TIMEOUT_SECONDS, "trickle drain")
    stored, _ = count_rows(bench.conn)
    if stored != emitted:
        raise BenchError(f"trickle {mode} at {rate:,.0f}/s: emitted {emitted}, stored {stored}")
    row = _summarize(bench, workers, mode, rate, start, seconds, tasks, parts, results)
    row["load1_before"] = load
    say(
        f"trickle {mode} {rate:,.0f}/s over {bench.scale.trickle_flows:,} flows ({seconds:g}s):"
        f" {row['durable_share']:.1%} durable in the window, p50 {row['p50_ms']:.1f} ms,"
        f" p99 {row['p99_ms']:.1f} ms, {row['cost_us']:.0f} µs/call"
        f" ({row['achieved_rate']:,.0f}/s emitted, {row['events_per_transaction']:.1f} per txn)"
    )
    return row


def _summarize(
    bench: Bench,
    workers: WorkerSet,
    mode: str,
    rate: float,
    start: float,
    seconds: float,
    tasks: list[Task],
    parts: list[list[str]],
    results: list[EngineResult],
) -> dict[str, Any]:
    window_end = start + seconds + bench.scale.grace_seconds
    committed = workers.commits() if mode == "pipeline" else {}
    if mode == "pipeline" and results and sum(r.emitted for r in results) and not committed:
        raise BenchError(
            f"trickle at {rate:,.0f}/s: the workers logged no COMMIT; see {bench.env.worker_log}"
        )
    latencies: list[float] = []
    costs: list[float] = []
    in_window = 0
    emitted_at: list[float] = []
    for part, result in zip(parts, results, strict=True):
        for index, position, ts, cost, durable in result.records:
            if mode == "pipeline":
                durable_at = committed.get((part[index], position))
                if durable_at is None:
                    raise BenchError(
                        f"trickle at {rate:,.0f}/s: flow {part[index]} position {position}"
                        " is stored but its COMMIT was not logged"
                    )
            else:
                durable_at = durable
            latencies.append((durable_at - ts) * 1000)
            costs.append(cost)
            emitted_at.append(ts)
            if durable_at <= window_end:
                in_window += 1
    offered = sum(r.offered for r in results)
    latencies.sort()
    span = (max(emitted_at) - min(emitted_at)) if len(emitted_at) > 1 else seconds
    return {
        "mode": mode,
        "rate": rate,
        "flows": sum(len(p) for p in parts),
        "window_seconds": seconds,
        "grace_seconds": bench.scale.grace_seconds,
        "offered": offered,
        "emitted": len(latencies),
        "achieved_rate": len(latencies) / max(span, 1e-9),
        "durable_in_window": in_window,
        "durable_share": in_window / offered if offered else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "cost_us": statistics.mean(costs) if costs else float("nan"),
        "cost_p50_us": percentile(sorted(costs), 50),
        "late_start_ms": max(r.late_start_ms for r in results),
        "transactions": workers.transactions if mode == "pipeline" else len(latencies),
        "events_per_transaction": len(latencies) / max(1, workers.transactions)
        if mode == "pipeline"
        else 1.0,
        "events_per_flow": max(t.rate * t.seconds / max(1, len(t.flows)) for t in tasks),
        "quantiles_ms": [round(percentile(latencies, q), 3) for q in range(101)],
    }
