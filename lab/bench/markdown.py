"""The report as Markdown: the targets first (each figure beside its reference and its target),
then the trickle per rate, the pipeline per flow count, every scenario, the producer."""

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


MET = {True: "met", False: "**NOT met**", None: "-"}


def render_markdown(report: Mapping[str, Any]) -> str:
    meta, refs = report["meta"], report["references"]
    load = meta["load1"]
    out: list[str] = [f"# chem-persistence bench ({meta['mode']})", ""]
    out.append(
        f"{meta['started_at']} · {meta['cpus']} CPUs · PostgreSQL {meta['servers']['postgresql']}"
        f" · Redis {meta['servers']['redis']} · Python {meta['python']} · commit "
        f"{meta['commit'] or '?'} · {meta['seconds']:.0f} s · load (1 min) seen "
        f"{_n(load['min'], 1)}-{_n(load['max'], 1)} · {meta['pipeline_workers']} worker "
        f"processes, default settings (batch {meta['worker_settings']['batch_size']}, claim "
        f"{meta['worker_settings']['claim_flows']} flows)"
    )
    out += ["", "## Targets", ""]
    out.append("| target | measured | against | target | verdict |")
    out.append("|---|---|---|---|:-:|")
    for t in report["targets"]:
        out.append(
            f"| {t['target']} | {t['measured']} | {t['reference']} | {t['required']} "
            f"| {MET[t['met']]} |"
        )
    trickle = report.get("trickle")
    if trickle:
        out += _trickle_table(trickle)
    out += _pipeline_table(report)
    out += ["", "## Every scenario", ""]
    out.append(
        f"(a) ceiling = {_n(refs['ceiling_events_per_s'])}/s ({meta['ceiling_reference']}); "
        f"(b) synchronous = {_n(refs['sync_events_per_s'])}/s. CPU µs/event: this process / "
        "workers / PostgreSQL / Redis / the rest of the machine (other users of this VM)."
    )
    out.append("")
    out.append(
        "| scenario | configuration | events/s | min-max | x (a) | x (b) | PING µs | load "
        "| CPU µs/event |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for s in report["scenarios"]:
        tag = s["key"].split(".")[0]
        label = f"({tag}) {s['scenario']}" if tag in ("a", "b", "c", "d") else s["scenario"]
        out.append(
            f"| {label} | {s['config']} | {_n(s['median'])} | {_n(s['min'])}-{_n(s['max'])} "
            f"| {_ratio(s['ratio_a'])} | {_ratio(s['ratio_b'])} | {_n(s['ping_us'])} "
            f"| {s['load1']:.1f} | {cpu_text(s['extra'].get('cpu_us_per_event', {}))} |"
        )
    producer = report.get("producer")
    if producer:
        out += ["", f"## Producer (engine side, {producer['events']:,} events, no worker)", ""]
        out.append("| operation | µs/event | min-max |")
        out.append("|---|--:|--:|")
        for name in ("emit", "emit_busy", "send", "encode", "emit_many", "raw_evalsha", "ping"):
            p = producer[name]
            out.append(
                f"| {p['label']} | {p['us_per_event']:.1f} | {p['min_us']:.1f}-{p['max_us']:.1f} |"
            )
    out += ["", f"Method: {meta['method']}", ""]
    return "\n".join(out)


def _trickle_table(trickle: Mapping[str, Any]) -> list[str]:
    out = ["", f"## Trickle: {trickle['flows']:,} concurrent flows", ""]
    out.append(
        "| offered events/s | window | events/flow | pipeline: durable in window | p50 | p99 "
        "| cost/emit | emitted/s | events/txn | sync append: durable in window | p50 | p99 "
        "| cost/append |"
    )
    out.append("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    sync = {r["rate"]: r for r in trickle["rates"]["sync"]}
    for p in sorted(trickle["rates"]["pipeline"], key=lambda r: r["rate"]):
        s = sync.get(p["rate"], {})
        out.append(
            f"| {p['rate']:,.0f} | {p['window_seconds']:g} s | {p['events_per_flow']:.1f} "
            f"| {100 * p['durable_share']:.1f}% | {_n(p['p50_ms'], 1)} ms "
            f"| {_n(p['p99_ms'], 1)} ms | {_n(p['cost_us'])} µs | {_n(p['achieved_rate'])} "
            f"| {_n(p.get('events_per_transaction'), 1)} "
            f"| {_pct(s.get('durable_share'))} | {_n(s.get('p50_ms'), 1)} ms "
            f"| {_n(s.get('p99_ms'), 1)} ms | {_n(s.get('cost_us'))} µs |"
        )
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pipeline_table(report: Mapping[str, Any]) -> list[str]:
    ceiling = report["references"]["ceiling_events_per_s"]
    rows = {s["key"]: s for s in report["scenarios"]}
    flows = sorted({s["extra"]["flows"] for s in report["scenarios"] if s["key"].startswith("d.")})
    if not flows:
        return []
    out = ["", f"## Pipeline by flow count (ceiling (a) {_n(ceiling)}/s)", ""]
    out.append("| flows | events | backlog events/s | x (a) | sustained events/s | x (a) |")
    out.append("|--:|--:|--:|--:|--:|--:|")
    for f in flows:
        b, s = rows.get(f"d.backlog.f{f}"), rows.get(f"d.sustained.f{f}")
        if b is None or s is None:
            continue
        out.append(
            f"| {f:,} | {b['config'].split(' x ')[-1]} | {_n(b['median'])} "
            f"| {_ratio(b['ratio_a'])} | {_n(s['median'])} | {_ratio(s['ratio_a'])} |"
        )
    return out
