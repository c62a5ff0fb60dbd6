"""The soak (``--soak``): the default configuration at half its sustained load for ten
minutes, sampling the workers' RSS; flat or not."""

from __future__ import annotations

import statistics
import time
from typing import Any

from lab.bench.config import (
    DEFAULT_CONFIG,
    RSS_FLAT_MIN_BYTES,
    RSS_FLAT_TOLERANCE,
    SOAK_SAMPLE_SECONDS,
    say,
)
from lab.bench.core import Bench
from lab.bench.data import event_source
from lab.bench.pipeline import paced_emit
from lab.bench.workers import WorkerSet


def run_soak(bench: Bench) -> None:
    count, batch = DEFAULT_CONFIG
    config = next((c for c in bench.configs if (c.workers, c.batch_size) == DEFAULT_CONFIG), None)
    rate = 0.5 * config.sustained.median if config else 2000.0
    seconds = bench.scale.soak_seconds
    say(f"soak: {count} workers x {batch} for {seconds:.0f}s at {rate:,.0f} events/s")
    bench.reset()
    samples: list[dict[str, Any]] = []
    env = {"CHEM_BATCH_SIZE": str(batch)}
    with WorkerSet(
        bench.env, bench.forks, bench.redis, bench.env.queue_name, count, "soak", env
    ) as workers:
        start = time.perf_counter()
        next_sample = [0.0]
        interval = min(SOAK_SAMPLE_SECONDS, max(0.5, seconds / 30))

        def sample(at: float) -> None:
            if at < next_sample[0]:
                return
            workers.check_alive()
            rss = workers.rss_kib()
            samples.append({"t": round(at, 1), "rss_kib": rss})
            say(
                f"soak {at:5.0f}s: worker RSS "
                + ", ".join(f"{(r or 0) / 1024:.1f}" for r in rss)
                + " MiB"
            )
            next_sample[0] += interval

        source = event_source(bench.scale.flows, 8_000_000, 400)
        paced = paced_emit(bench, rate, seconds, source, tick=sample)
        emitted = int(paced["events"])
        next_sample[0] = 0.0
        sample(time.perf_counter() - start)  # the last one, at the end of the run
        bench.wait_for(bench.pipeline_done, workers)
        elapsed = time.perf_counter() - start
        peak = workers.peak_rss_kib()
    bench.soak = _soak_summary(samples, rate, emitted, elapsed, peak, count, batch)
    verdict = {True: "flat", False: "GREW", None: "not judged"}[bench.soak["flat"]]
    say(f"soak: RSS {verdict} ({bench.soak['verdict']})")
    bench.reset()


def _soak_summary(
    samples: list[dict[str, Any]],
    rate: float,
    emitted: int,
    elapsed: float,
    peak: int | None,
    workers: int,
    batch: int,
) -> dict[str, Any]:
    """Flat = per worker, the highest RSS of the last 20% of the samples is within 2% (or
    1 MiB) of the highest of the 20% after warm-up (the first 10%: imports, pools, caches).
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
    flat = judged and all(
        (b - a) * 1024 <= max(RSS_FLAT_MIN_BYTES, RSS_FLAT_TOLERANCE * a * 1024)
        for a, b in zip(early, late, strict=True)
    )
    verdict = "; ".join(
        f"worker {i}: {a / 1024:.1f} → {b / 1024:.1f} MiB ({slope:+.2f} MiB/min)"
        for i, (a, b, slope) in enumerate(zip(early, late, slopes, strict=True))
    )
    return {
        "workers": workers,
        "batch_size": batch,
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
