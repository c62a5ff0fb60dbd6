"""The soak (``--soak``): the trickle at half the pipeline's highest rate kept up, for ten
minutes (full run), with 2 fresh worker processes whose RSS is sampled; flat or not."""

from __future__ import annotations

import statistics
import time
from typing import Any

from lab.bench.config import (
    PIPELINE_WORKERS,
    RSS_FLAT_TOLERANCE,
    RUN_TIMEOUT_SECONDS,
    SOAK_SAMPLE_SECONDS,
    BenchError,
    say,
)
from lab.bench.core import Bench
from lab.bench.engines import Engines
from lab.bench.servers import count_rows
from lab.bench.trickle import tasks_for
from lab.bench.workers import WorkerSet

SOAK_DEFAULT_RATE = 500.0  # when the trickle found no rate kept up


def run_soak(bench: Bench, engines: Engines) -> None:
    trickle = bench.results.get("trickle") or {}
    best = (trickle.get("pipeline") or {}).get("highest_kept_up")
    rate = best / 2 if best else SOAK_DEFAULT_RATE
    seconds = bench.scale.soak_seconds
    count = PIPELINE_WORKERS
    say(
        f"soak: trickle at {rate:,.0f} events/s over {bench.scale.trickle_flows:,} flows for"
        f" {seconds:.0f}s, {count} fresh workers"
    )
    bench.reset()
    samples: list[dict[str, Any]] = []
    with WorkerSet(
        bench.env,
        bench.redis,
        count,
        "pipeline",
        tag="-soak",
        linger_seconds=bench.scale.linger_seconds,
    ) as workers:
        interval = min(SOAK_SAMPLE_SECONDS, max(0.5, seconds / 30))
        next_sample = [0.0]

        def sample(at: float) -> None:
            if at < next_sample[0]:
                return
            workers.check_alive()
            rss = workers.rss_kib()
            samples.append({"t": round(at, 1), "rss_kib": rss})
            if len(samples) % 6 == 1:
                say(
                    f"soak {at:5.0f}s: worker RSS "
                    + ", ".join(f"{(r or 0) / 1024:.1f}" for r in rss)
                    + " MiB"
                )
            next_sample[0] += interval

        tasks, _ = tasks_for(bench, "pipeline", rate, seconds, seed=9, record=False)
        started = time.time()
        _, results = engines.run(tasks, tick=sample)
        bench.wait_for(bench.pipeline_done, workers, 0.05, RUN_TIMEOUT_SECONDS, "soak drain")
        next_sample[0] = 0.0
        sample(time.time() - started)  # the last one, after the drain
        elapsed = time.time() - started
        peak = workers.peak_rss_kib()
    emitted = sum(r.emitted for r in results)
    stored, _ = count_rows(bench.conn)
    if stored != emitted:
        raise BenchError(f"soak: emitted {emitted} events, stored {stored}")
    bench.results["soak"] = _soak_summary(samples, rate, emitted, elapsed, peak, count)
    bench.results["soak"]["cost_us"] = sum(r.cost_us_sum for r in results) / max(1, emitted)
    verdict = {True: "flat", False: "GREW", None: "not judged"}[bench.results["soak"]["flat"]]
    say(f"soak: RSS {verdict} ({bench.results['soak']['verdict']})")
    bench.reset()


def _soak_summary(
    samples: list[dict[str, Any]],
    rate: float,
    emitted: int,
    elapsed: float,
    peak: int | None,
    workers: int,
) -> dict[str, Any]:
    """Flat = per worker, the highest RSS of the last 20% of the samples is within 2% of the
    highest of the 20% after warm-up (the first 10%: imports, pools, caches).
    Also the least-squares slope of RSS after warm-up, MiB per minute."""
    n = len(samples)
    skip, width = max(1, n // 10), max(1, n // 5)
    early_samples = samples[skip : skip + width]
    late_samples = samples[-width:]
    early, late, slopes = [], [], []
    for i in range(workers):

        def rss(chosen: list[dict[str, Any]], i: int = i) -> list[int]:
            return [s["rss_kib"][i] for s in chosen if s["rss_kib"][i] is not None]

        early.append(max(rss(early_samples), default=0))
        late.append(max(rss(late_samples), default=0))
        points = [(s["t"], s["rss_kib"][i]) for s in samples[skip:] if s["rss_kib"][i]]
        slope = 0.0
        if len(points) >= 2:
            mean_t = statistics.mean(t for t, _ in points)
            mean_r = statistics.mean(r for _, r in points)
            var = sum((t - mean_t) ** 2 for t, _ in points)
            if var:
                cov = sum((t - mean_t) * (r - mean_r) for t, r in points)
                slope = cov / var * 60 / 1024  # KiB/s → MiB/min
        slopes.append(slope)
    judged = n >= 3
    flat = judged and all(b - a <= RSS_FLAT_TOLERANCE * a for a, b in zip(early, late, strict=True))
    verdict = "; ".join(
        f"worker {i}: {a / 1024:.1f} → {b / 1024:.1f} MiB ({slope:+.2f} MiB/min)"
        for i, (a, b, slope) in enumerate(zip(early, late, slopes, strict=True))
    )
    return {
        "workers": workers,
        "growth": [(b - a) / a if a else None for a, b in zip(early, late, strict=True)],
        "seconds": elapsed,
        "offered_events_per_s": rate,
        "events": emitted,
        "achieved_events_per_s": emitted / elapsed if elapsed else 0.0,
        "early_max_rss_kib": early,
        "late_max_rss_kib": late,
        "slope_mib_per_min": slopes,
        "peak_rss_kib": peak,
        "flat": flat if judged else None,
        "verdict": verdict if judged else "too few samples",
        "samples": samples,
    }
