"""`chem-persistence demo`: the whole pipeline end to end, with a parity check per flow.

engine (example chemistry pipeline) → QueuedEventStore → producer → Redis → W worker
processes → PostgreSQL; then every flow read back from PostgreSQL must equal the engine's
in-memory state: same events (kind, position, ts), same FlowInstance, same fingerprints.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
from rich.table import Table
from rq import Queue, Worker

from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.events import FlowCompleted, StepFinished
from chem_persistence.domain.examples import example_flow
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.eventlog.config import DatabaseSettings, redact_url
from chem_persistence.eventlog.pool import open_pool
from chem_persistence.eventlog.repository import PgFlowRepository
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.queued_store import QueuedEventStore
from lab.console import STDOUT, LiveProgress, key_value_table
from lab.embedded import raise_keyboard_interrupt
from lab.local_servers import (
    Services,
    SetupRefused,
    check_redis,
    demo_database,
    resolve_services,
)
from lab.ports import free_port

DRAIN_TIMEOUT_SECONDS = 300.0
WORKER_START_TIMEOUT_SECONDS = 60.0
PLAIN_PROGRESS_SECONDS = 3.0  # a progress line this often when stderr is not a terminal


@dataclass
class Summary:
    flows: int
    events: int
    artifacts: int
    failed_flows: int
    policy_flows: int
    dead_letters: int
    workers: int
    batch_size: int
    seconds: float
    throughput_events_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    flows_at_parity: int
    mismatches: list[str]

    def table(self) -> Table:
        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"≤ {v:.1f} ms"

        rows = [
            (
                "flows",
                f"{self.flows} ({self.failed_flows} failed at a step, "
                f"{self.policy_flows} with a policy step)",
            ),
            ("events", str(self.events)),
            ("artifacts", str(self.artifacts)),
            ("dead letters", str(self.dead_letters)),
            ("workers x batch size", f"{self.workers} x {self.batch_size}"),
            (
                "throughput",
                f"{self.throughput_events_per_s:,.0f} events/s ({self.seconds:.2f} s)",
            ),
            ("emit→durable p50", ms(self.latency_p50_ms)),
            ("emit→durable p99", ms(self.latency_p99_ms)),
            ("flows at parity", f"{self.flows_at_parity} / {self.flows}"),
        ]
        return key_value_table(rows)


@contextmanager
def _workers(
    count: int, env: dict[str, str], ports: list[int], run_id: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    try:
        for i, port in enumerate(ports[:count]):
            worker_env = {**env, "CHEM_METRICS_PORT": str(port)}
            cmd = [
                sys.executable,
                "-m",
                "chem_persistence.worker.cli",
                "worker",
                "--name",
                f"demo-{run_id}-{i}",
            ]
            procs.append(subprocess.Popen(cmd, env=worker_env))
        yield procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


#: rq's set of every worker's key (``rq:worker:<name>``): our workers' names carry the run id.
RQ_WORKERS_KEY = "rq:workers"

_BUCKET = re.compile(r'^chem_emit_to_durable_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _latency_buckets(ports: list[int]) -> dict[float, float]:
    """Cumulative histogram buckets of emit→durable, merged over the workers' /metrics."""
    merged: dict[float, float] = {}
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        for le, value in _BUCKET.findall(text):
            bound = float("inf") if le == "+Inf" else float(le)
            merged[bound] = merged.get(bound, 0.0) + float(value)
    return merged


def _quantile_bound(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q (histograms give bounds, not values)."""
    total = buckets.get(float("inf"), 0.0)
    if total == 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound * 1000 if bound != float("inf") else None
    return None


def run_demo(
    *,
    flows: int,
    workers: int,
    batch_size: int,
    as_json: bool,
    embedded: bool = False,
    keep: bool = False,
) -> int:
    if flows < 1 or workers < 1 or batch_size < 1:
        print("demo: --flows, --workers and --batch-size must be at least 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # stop what we started on SIGTERM too
    try:
        with ExitStack() as stack:
            services: Services = stack.enter_context(resolve_services(force_embedded=embedded))
            check_redis(services.redis_url, services.redis_setting)
            summary = _run(services, flows, workers, batch_size, keep, stack)
    except SetupRefused as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return exc.code
    if as_json:
        print(json.dumps(asdict(summary), indent=2))
    else:
        STDOUT.print(summary.table())
        for line in summary.mismatches[:20]:
            print(f"MISMATCH {line}")
    return 0 if not summary.mismatches else 1


def _run(
    services: Services, flows: int, workers: int, batch_size: int, keep: bool, stack: ExitStack
) -> Summary:
    database_url = stack.enter_context(demo_database(services, keep))
    redis = Redis.from_url(services.redis_url)
    stack.callback(redis.close)
    run_id = _claim_run_id(redis)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": services.redis_url,
        "CHEM_QUEUE": f"chem-demo-{run_id}",
        "CHEM_KEY_PREFIX": f"chemdemo-{run_id}",
        "CHEM_BATCH_SIZE": str(batch_size),
        "CHEM_CHECK_INTERVAL_SECONDS": "2",
    }
    queue_settings = QueueSettings.from_env(env)
    stack.callback(_cleanup_redis, redis, queue_settings, run_id)
    print(
        f"demo: Redis {redact_url(services.redis_url)}: keys {queue_settings.key_prefix}:*,"
        f" rq queue {queue_settings.queue_name} (deleted at the end)",
        file=sys.stderr,
    )
    pool = stack.enter_context(open_pool(DatabaseSettings.from_env(env)))  # migrates first
    store = PgEventStore(pool)
    producer = Producer(redis, queue_settings)
    queued = QueuedEventStore(producer)
    engine = FlowEngine(queued)
    ports = [free_port() for _ in range(workers)]
    procs = stack.enter_context(_workers(workers, env, ports, run_id))
    _wait_for_workers(producer, procs, workers)

    started = time.monotonic()
    definitions = {}
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), "{task.fields[unit]}")
    every, first = PLAIN_PROGRESS_SECONDS, {"description": "emitted", "unit": "flows"}
    with LiveProgress(*columns, TimeElapsedColumn(), total=flows, every=every, **first) as progress:
        for seed in range(flows):
            flow_id = uuid.uuid4()
            definitions[flow_id] = example_flow(seed)
            engine.run(flow_id, definitions[flow_id])
            progress.update(seed + 1)
        flow_ids = list(definitions)
        emitted = sum(len(queued.list(f)) for f in flow_ids)
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        durable = 0
        while durable < emitted and time.monotonic() < deadline:
            durable = store.count_events(flow_ids)
            progress.update(durable, description="durable", unit="events", total=emitted)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{len(dead)} worker process(es) exited (code {dead[0].returncode}); "
                    "their output above says why"
                )
            if durable < emitted:
                if _parked_count(redis, producer) and _backlog(redis, producer, flow_ids) == 0:
                    break  # everything left is parked behind a dead letter
                time.sleep(0.05)
    elapsed = time.monotonic() - started

    buckets = _latency_buckets(ports)
    repo = PgFlowRepository(store)
    mismatches = []
    for flow_id, definition in definitions.items():
        memory_events = queued.list(flow_id)
        pg_events = store.list(flow_id)
        if pg_events != memory_events:
            mismatches.append(
                f"{flow_id}: events differ ({len(pg_events)} stored, {len(memory_events)} emitted)"
            )
            continue
        expected = InMemoryFlowRepository.load(flow_id, memory_events, definition)
        if repo.load(flow_id, definition) != expected:
            mismatches.append(f"{flow_id}: replayed FlowInstance differs")
            continue
        if _fingerprints(pg_events) != _fingerprints(memory_events):
            mismatches.append(f"{flow_id}: fingerprints differ")
    return Summary(
        flows=flows,
        events=emitted,
        artifacts=store.count_stored_artifacts(_outputs(queued, flow_ids)),
        failed_flows=sum(
            1 for f in flow_ids if not isinstance(queued.list(f)[-1].kind, FlowCompleted)
        ),
        policy_flows=sum(1 for d in definitions.values() if "choose" in d.step_ids),
        dead_letters=_parked_count(redis, producer),
        workers=workers,
        batch_size=batch_size,
        seconds=elapsed,
        throughput_events_per_s=durable / elapsed if elapsed else 0.0,
        latency_p50_ms=_quantile_bound(buckets, 0.5),
        latency_p99_ms=_quantile_bound(buckets, 0.99),
        flows_at_parity=flows - len(mismatches),
        mismatches=mismatches,
    )


def _wait_for_workers(producer: Producer, procs: list[subprocess.Popen[bytes]], count: int) -> None:
    """Start the clock only once every worker has registered with rq (fair throughput)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    while Worker.count(queue=producer.queue) < count:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker process exited during start-up; its output above says why")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not register within {WORKER_START_TIMEOUT_SECONDS}s")
        time.sleep(0.05)


def _outputs(queued: QueuedEventStore, flow_ids: list[uuid.UUID]) -> list[str]:
    """Every artifact hash the run's StepFinished events reference, once."""
    hashes: dict[str, None] = {}
    for flow_id in flow_ids:
        for event in queued.list(flow_id):
            if isinstance(event.kind, StepFinished):
                hashes.update(dict.fromkeys(event.kind.outputs))
    return list(hashes)


def _fingerprints(events: list[Any]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e.kind, StepFinished):
            out.append(e.kind.fingerprint)
        elif isinstance(e.kind, FlowCompleted):
            out.append(e.kind.flow_fingerprint)
    return out


def _parked_count(redis: Redis, producer: Producer) -> int:
    return sum(int(redis.zcard(shard.parked)) for shard in producer.keys.all_shards())


def _backlog(redis: Redis, producer: Producer, flow_ids: list[uuid.UUID]) -> int:
    pipe = redis.pipeline(transaction=False)
    for f in flow_ids:
        pipe.llen(producer.keys.for_flow(str(f)).queue(str(f)))
    return sum(pipe.execute())


def _claim_run_id(redis: Redis) -> str:
    """A run id no one else uses in this Redis: its claim key is set only if absent, and every
    key the run writes (its prefix, its rq queue, jobs and workers) carries the id."""
    for _ in range(10):
        run_id = secrets.token_hex(8)
        if redis.set(f"chemdemo-{run_id}:claim", os.getpid(), nx=True):
            return run_id
    raise RuntimeError("could not claim a fresh demo run id in Redis")


def _cleanup_redis(redis: Redis, settings: QueueSettings, run_id: str) -> None:
    """Remove this run's keys, and only those: every one carries the claimed run id."""
    for pattern in (f"{settings.key_prefix}:*", f"rq:*{run_id}*"):
        for key in redis.scan_iter(match=pattern, count=1000):
            redis.delete(key)
    # rq's set of known queues (what rq-dashboard lists) would keep naming the deleted queue,
    # and its set of workers a worker that was killed before it could say goodbye.
    redis.srem(Queue.redis_queues_keys, Queue.redis_queue_namespace_prefix + settings.queue_name)
    ours = list(redis.sscan_iter(RQ_WORKERS_KEY, match=f"*{run_id}*"))
    if ours:
        redis.srem(RQ_WORKERS_KEY, *ours)
