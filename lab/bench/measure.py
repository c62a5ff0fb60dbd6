"""Measuring: Redis round trips, load, RSS, percentiles, the CPU split of a timed section,
and the result rows."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis

from lab.bench.config import PING_SAMPLES

# --- measuring helpers ------------------------------------------------------------------------


def ping_rtt_us(redis: Redis, samples: int = PING_SAMPLES) -> float:
    """Median Redis PING round trip, µs."""
    times = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        redis.ping()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """``VmHWM`` / ``VmRSS`` of a process, KiB (None if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (0 ≤ q ≤ 100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- CPU accounting ---------------------------------------------------------------------------

CPU_COMPONENTS = ("bench", "workers", "postgres", "redis", "other")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[1].split()  # the name may hold spaces: cut after it
    return int(fields[11]) + int(fields[12])


def machine_busy_ticks() -> int:
    """Every CPU's busy time (user, nice, system, irq, softirq), in clock ticks."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return 0
    user, nice, system, _idle, _iowait, irq, softirq = values
    return user + nice + system + irq + softirq


class CpuMeter:
    """Who spends the CPU during a timed section: this process, the workers, the database's
    backends (+ WAL writer, checkpointer, background writer), redis-server, and everything
    else on the machine (other users of this VM)."""

    def __init__(self, conn: psycopg.Connection[Any], redis: Redis) -> None:
        self.conn = conn
        self.redis_pid: int | None = None
        try:
            info: dict[str, Any] = redis.info("server")
            pid = int(info.get("process_id", 0))
            name = Path(f"/proc/{pid}/comm").read_text().strip() if pid else ""
            if name.startswith(("redis", "valkey")):  # the server is on this machine
                self.redis_pid = pid
        except Exception:  # a remote Redis: its CPU counts as "other"
            self.redis_pid = None

    def postgres_pids(self) -> list[int]:
        with self.conn.transaction():
            rows = self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "OR backend_type IN ('walwriter', 'checkpointer', 'background writer')"
            ).fetchall()
        return [int(r[0]) for r in rows if Path(f"/proc/{r[0]}/stat").exists()]

    def snapshot(self, worker_pids: Sequence[int]) -> tuple[dict[str, int], dict[int, int]]:
        """Ticks per component, and per PostgreSQL pid (backends come and go)."""
        pg = {pid: proc_cpu_ticks(pid) for pid in self.postgres_pids()}
        totals = {
            "bench": proc_cpu_ticks(os.getpid()),
            "workers": sum(proc_cpu_ticks(p) for p in worker_pids),
            "redis": proc_cpu_ticks(self.redis_pid) if self.redis_pid else 0,
            "machine": machine_busy_ticks(),
        }
        return totals, pg


class Stopwatch:
    """Wall time and CPU split of one timed section (start … stop)."""

    def __init__(self, meter: CpuMeter, worker_pids: Sequence[int]) -> None:
        self.meter, self.worker_pids = meter, list(worker_pids)
        self.started = self.seconds = 0.0
        self.events = 0
        self._before: tuple[dict[str, int], dict[int, int]] = ({}, {})
        self._after: tuple[dict[str, int], dict[int, int]] = ({}, {})

    def start(self) -> None:
        self._before = self.meter.snapshot(self.worker_pids)
        self.started = time.perf_counter()

    def stop(self, events: int) -> None:
        self.seconds = time.perf_counter() - self.started
        self.events = events
        self._after = self.meter.snapshot(self.worker_pids)

    def cpu_us_per_event(self) -> dict[str, float]:
        us = 1e6 / _CLOCK_TICKS / max(1, self.events)
        (before, pg_before), (after, pg_after) = self._before, self._after
        delta = {k: after[k] - before[k] for k in before}
        delta["postgres"] = sum(t - pg_before.get(pid, 0) for pid, t in pg_after.items())
        ours = sum(delta[k] for k in ("bench", "workers", "postgres", "redis"))
        result = {k: delta[k] * us for k in ("bench", "workers", "postgres", "redis")}
        result["other"] = max(0, delta["machine"] - ours) * us
        return result


def cpu_text(cpu: Mapping[str, float]) -> str:
    return " / ".join(f"{cpu.get(k, 0.0):.0f}" for k in CPU_COMPONENTS)


# --- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One scenario: events/s per run, and the conditions it ran in."""

    key: str
    group: str  # a | b | c | d | replay
    scenario: str
    config: str
    runs: list[float] = field(default_factory=list)
    ping_us: float = float("nan")
    load1: float = float("nan")
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["median"] = self.median
        data["min"] = min(self.runs) if self.runs else None
        data["max"] = max(self.runs) if self.runs else None
        return data
