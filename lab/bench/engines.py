"""The trickle's engine processes: each one plays the engine's loop on its share of the flows,
at its share of the rate, on a fixed schedule, through the public ``Producer.emit`` (pipeline)
or the synchronous ``PgEventStore.append`` (sync), and records per event when it was emitted,
what the call cost and (sync) when it was durable.

A process is started once (``multiprocessing`` spawn: nothing inherited) and runs tasks sent
over its pipe: ``prepare`` (build the events, open the connections, warm up), then ``go`` with
the common start time, then it answers with its records.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lab.bench.config import BenchError

SPIN_SECONDS = 0.0005  # below this the schedule is waited by spinning, not sleeping


@dataclass(frozen=True)
class Task:
    mode: str  # "pipeline" | "sync"
    flows: list[str]  # this process's flows
    flow_base: int  # index of its first flow among all the run's flows (picks the kinds)
    rate: float  # this process's events/s
    seconds: float  # the window
    phase: float  # offset of this process's schedule, in event intervals (0 <= phase < 1)
    grace: float  # no event is emitted later than window + grace
    seed: int
    record: bool = True  # per-event records (off for the soak: counts and sums only)
    redis_url: str = ""
    queue: str = ""
    key_prefix: str = ""
    database_url: str = ""


@dataclass
class EngineResult:
    offered: int = 0
    emitted: int = 0
    cost_us_sum: float = 0.0
    late_start_ms: float = 0.0
    # per event: flow index (into Task.flows), position, emit time, call cost µs, durable time
    records: list[tuple[int, int, float, float, float]] = field(default_factory=list)
    error: str | None = None


def engine_main(conn: multiprocessing.connection.Connection) -> None:
    from lab.bench.data import KindSource

    kinds = KindSource(seed=4_000_000)
    while True:
        message = conn.recv()
        if message is None:
            return
        task: Task = message
        try:
            run = _prepare(task, kinds)
            conn.send("ready")
            start = conn.recv()
            conn.send(run(start))
        except Exception as exc:  # reported to the bench, which stops with the message
            conn.send(EngineResult(error=f"{type(exc).__name__}: {exc}"))


def _prepare(task: Task, kinds: Any) -> Any:
    from chem_persistence.domain.events import FlowEvent

    flows = [uuid.UUID(f) for f in task.flows]
    offered = int(task.rate * task.seconds)
    count = len(flows)
    if task.mode == "pipeline":
        from redis import Redis

        from chem_persistence.producer.config import QueueSettings
        from chem_persistence.producer.producer import Producer

        redis = Redis.from_url(task.redis_url)
        producer = Producer(redis, QueueSettings(task.redis_url, task.queue, task.key_prefix))
        redis.ping()

        def call(event: FlowEvent) -> None:
            producer.emit(event)

        close = redis.close
    else:
        from chem_persistence.eventlog.config import DatabaseSettings
        from chem_persistence.eventlog.pool import open_pool
        from chem_persistence.eventlog.store import PgEventStore

        pool = open_pool(
            DatabaseSettings(url=task.database_url, min_connections=1, max_connections=1),
            migrate=False,
            name="chem-bench-engine",
        )
        store = PgEventStore(pool)

        def call(event: FlowEvent) -> None:
            store.append(event.flow_id, event.kind, event.ts)

        close = pool.close

    def run(start: float) -> EngineResult:
        result = EngineResult(offered=offered)
        stop_at = start + task.seconds + task.grace
        interval = 1.0 / task.rate
        now_wall = time.time
        perf = time.perf_counter
        first = start + task.phase * interval
        result.late_start_ms = max(0.0, (now_wall() - first) * 1000)
        try:
            for j in range(offered):
                due = first + j * interval
                now = now_wall()
                if now < due:
                    if due - now > SPIN_SECONDS:
                        time.sleep(due - now - SPIN_SECONDS)
                    while now_wall() < due:
                        pass
                elif now > stop_at:
                    break  # fell behind past the window: the rest is not offered in time
                index, position = j % count, j // count
                kind = kinds.kind(task.flow_base + index, position)
                ts = datetime.now(UTC)
                c0 = perf()
                call(FlowEvent(position, flows[index], kind, ts))
                c1 = perf()
                cost = (c1 - c0) * 1e6
                result.emitted += 1
                result.cost_us_sum += cost
                if task.record:
                    durable = now_wall() if task.mode == "sync" else 0.0
                    result.records.append((index, position, ts.timestamp(), cost, durable))
        finally:
            close()
        return result

    return run


class Engines:
    """``count`` engine processes, reused for every task."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for _ in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=engine_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(
        self,
        tasks: list[Task],
        tick: Callable[[float], None] | None = None,
        start_delay: float = 0.2,
    ) -> tuple[float, list[EngineResult]]:
        """Run one task per process from a common start; returns the start (unix time) and
        the results. ``tick(seconds since start)`` is called about twice a second meanwhile."""
        for conn, task in zip(self.conns, tasks, strict=True):
            conn.send(task)
        for conn in self.conns:
            reply = self._recv(conn, 300.0)
            if isinstance(reply, EngineResult):
                raise BenchError(f"trickle engine failed while preparing: {reply.error}")
        start = time.time() + start_delay
        for conn in self.conns:
            conn.send(start)
        deadline = time.monotonic() + max(t.seconds + t.grace for t in tasks) + 120.0
        results = []
        for conn in self.conns:
            while not conn.poll(0.5):
                if tick is not None:
                    tick(time.time() - start)
                if time.monotonic() > deadline:
                    raise BenchError("a trickle engine did not finish in time")
            results.append(self._recv(conn, 1.0))
        for r in results:
            if not isinstance(r, EngineResult) or r.error:
                raise BenchError(f"trickle engine failed: {getattr(r, 'error', r)}")
        return start, results

    def _recv(self, conn: multiprocessing.connection.Connection, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise BenchError(f"a trickle engine did not answer within {timeout:.0f}s")
        try:
            return conn.recv()
        except EOFError:
            raise BenchError("a trickle engine process died") from None

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
