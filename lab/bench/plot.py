"""The bench's PNG: throughput by scenario, the trickle (durable within the window and p99 by
offered rate, pipeline vs synchronous) and the soak's worker RSS. Drawn from the report dict
alone, so a saved JSON can be re-plotted.

matplotlib is the optional ``bench`` extra (``pip install -e '.[bench]'``); without it the
bench still writes its Markdown and JSON and says why there is no PNG.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GROUP_COLORS = {
    "a": "#4c72b0",
    "b": "#c44e52",
    "c": "#dd8452",
    "d": "#55a868",
    "replay": "#8172b3",
}
TARGET_P99_MS = 50.0


SHORT_LABELS = {
    "a.copy.events": "(a) COPY, events only",
    "a.copy": "(a) COPY",
    "a.insert.executemany": "(a) INSERT, executemany",
    "a.insert.multirow": "(a) INSERT, multi-row",
    "a.insert.json": "(a) INSERT, one statement (JSON)",
    "a.insert.multirow.events": "(a) INSERT, multi-row, events only",
    "b.sync": "(b) synchronous append",
    "c.naive": "(c) naive rq, a job per event",
}


def _short(scenario: Mapping[str, Any]) -> str:
    key = str(scenario["key"])
    if key.startswith("d."):
        mode = "backlog" if key.startswith("d.backlog") else "sustained"
        return f"(d) {mode}, {scenario['config']}"[:50]
    if key == "replay":
        return "read + replay one flow"
    return SHORT_LABELS.get(key, str(scenario["scenario"]))[:50]


def plot(report: Mapping[str, Any], path: Path) -> bool:
    """Write the PNG; False (with a note on stderr) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("bench: no PNG (matplotlib is not installed: pip install -e '.[bench]')\n")
        return False

    scenarios = [s for s in report["scenarios"] if s["runs"]]
    soak = report.get("soak")
    panels = 3 if soak else 2
    heights = [max(4.0, 0.28 * len(scenarios)), 4.5] + ([3.5] if soak else [])
    fig, axes = plt.subplots(
        panels, 1, figsize=(11, sum(heights) + 1), gridspec_kw={"height_ratios": heights}
    )

    ax = axes[0]
    labels = [_short(s) for s in scenarios]
    medians = [float(s["median"]) for s in scenarios]
    lows = [m - float(s["min"]) for m, s in zip(medians, scenarios, strict=True)]
    highs = [float(s["max"]) - m for m, s in zip(medians, scenarios, strict=True)]
    colors = [GROUP_COLORS.get(str(s["group"]), "#999999") for s in scenarios]
    positions = list(range(len(scenarios)))[::-1]
    ax.barh(positions, medians, xerr=[lows, highs], color=colors, capsize=2)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("events/s (median, min-max; log scale)")
    reference = report["references"]["ceiling_events_per_s"]
    if reference and not math.isnan(reference):
        ax.axvline(reference, color=GROUP_COLORS["a"], linestyle="--", linewidth=0.8)
        ax.axvline(0.5 * reference, color="#555555", linestyle=":", linewidth=0.8)
        ax.axvline(0.25 * reference, color="#999999", linestyle=":", linewidth=0.8)
    ax.set_title(
        f"Throughput by scenario ({report['meta']['mode']}); dashed: ceiling (a), "
        "dotted: 50% and 25% of it",
        fontsize=9,
    )
    ax.grid(axis="x", which="both", alpha=0.3)

    ax = axes[1]
    trickle = report.get("trickle")
    if trickle:
        twin = ax.twinx()
        for mode, color in (("pipeline", GROUP_COLORS["d"]), ("sync", GROUP_COLORS["b"])):
            rows = sorted(trickle["rates"][mode], key=lambda r: r["rate"])
            rates = [r["rate"] for r in rows]
            ax.plot(
                rates,
                [100 * r["durable_share"] for r in rows],
                "o-",
                color=color,
                label=f"{mode}: % durable in window",
            )
            twin.plot(
                rates,
                [max(r["p99_ms"], 0.1) for r in rows],
                "s--",
                color=color,
                alpha=0.6,
                label=f"{mode}: p99 ms",
            )
        ax.axhline(99, color="#999999", linestyle=":", linewidth=0.8)
        twin.axhline(TARGET_P99_MS, color="#c44e52", linestyle=":", linewidth=0.8)
        twin.set_yscale("log")
        twin.set_ylabel("p99 emit→durable, ms (log)")
        ax.set_xscale("log")
        ax.set_xlabel("offered events/s (log)")
        ax.set_ylabel("% durable within the window")
        ax.set_title(
            f"Trickle over {trickle['flows']:,} flows: dotted 99% kept-up line, 50 ms p99 target",
            fontsize=9,
        )
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
        ax.grid(which="both", alpha=0.3)

    if soak:
        ax = axes[2]
        samples = soak["samples"]
        times = [s["t"] for s in samples]
        for i in range(int(soak["workers"])):
            values = [(s["rss_kib"][i] or 0) / 1024 for s in samples]
            ax.plot(times, values, label=f"worker {i}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS, MiB")
        ax.set_title(
            f"Soak: {soak['workers']} workers, trickle at "
            f"{soak['achieved_events_per_s']:,.0f} events/s",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
