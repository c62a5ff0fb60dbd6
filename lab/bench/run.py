"""`chem-persistence bench`: one run of every scenario, into JSON, Markdown and a PNG."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg

from lab.bench.ceilings import run_ceilings
from lab.bench.codec import run_codec
from lab.bench.config import (
    ENGINE_PROCESSES,
    FULL,
    PIPELINE_WORKERS,
    QUICK,
    SCALE_ENV,
    BenchError,
    say,
)
from lab.bench.core import Bench
from lab.bench.engines import Engines
from lab.bench.markdown import render_markdown
from lab.bench.paths import run_naive, run_sync
from lab.bench.pipeline import run_pipeline
from lab.bench.producer_costs import run_producer_costs
from lab.bench.replay import run_replay
from lab.bench.report import build_report
from lab.bench.servers import bench_environment
from lab.bench.soak import run_soak
from lab.bench.trickle import run_trickle
from lab.bench.workers import WorkerSet


def run_scenarios(bench: Bench, soak: bool) -> None:
    say(f"data set: {json.dumps(bench.data.describe())}")
    bench.reset_all()
    run_ceilings(bench)
    run_sync(bench)
    run_naive(bench)
    run_producer_costs(bench)  # before the pipeline's workers start: nothing drains
    engines = Engines(ENGINE_PROCESSES)
    try:
        bench.reset_all()
        with WorkerSet(
            bench.env,
            bench.redis,
            PIPELINE_WORKERS,
            "pipeline",
            linger_seconds=bench.scale.linger_seconds,
        ) as workers:
            run_pipeline(bench, workers)
            run_trickle(bench, engines, workers)
            bench.results["pipeline_peak_rss_kib"] = workers.peak_rss_kib()
        run_replay(bench)
        run_codec(bench)
        if soak:
            run_soak(bench, engines)
    finally:
        engines.close()


def _scale_factor() -> float:
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV}: {raw!r} is not a number") from None
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{SCALE_ENV}: {raw!r} must be a positive number")
    return factor


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_bench(*, quick: bool, soak: bool, output_dir: Path, as_json: bool) -> int:
    """Run every scenario; print the Markdown table (or the JSON) on stdout, write
    ``bench-<mode>.json``, ``.md`` and ``.png`` into ``output_dir``. Progress on stderr."""
    scale = QUICK if quick else FULL
    factor = _scale_factor()
    if factor != 1:
        scale = scale.scaled(factor)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / f"bench-{'quick' if quick else 'full'}"
    started = time.time()
    say(f"bench ({scale.mode}): results into {output_dir}/")
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _interrupt)  # stop what we started on SIGTERM too
    try:
        with ExitStack() as stack:
            env = stack.enter_context(bench_environment(output_dir))
            bench = Bench(env, scale)
            stack.callback(bench.close)
            run_scenarios(bench, soak)
            report = build_report(bench, started, soak)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"bench: PostgreSQL is not reachable ({exc}); run `make services`", file=sys.stderr)
        return 2
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    markdown = render_markdown(report)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    from lab.bench.plot import plot

    plotted = plot(report, stem.with_suffix(".png"))
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    if plotted:
        written.append(stem.with_suffix(".png"))
    say("wrote " + ", ".join(str(p) for p in written))
    print(json.dumps(report, indent=2, ensure_ascii=False) if as_json else markdown, end="")
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
