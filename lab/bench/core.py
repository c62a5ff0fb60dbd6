"""The bench's state: connections, generated data, result rows; and the helpers every scenario
uses (a row, its repeated runs, a reset, a wait)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import psycopg
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.keys import ShardKeys
from chem_persistence.producer.producer import Producer
from lab.bench.config import POLL_SECONDS, RUN_TIMEOUT_SECONDS, BenchError, Scale, say
from lab.bench.data import Dataset
from lab.bench.measure import (
    CPU_COMPONENTS,
    CpuMeter,
    Row,
    Stopwatch,
    cpu_text,
    load_average,
    ping_rtt_us,
)
from lab.bench.servers import BenchEnv, delete_keys, reset_database
from lab.bench.workers import WorkerSet


class Bench:
    def __init__(self, env: BenchEnv, scale: Scale) -> None:
        self.env = env
        self.scale = scale
        self.redis = Redis.from_url(env.redis_url)
        self.conn: psycopg.Connection[Any] = psycopg.connect(env.database_url)
        self.pool: Pool = open_pool(
            DatabaseSettings(url=env.database_url, min_connections=1, max_connections=2),
            migrate=False,
            name="chem-bench",
        )
        self.store = PgEventStore(self.pool)
        self.cpu = CpuMeter(self.conn, self.redis)
        self.producer = Producer(self.redis, env.queue_settings)
        self.shard: ShardKeys = self.producer.keys.shard(0)
        self.queue = Queue(env.queue_name, connection=self.redis, serializer=JSONSerializer)
        self.rows: list[Row] = []
        self.results: dict[str, Any] = {}
        self.data = Dataset.generate(64, max(1, scale.ceiling_events // 64))
        self.loads: list[float] = []

    def close(self) -> None:
        self.pool.close()
        self.conn.close()
        self.redis.close()

    # -- helpers --

    def ceiling_data(self) -> Dataset:
        return self.data.head(min(self.scale.ceiling_events, len(self.data.events)))

    def new_row(self, key: str, group: str, scenario: str, config: str, notes: str = "") -> Row:
        row = Row(key, group, scenario, config, notes=notes)
        row.ping_us = ping_rtt_us(self.redis)
        row.load1 = load_average()
        self.loads.append(row.load1)
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
        """Empty the event log; delete what a run left in Redis (a complete run leaves nothing
        but the shard's sweep bookkeeping, which running sweeps still use: kept)."""
        reset_database(self.conn)
        kept = {self.shard.base + "sweep_seq", self.shard.sweeps}
        leftovers = [
            k
            for k in self.redis.scan_iter(match=f"{self.env.key_prefix}:*", count=1000)
            if k.decode() not in kept
        ]
        if leftovers:
            self.redis.delete(*leftovers)

    def reset_all(self) -> None:
        """Before any worker runs: the database, every key of the run and its rq queue."""
        reset_database(self.conn)
        delete_keys(self.redis, f"{self.env.key_prefix}:*")
        self.queue.empty()  # type: ignore[no-untyped-call]

    def wait_for(
        self,
        done: Callable[[], bool],
        workers: WorkerSet | None,
        interval: float = POLL_SECONDS,
        timeout: float = RUN_TIMEOUT_SECONDS,
        what: str = "run",
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if workers is not None:
                workers.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: not done after {timeout:.0f}s")
            time.sleep(interval)

    def queued_flows(self) -> int:
        """Flows with queued events: each one is ready, leased or parked."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.shard.ready)
        pipe.zcard(self.shard.leased)
        pipe.zcard(self.shard.parked)
        return sum(cast(list[int], pipe.execute()))

    def pipeline_done(self) -> bool:
        return self.queued_flows() == 0

    def sweeps_idle(self) -> bool:
        """No sweep registered (queued or running): every sweep has ended its linger."""
        return int(self.redis.zcard(self.shard.sweeps)) == 0 and self.queue.count == 0
