"""The bench's state: connections, worker fork server, generated data, result rows; and the
helpers every scenario uses (a row, its repeated runs, a reset, a wait)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from redis import Redis
from redis.connection import ConnectionPool

from eventlog.config import DatabaseSettings
from eventlog.pool import Pool, open_pool
from eventlog.store import PgEventStore
from lab.bench.config import (
    POLL_SECONDS,
    RUN_TIMEOUT_SECONDS,
    BenchError,
    Scale,
    say,
)
from lab.bench.data import Dataset
from lab.bench.measure import (
    CPU_COMPONENTS,
    CountingConnection,
    CpuMeter,
    PipelineConfig,
    Row,
    Stopwatch,
    cpu_text,
    load_average,
    ping_rtt_us,
)
from lab.bench.servers import BenchEnv, delete_keys, reset_database
from lab.bench.workers import ForkServer, WorkerSet
from producer.producer import Producer


class Bench:
    def __init__(self, env: BenchEnv, scale: Scale) -> None:
        self.env = env
        self.scale = scale
        self.redis = Redis.from_url(env.redis_url)
        self.counting_redis = Redis(
            connection_pool=ConnectionPool.from_url(
                env.redis_url, connection_class=CountingConnection
            )
        )
        self.conn: psycopg.Connection[Any] = psycopg.connect(env.database_url)
        self.pool: Pool = open_pool(
            DatabaseSettings(url=env.database_url, min_connections=1, max_connections=2),
            migrate=False,
            name="chem-bench",
        )
        self.store = PgEventStore(self.pool)
        self.cpu = CpuMeter(self.conn, self.redis)
        self.forks = ForkServer(env.worker_log)
        self.producer = Producer(self.redis, env.queue_settings)
        self.rows: list[Row] = []
        self.configs: list[PipelineConfig] = []
        self.producer_costs: dict[str, Any] = {}
        self.soak: dict[str, Any] | None = None
        self.rq_noop: dict[str, float] = {}
        self.data = Dataset.generate(scale.flows, scale.events_per_flow)

    def close(self) -> None:
        self.forks.close()
        self.pool.close()
        self.conn.close()
        self.redis.close()
        self.counting_redis.close()

    # -- helpers --

    def new_row(self, key: str, group: str, scenario: str, config: str, notes: str = "") -> Row:
        row = Row(key, group, scenario, config, notes=notes)
        row.ping_us = ping_rtt_us(self.redis)
        row.load1 = load_average()
        self.rows.append(row)
        return row

    def repeat(
        self,
        row: Row,
        once: Callable[[Stopwatch], None],
        workers: WorkerSet | None = None,
    ) -> Row:
        """Run ``once`` ``runs`` times; it times its own section (``watch.start/stop``), so
        that resets and fills are neither timed nor counted in the CPU split."""
        cpu: list[dict[str, float]] = []
        for i in range(self.scale.runs):
            watch = Stopwatch(self.cpu, workers.pids() if workers else [])
            once(watch)
            rate = watch.events / watch.seconds
            row.runs.append(rate)
            cpu.append(watch.cpu_us_per_event())
            say(
                f"{row.scenario} [{row.config}] run {i + 1}/{self.scale.runs}: {rate:,.0f} events/s"
                f" (CPU µs/event {cpu_text(cpu[-1])})"
            )
        row.extra["cpu_us_per_event"] = {
            k: statistics.median(c[k] for c in cpu) for k in CPU_COMPONENTS
        }
        return row

    def reset(self) -> None:
        reset_database(self.conn)
        delete_keys(self.redis, f"{self.env.key_prefix}:*")

    def ceiling_data(self) -> Dataset:
        return self.data.head(min(self.scale.ceiling_events, len(self.data.events)))

    def wait_for(
        self, done: Callable[[], bool], workers: WorkerSet | None, interval: float = POLL_SECONDS
    ) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while not done():
            if workers is not None:
                workers.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"not done after {RUN_TIMEOUT_SECONDS:.0f}s")
            time.sleep(interval)

    def pipeline_done(self) -> bool:
        """Every queued event committed: a flow with queued events is always pending, and
        its pending mark goes only once its queue is empty (after the COMMIT and the ack)."""
        return int(self.redis.zcard(self.producer.keys.pending)) == 0
