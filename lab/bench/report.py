"""The bench's report: the JSON dict (scenarios, ratios, trickle, producer, memory, soak) and
the targets it is judged on (issue 11's, each beside the reference it is measured against)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chem_persistence.worker.config import WorkerSettings
from lab.bench.codec import codec_targets
from lab.bench.config import (
    PIPELINE_FLOWS,
    PIPELINE_WORKERS,
    REDIS_MEMORY_TOLERANCE_BYTES,
    RSS_FLAT_TOLERANCE,
    TARGET_BACKLOG_RATIO,
    TARGET_EMIT_VS_EVALSHA,
    TARGET_P99_MS,
    TARGET_SUSTAINED_RATIO,
    TARGET_TRICKLE_FLOWS,
    TARGET_TRICKLE_RATIO,
    TRICKLE_KEPT_UP,
)
from lab.bench.core import Bench
from lab.bench.measure import Row

#: The ceiling the pipeline's ratios use: batched INSERT, 1,000 events per statement.
CEILING_KEYS = ("a.insert.multirow", "a.insert.json")

METHOD = (
    "Throughput: median of the runs (min-max in the JSON). Ceiling (a) = the faster of the two "
    "one-statement batched INSERTs of 1,000 events (+ their artifact rows) per transaction. "
    "Trickle: the engine processes emit on a fixed schedule from a common start; the worker "
    "processes (python -m lab.faulty_worker --commit-log, no fault) log time.time() after each "
    "COMMIT, per flow; emit→durable = that time - the event's ts (taken just before emit), same "
    "clock. Durable within the window = COMMIT logged (sync: append returned) by start + window "
    "+ grace, over the events offered. Cost per emit = wall time of the call in the engine's loop."
)


def _best(rows: Sequence[Row], keys: Iterable[str]) -> tuple[float, Row | None]:
    wanted = set(keys)
    candidates = [r for r in rows if r.key in wanted and r.runs]
    if not candidates:
        return float("nan"), None
    best = max(candidates, key=lambda r: r.median)
    return best.median, best


def _server_versions(bench: Bench) -> dict[str, str]:
    with bench.conn.transaction():
        pg = bench.conn.execute("SHOW server_version").fetchone()
    info: dict[str, Any] = bench.redis.info("server")
    return {"postgresql": str(pg[0]) if pg else "?", "redis": str(info.get("redis_version", "?"))}


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def build_report(bench: Bench, started: float, soak_requested: bool) -> dict[str, Any]:
    rows = bench.rows
    ceiling, ceiling_row = _best(rows, CEILING_KEYS)
    copy, _ = _best(rows, ("a.copy",))
    sync, _ = _best(rows, ("b.sync",))
    naive, _ = _best(rows, ("c.naive",))
    scenarios = []
    for r in rows:
        data = r.as_dict()
        data["ratio_a"] = r.median / ceiling if ceiling else None
        data["ratio_b"] = r.median / sync if sync else None
        scenarios.append(data)
    loads = [x for x in bench.loads if x == x]
    report: dict[str, Any] = {
        "meta": {
            "mode": bench.scale.mode,
            "scale": asdict(bench.scale),
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 1),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "servers": _server_versions(bench),
            "commit": _git_commit(),
            "runs_per_scenario": bench.scale.runs,
            "pipeline_workers": PIPELINE_WORKERS,
            "worker_settings": asdict(WorkerSettings()),
            "load1": {
                "min": min(loads, default=None),
                "max": max(loads, default=None),
                "mean": sum(loads) / len(loads) if loads else None,
            },
            "method": METHOD,
            "ceiling_reference": ceiling_row.key if ceiling_row else None,
        },
        "dataset": bench.data.describe(),
        "references": {
            "ceiling_events_per_s": ceiling,
            "copy_events_per_s": copy,
            "sync_events_per_s": sync,
            "naive_events_per_s": naive,
        },
        "scenarios": scenarios,
        "producer": bench.results.get("producer"),
        "trickle": bench.results.get("trickle"),
        "redis_memory": bench.results.get("redis_memory"),
        "pipeline_peak_rss_kib": bench.results.get("pipeline_peak_rss_kib"),
        "soak": bench.results.get("soak"),
    }
    report["targets"] = evaluate_targets(report, soak_requested)
    return report


def _rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "none"


def evaluate_targets(report: Mapping[str, Any], soak_requested: bool) -> list[dict[str, Any]]:
    refs = report["references"]
    ceiling = refs["ceiling_events_per_s"]
    targets: list[dict[str, Any]] = []

    def add(name: str, measured: str, reference: str, required: str, met: bool | None) -> None:
        targets.append(
            {
                "target": name,
                "measured": measured,
                "reference": reference,
                "required": required,
                "met": met,
            }
        )

    trickle = report.get("trickle")
    if trickle:
        _trickle_targets(trickle, add)
    by_key = {s["key"]: s for s in report["scenarios"]}
    for mode, required in (
        ("backlog", TARGET_BACKLOG_RATIO),
        ("sustained", TARGET_SUSTAINED_RATIO),
    ):
        for flows in PIPELINE_FLOWS:
            row = by_key.get(f"d.{mode}.f{flows}")
            if row is None:
                continue
            ratio = row["median"] / ceiling
            judged = flows >= 32  # the target is for 32 to 10,000 flows
            add(
                f"{mode} at {flows:,} flows vs ceiling (a)",
                f"{ratio:.0%} ({row['median']:,.0f}/s)",
                f"ceiling {ceiling:,.0f}/s",
                f"≥ {required:.0%}" if judged else "(not a target: 1 flow is serial)",
                ratio >= required if judged else None,
            )
    producer = report.get("producer")
    if producer:
        emit, raw = producer["emit"]["us_per_event"], producer["raw_evalsha"]["us_per_event"]
        add(
            "emit vs one raw EVALSHA (3-command script)",
            f"{producer['emit_vs_evalsha']:.2f}x ({emit:.0f} µs; encode "
            f"{producer['encode']['us_per_event']:.0f} µs)",
            f"raw EVALSHA {raw:.0f} µs, PING {producer['ping']['us_per_event']:.0f} µs",
            f"≤ {TARGET_EMIT_VS_EVALSHA:.1f}x",
            producer["emit_vs_evalsha"] <= TARGET_EMIT_VS_EVALSHA,
        )
    targets.extend(codec_targets(report["scenarios"]))
    soak = report.get("soak")
    if soak:
        growth = [g for g in soak["growth"] if g is not None]
        add(
            "worker RSS flat over the trickle soak",
            f"{soak['seconds']:.0f}s at {soak['achieved_events_per_s']:,.0f}/s: "
            + (", ".join(f"{g:+.1%}" for g in growth) or "-"),
            soak["verdict"],
            f"within {RSS_FLAT_TOLERANCE:.0%} (last 20% vs after warm-up)",
            soak["flat"],
        )
    else:
        add(
            "worker RSS flat over a 10-minute trickle soak",
            "not run (add --soak)" if not soak_requested else "no samples",
            "-",
            f"within {RSS_FLAT_TOLERANCE:.0%}",
            None,
        )
    memory = report.get("redis_memory")
    if memory:
        delta = memory["delta_bytes"]
        add(
            "Redis memory back to its start after a drain",
            f"Δ {delta:+,} B; leftover keys: {', '.join(memory['leftover_keys']) or 'none'}",
            f"start {memory['used_memory_before']:,} B, filled {memory['used_memory_filled']:,} B"
            f" ({memory['flows']:,} flows, {memory['events']:,} events)",
            f"no key left but the shard's counter/wake key; Δ ≤ +"
            f"{REDIS_MEMORY_TOLERANCE_BYTES // 1024} KiB",
            not memory["leftover_keys"] and delta <= REDIS_MEMORY_TOLERANCE_BYTES,
        )
    return targets


def _trickle_targets(trickle: Mapping[str, Any], add: Any) -> None:
    flows = trickle["flows"]
    pipe, sync = trickle["pipeline"], trickle["sync"]
    rates = sorted({r["rate"] for r in trickle["rates"]["pipeline"]})
    lowest = rates[0] if rates else None
    p_best, s_best = pipe["highest_kept_up"], sync["highest_kept_up"]
    bound = "≥ " if pipe["at_top_rate"] else ""
    if p_best and s_best:
        ratio = p_best / s_best
        text = f"{bound}{ratio:.1f}x"
    elif p_best and lowest:
        ratio = p_best / lowest  # sync kept up with none: the true ratio is above this
        text = f"> {ratio:.1f}x (sync kept up with none of the rates)"
    else:
        ratio = 0.0
        text = "pipeline kept up with none of the rates"
    add(
        f"trickle: highest rate kept up (≥ {TRICKLE_KEPT_UP:.0%} durable in the window), "
        "pipeline vs sync",
        f"{text}: pipeline {bound}{_rate(p_best)}, sync {_rate(s_best)}",
        f"{flows:,} flows, rates {', '.join(f'{r:,.0f}' for r in rates)}",
        f"≥ {TARGET_TRICKLE_RATIO:.0f}x over ≥ {TARGET_TRICKLE_FLOWS:,} flows",
        ratio >= TARGET_TRICKLE_RATIO and flows >= TARGET_TRICKLE_FLOWS,
    )
    half = trickle.get("pipeline_at_half")
    if half:
        add(
            "trickle: emit→durable p99 at half the pipeline's highest rate",
            f"p99 {half['p99_ms']:.1f} ms, p50 {half['p50_ms']:.1f} ms at {half['rate']:,.0f}/s",
            f"sync at the same rate: {_sync_at(trickle, half['rate'])}",
            f"≤ {TARGET_P99_MS:.0f} ms",
            half["p99_ms"] <= TARGET_P99_MS,
        )
    else:
        add(
            "trickle: emit→durable p99 at half the pipeline's highest rate",
            "no rate kept up",
            "-",
            f"≤ {TARGET_P99_MS:.0f} ms",
            False,
        )


def _sync_at(trickle: Mapping[str, Any], rate: float) -> str:
    row = next((r for r in trickle["rates"]["sync"] if r["rate"] == rate), None)
    if row is None:
        return "not run"
    return f"p99 {row['p99_ms']:,.1f} ms, p50 {row['p50_ms']:,.1f} ms"
