"""The bench's report: the JSON dict (scenarios, ratios, pipeline, producer, soak) and the
targets it is judged on."""

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

from lab.bench.codec import codec_targets
from lab.bench.config import (
    DEFAULT_CONFIG,
    RSS_FLAT_TOLERANCE,
    TARGET_BACKLOG_RATIO,
    TARGET_EMIT_MANY_VS_RAW,
    TARGET_EMIT_VS_SYNC,
    TARGET_P99_MS,
    TARGET_REPLAY_EVENTS_PER_S,
    TARGET_SUSTAINED_RATIO,
)
from lab.bench.core import Bench
from lab.bench.measure import Row

# --- the report -------------------------------------------------------------------------------

LATENCY_METHOD = (
    "emit→durable per event: the bench emits one event at a time (Producer.emit, ts = emit "
    "time) at half the configuration's sustained median, round-robin over the data set's "
    "number of flows; when its single thread falls behind that rate, the overdue events go "
    "in one emit_many (ts = that call's time; the share of single emits is in the JSON). Each "
    "drain worker (the real run_worker) records time.time() right after every append_batch "
    "returns (COMMIT done); latency = commit time - ts, joined on (flow, position). Same "
    "clock, µs resolution. drains/s, events/drain and ms/drain come from the same records "
    "(ms/drain = workers x span / drains: the time a busy worker spends per drain, its rq "
    "job included)."
)


def _median_of(rows: Sequence[Row], keys: Iterable[str]) -> tuple[float, Row | None]:
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
    try:
        root = Path(__file__).resolve().parents[2]
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
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def build_report(bench: Bench, started: float, soak_requested: bool) -> dict[str, Any]:
    rows = bench.rows
    ref_a, ref_a_row = _median_of(
        rows, ("a.insert.executemany", "a.insert.multirow", "a.insert.json")
    )
    events_only, _ = _median_of(rows, ("a.insert.multirow.events",))
    ref_b, _ = _median_of(rows, ("b.sync",))
    ref_c, _ = _median_of(rows, ("c.naive",))
    ordered = (
        [r for r in rows if r.group in ("a", "b", "c")]
        + [r for r in rows if r.key.startswith("d.backlog")]
        + [r for r in rows if r.key.startswith("d.sustained")]
        + [r for r in rows if r.group == "replay"]
        + [r for r in rows if r.group == "codec"]
    )
    scenario_dicts = []
    for r in ordered:
        data = r.as_dict()
        data["ratio_a"] = r.median / ref_a if ref_a else None
        data["ratio_b"] = r.median / ref_b if ref_b else None
        data["ratio_c"] = r.median / ref_c if ref_c else None
        scenario_dicts.append(data)
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
            "latency_method": LATENCY_METHOD,
            "ceiling_reference": ref_a_row.key if ref_a_row else None,
        },
        "dataset": bench.data.describe(),
        "references": {
            "a_events_per_s": ref_a,
            "a_events_only_events_per_s": events_only,
            "b_events_per_s": ref_b,
            "c_events_per_s": ref_c,
        },
        "scenarios": scenario_dicts,
        "pipeline": [
            {
                "workers": c.workers,
                "batch_size": c.batch_size,
                "backlog_events_per_s": c.backlog.median,
                "sustained_events_per_s": c.sustained.median,
                "latency": c.latency,
                "peak_rss_kib": c.peak_rss_kib,
            }
            for c in bench.configs
        ],
        "producer": bench.producer_costs,
        "rq_noop_job": bench.rq_noop,
        "soak": bench.soak,
    }
    report["targets"] = evaluate_targets(report, soak_requested)
    return report


def evaluate_targets(report: Mapping[str, Any], soak_requested: bool) -> list[dict[str, Any]]:
    refs = report["references"]
    ref_a = refs["a_events_per_s"]
    pipeline = report["pipeline"]
    producer = report["producer"]
    targets: list[dict[str, Any]] = []

    def add(name: str, required: str, measured: str, met: bool | None) -> None:
        targets.append({"target": name, "required": required, "measured": measured, "met": met})

    if pipeline:
        best = max(pipeline, key=lambda c: c["backlog_events_per_s"])
        ratio = best["backlog_events_per_s"] / ref_a
        add(
            "backlog drain vs batched-INSERT ceiling (a)",
            f"≥ {TARGET_BACKLOG_RATIO:.0%}",
            f"{ratio:.0%}: {best['backlog_events_per_s']:,.0f}/s "
            f"({best['workers']} x {best['batch_size']}) vs {ref_a:,.0f}/s",
            ratio >= TARGET_BACKLOG_RATIO,
        )
        best = max(pipeline, key=lambda c: c["sustained_events_per_s"])
        ratio = best["sustained_events_per_s"] / ref_a
        add(
            "sustained end to end vs (a)",
            f"≥ {TARGET_SUSTAINED_RATIO:.0%}",
            f"{ratio:.0%}: {best['sustained_events_per_s']:,.0f}/s "
            f"({best['workers']} x {best['batch_size']}) vs {ref_a:,.0f}/s",
            ratio >= TARGET_SUSTAINED_RATIO,
        )
    if producer:
        emit = producer["emit"]
        n, flows = producer["events"], producer["flows"]
        expected = 1 + 2 * flows / n  # a flow's first emit also enqueues its drain (2 sends)
        add(
            "one emit = one Redis round trip",
            f"≤ {expected:.3f} sends/emit (1, +2 for each flow's first emit: rq enqueue)",
            f"{emit['round_trips_per_event']:.3f} sends/emit; emit {emit['us_per_event']:.0f} µs "
            f"≈ encode {producer['encode']['us_per_event']:.0f} µs + the Lua call "
            f"{producer['send']['us_per_event']:.0f} µs (PING {emit['ping_us']:.0f} µs)",
            emit["round_trips_per_event"] <= expected + 1e-3,
        )
        sync_us = 1e6 / refs["b_events_per_s"]
        ratio = emit["us_per_event"] / sync_us
        add(
            "engine's cost per event vs synchronous path (b)",
            f"≤ {TARGET_EMIT_VS_SYNC:.0%}",
            f"{ratio:.1%}: emit {emit['us_per_event']:.0f} µs vs append {sync_us:,.0f} µs",
            ratio <= TARGET_EMIT_VS_SYNC,
        )
        many, raw = producer["emit_many"], producer["raw_rpush"]
        ratio = many["events_per_s"] / raw["events_per_s"]
        add(
            "emit_many vs pipelined raw RPUSH of the same envelopes",
            f"≥ {TARGET_EMIT_MANY_VS_RAW:.0%}",
            f"{ratio:.0%}: {many['events_per_s']:,.0f}/s vs {raw['events_per_s']:,.0f}/s "
            f"(send_many of pre-encoded envelopes: "
            f"{producer['send_many']['events_per_s'] / raw['events_per_s']:.0%})",
            ratio >= TARGET_EMIT_MANY_VS_RAW,
        )
    default = next((c for c in pipeline if (c["workers"], c["batch_size"]) == DEFAULT_CONFIG), None)
    if default and default["latency"]:
        lat = default["latency"]
        meeting = sum(
            1 for c in pipeline if c["latency"] and c["latency"]["p99_ms"] <= TARGET_P99_MS
        )
        noop = report.get("rq_noop_job") or {}
        # Busy workers visit each of F flows once per cycle C = F x (time per drain) / W: an
        # event waits for its flow's next visit (about C/2, at most C), then its drain. rq's
        # own cost per job is a floor under the time per drain, hence under C.
        cycle = lat["flows"] * lat["ms_per_drain"] / lat["workers"]
        floor = lat["flows"] * noop.get("ms_per_job", float("nan")) / lat["workers"]
        add(
            "emit→durable p99 at half load (default 2 x 500)",
            f"≤ {TARGET_P99_MS:.0f} ms",
            f"p99 {lat['p99_ms']:.1f} ms, p50 {lat['p50_ms']:.1f} ms at "
            f"{lat['achieved_events_per_s']:,.0f}/s; "
            f"{meeting}/{len(pipeline)} configurations meet it. Bound: {lat['flows']} flows, "
            f"{lat['workers']} workers, {lat['ms_per_drain']:.1f} ms per drain "
            f"({lat['events_per_drain']:.1f} events each): a flow is visited every "
            f"F x drain / W = {cycle:,.0f} ms; rq alone costs "
            f"{noop.get('ms_per_job', float('nan')):.1f} ms per (no-op) job, so that visit "
            f"cycle cannot drop below {floor:,.0f} ms while every drain is one rq job",
            lat["p99_ms"] <= TARGET_P99_MS,
        )
    replay = next((s for s in report["scenarios"] if s["key"] == "replay"), None)
    if replay:
        add(
            "read + replay of one flow",
            f"≥ {TARGET_REPLAY_EVENTS_PER_S:,.0f} events/s",
            f"{replay['median']:,.0f} events/s (read alone "
            f"{replay['extra']['read_only_events_per_s']:,.0f}/s; with the garbage collector "
            f"paused {replay['extra']['gc_paused_events_per_s']:,.0f}/s). Bound: fetching the "
            f"rows alone {replay['extra']['bound_fetch_events_per_s']:,.0f}/s, + json.loads of "
            f"each payload {replay['extra']['bound_fetch_json_loads_events_per_s']:,.0f}/s",
            replay["median"] >= TARGET_REPLAY_EVENTS_PER_S,
        )
    targets.extend(codec_targets(report["scenarios"]))
    soak = report.get("soak")
    if soak:
        add(
            "worker RSS flat over the sustained soak",
            f"max RSS of the last 20% of samples within {RSS_FLAT_TOLERANCE:.0%} (or 1 MiB) "
            "of the 20% after warm-up",
            f"{soak['seconds']:.0f}s at {soak['achieved_events_per_s']:,.0f}/s: {soak['verdict']}",
            soak["flat"],
        )
    else:
        add(
            "worker RSS flat over a 10-minute sustained run",
            "flat",
            "not run (add --soak)" if not soak_requested else "no samples",
            None,
        )
    return targets
