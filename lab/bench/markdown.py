"""The report as Markdown: the scenarios, (d) per configuration, the producer, the targets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lab.bench.measure import cpu_text


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    meta, data, refs = report["meta"], report["dataset"], report["references"]
    out: list[str] = []
    out.append(f"# chem-persistence bench ({meta['mode']})")
    out.append("")
    out.append(
        f"{meta['started_at']} · {meta['cpus']} CPUs · PostgreSQL {meta['servers']['postgresql']}"
        f" · Redis {meta['servers']['redis']} · Python {meta['python']} · commit "
        f"{meta['commit'] or '?'} · {meta['seconds']:.0f} s"
    )
    out.append("")
    out.append(
        f"Data: {data['events']:,} events over {data['flows']} flows "
        f"({data['events_per_flow']} each, interleaved as the engine emits them), payload "
        f"{data['avg_payload_bytes']:.0f} B, envelope {data['avg_envelope_bytes']:.0f} B on "
        f"average; {data['artifact_rows']:,} artifact rows (StepFinished: 2 hashes each). "
        f"Events/s = median of {meta['runs_per_scenario']} runs (min-max). "
        f"(a) = the fastest batched INSERT of the pipeline's rows ({_n(refs['a_events_per_s'])}/s; "
        f"events only: {_n(refs['a_events_only_events_per_s'])}/s). PING = Redis round trip "
        "(median of 1,000) just before the scenario; load = 1-minute load average. CPU µs/event: "
        "CPU time per stored event (median run) of this process (the producer or the writer), "
        "the workers, this database's PostgreSQL backends + WAL writer/checkpointer/bgwriter, "
        "redis-server, and the rest of the machine (other users of this 2-core VM)."
    )
    out.append("")
    out.append(
        "| scenario | configuration | events/s | min-max | x (a) | x (b) | x (c) | PING µs | load "
        "| CPU µs/event: bench / workers / PG / Redis / other |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in report["scenarios"]:
        key = s["key"]
        tag = key.split(".")[0]
        label = f"({tag}) {s['scenario']}" if tag in "abcd" else s["scenario"]
        out.append(
            f"| {label} | {s['config']} | {_n(s['median'])} | {_n(s['min'])}-{_n(s['max'])} "
            f"| {_ratio(s['ratio_a'])} | {_ratio(s['ratio_b'])} | {_ratio(s['ratio_c'])} "
            f"| {_n(s['ping_us'])} | {s['load1']:.1f} "
            f"| {cpu_text(s['extra'].get('cpu_us_per_event', {}))} |"
        )
    if report["pipeline"]:
        out.append("")
        out.append("(d) per configuration: latency at half its sustained median, peak worker RSS")
        out.append("")
        out.append(
            "| workers x batch | backlog events/s | sustained events/s | half load offered → "
            "reached | emit→durable p50 | p99 | max | drains/s | events/drain | ms/drain "
            "| peak RSS (VmHWM) |"
        )
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for c in report["pipeline"]:
            lat = c["latency"] or {}
            rss = c["peak_rss_kib"]
            out.append(
                f"| {c['workers']} x {c['batch_size']} | {_n(c['backlog_events_per_s'])} "
                f"| {_n(c['sustained_events_per_s'])} "
                f"| {_n(lat.get('offered_events_per_s'))} → {_n(lat.get('achieved_events_per_s'))} "
                f"({_n(100 * lat.get('single_emit_share', float('nan')))}% single emits) "
                f"| {_n(lat.get('p50_ms'), 1)} ms | {_n(lat.get('p99_ms'), 1)} ms "
                f"| {_n(lat.get('max_ms'), 1)} ms | {_n(lat.get('drains_per_s'))} "
                f"| {_n(lat.get('events_per_drain'), 1)} | {_n(lat.get('ms_per_drain'), 1)} "
                f"| {_n(rss / 1024 if rss else None, 1)} MiB |"
            )
    producer = report["producer"]
    if producer:
        out.append("")
        out.append(
            f"Producer (engine side), {producer['events']:,} events over {producer['flows']} "
            "flows, no worker running (each flow stays pending after its first event)"
        )
        out.append("")
        out.append("| operation | µs/event | min-max | events/s | Redis sends/event | PING µs |")
        out.append("|---|--:|--:|--:|--:|--:|")
        for name in (
            "emit",
            "encode",
            "send",
            "emit_many",
            "send_many",
            "raw_rpush",
            "raw_rpush_each",
        ):
            p = producer[name]
            out.append(
                f"| {p['label']} | {p['us_per_event']:.1f} | {p['min_us']:.1f}-{p['max_us']:.1f} "
                f"| {_n(p['events_per_s'])} | {p['round_trips_per_event']:.3f} "
                f"| {_n(p['ping_us'])} |"
            )
    noop = report.get("rq_noop_job")
    if noop:
        out.append("")
        out.append(
            f"rq's own cost per job (no-op jobs, one SimpleWorker): {noop['ms_per_job']:.2f} ms "
            f"({noop['jobs_per_s']:,.0f} jobs/s; PING {noop['ping_us']:.0f} µs)."
        )
    out.append("")
    out.append("Targets")
    out.append("")
    out.append("| target | required | measured | met |")
    out.append("|---|---|---|:-:|")
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        out.append(f"| {t['target']} | {t['required']} | {t['measured']} | {met} |")
    out.append("")
    out.append(f"Latency method: {meta['latency_method']}")
    return "\n".join(out) + "\n"
