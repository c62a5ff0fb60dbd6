"""`chem-persistence bench`: what each way of storing the engine's events costs, on this machine.

One invocation, the same servers, the same generated events (realistic payloads of about 300
bytes, StepFinished with two artifact hashes among them, spread over many flows):

(a) ceilings: COPY, and the fastest batched INSERTs at 1,000 events per transaction, writing
    the same rows the pipeline writes (events + the StepFinished artifact rows); events-only
    variants are shown too. "(a)" in the ratios is the fastest batched INSERT of those rows.
(b) the synchronous path: ``PgEventStore.append`` per event, one transaction each.
(c) the naive rq path: one rq job per event, each appending one event, one SimpleWorker
    (one worker: more would store a flow's events out of order).
(d) this pipeline: producer → Redis → drain workers → PostgreSQL, with 1, 2, 4 workers and
    batch sizes 100, 500, 2,000; draining a pre-filled backlog, and sustained (the producer's
    ``emit_many`` running at the same time); emit→durable latency at half the sustained maximum;
    the workers' peak RSS. Also the producer's cost per ``emit`` / ``emit_many`` event, and
    read + replay of one 100,000-event flow.

Every throughput is the median of ``runs`` runs (min-max shown). The PostgreSQL database is
fresh (``chem_bench_<random>``, dropped at the end) and emptied before every run; the Redis
keys and rq queues are this run's own and deleted at the end. A Redis PING round trip (median of
1,000) is recorded just before each scenario: this VM's idle cores wake slowly, so compare
scenarios as ratios within one run.

Latency method: each drain worker of (d) is the real ``run_worker`` whose store records, after
every ``append_batch`` returns (COMMIT done), the flow, the positions and ``time.time()``; the
bench emits one event at a time at half load with ``ts`` = the emit time (the events due in one
``emit_many`` when its thread falls behind), and joins the two: emit→durable = commit time - ts,
per event, same clock.

CPU: every timed run also records the CPU time spent, per stored event, by this process, the
workers, this database's PostgreSQL processes, redis-server and the rest of the machine (other
users of the VM), from /proc: what bounds a scenario shows there.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import IO, Any, cast
from uuid import UUID

import psycopg
from psycopg import sql
from redis import Redis
from redis.connection import Connection, ConnectionPool
from rq import Queue, SimpleWorker, Worker
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from domain.canonical import flow_fingerprint, hash_text
from domain.codec import encode_kind
from domain.definition import FlowDefinition, StepDefinition, StepOutcome, StepSuccess
from domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    PropertyPreferenceAssigned,
    StepFinished,
    StepSignal,
    StepStarted,
)
from domain.json_values import JsonValue, dumps
from domain.replay import InMemoryFlowRepository
from domain.store import utc_now
from eventlog import migrate
from eventlog.config import DatabaseSettings, redact_url
from eventlog.pool import Pool, open_pool
from eventlog.store import PgEventStore
from producer.config import QueueSettings
from producer.jobs import enqueue_drain
from producer.producer import EMIT_MANY_CHUNK, Producer, now_ms
from producer.wire import decode_envelope
from worker.services import LOCAL_PG_ADMIN_URL, LOCAL_REDIS_URL, url_with_database

# --- sizes ----------------------------------------------------------------------------------

#: Environment knob (private, for the smoke test): multiply every event count and duration.
SCALE_ENV = "CHEM_BENCH_SCALE"
#: Environment: the maintenance database where chem_bench_<random> is created and dropped.
ADMIN_URL_ENV = "CHEM_BENCH_ADMIN_URL"
#: Set in the (d) workers' environment: where their store records each COMMIT.
COMMIT_LOG_ENV = "CHEM_BENCH_COMMIT_LOG"

WORKER_COUNTS = (1, 2, 4)
BATCH_SIZES = (100, 500, 2000)
CEILING_BATCH = 1000  # events per transaction of the (a) ceilings
DEFAULT_CONFIG = (2, 500)  # the documented defaults: the config the latency target is read on
PING_SAMPLES = 1000
RUN_TIMEOUT_SECONDS = 300.0
WORKER_START_TIMEOUT_SECONDS = 60.0
WORKER_STOP_SECONDS = 15.0
POLL_SECONDS = 0.002
SUSTAINED_CHUNK = 1000  # events per emit_many call of the sustained producer
SOAK_SAMPLE_SECONDS = 10.0

TARGET_BACKLOG_RATIO = 0.50
TARGET_SUSTAINED_RATIO = 0.25
TARGET_EMIT_VS_SYNC = 0.50
TARGET_EMIT_MANY_VS_RAW = 0.50
TARGET_P99_MS = 50.0
TARGET_REPLAY_EVENTS_PER_S = 100_000.0
RSS_FLAT_TOLERANCE = 0.02  # soak: the end's RSS within 2% (or 1 MiB) of after warm-up
RSS_FLAT_MIN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Scale:
    mode: str
    flows: int  # flows of the (d) data set
    events_per_flow: int
    ceiling_events: int  # per (a) run
    sync_events: int  # per (b) run
    naive_events: int  # per (c) run
    producer_events: int  # per producer-cost run
    latency_seconds: float  # per (d) latency run
    replay_events: int  # the one long flow
    runs: int = 3
    soak_seconds: float = 600.0

    def scaled(self, factor: float) -> Scale:
        def n(value: int, floor: int) -> int:
            return max(floor, int(value * factor))

        return Scale(
            mode=self.mode if factor == 1 else f"{self.mode}x{factor:g}",
            flows=n(self.flows, 4),
            events_per_flow=n(self.events_per_flow, 20),
            ceiling_events=n(self.ceiling_events, 200),
            sync_events=n(self.sync_events, 20),
            naive_events=n(self.naive_events, 20),
            producer_events=n(self.producer_events, 100),
            latency_seconds=max(0.5, self.latency_seconds * factor),
            replay_events=n(self.replay_events, 200),
            runs=self.runs,
            soak_seconds=max(5.0, self.soak_seconds * factor),
        )


FULL = Scale(
    mode="full",
    flows=64,
    events_per_flow=400,
    ceiling_events=25_600,
    sync_events=1_500,
    naive_events=1_000,
    producer_events=10_000,
    latency_seconds=4.0,
    replay_events=100_000,
)
QUICK = Scale(
    mode="quick",
    flows=32,
    events_per_flow=100,
    ceiling_events=3_200,
    sync_events=200,
    naive_events=250,
    producer_events=2_000,
    latency_seconds=1.0,
    replay_events=100_000,
)


# The ceilings' statements: the classic row-at-a-time INSERTs (run by executemany in pipeline
# mode), and the one-statement form of the store (a JSON array, one parse, one round trip).
CEILING_INSERT_EVENT = (
    "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload) "
    "VALUES (%s, %s, %s, %s, %s::jsonb) RETURNING seq"
)
CEILING_INSERT_ARTIFACT = (
    "INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, "
    "produced_in_seq) VALUES (%s, %s, %s::jsonb, %s::jsonb, %s) "
    "ON CONFLICT (artifact_hash) DO NOTHING"
)
CEILING_INSERT_JSON = """
WITH inserted AS (
    INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)
    SELECT (e->>0)::uuid, (e->>1)::int, (e->>2)::timestamptz, e->>3, e->4
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS b(e, n) ORDER BY n
    RETURNING seq, event_type, payload
)
INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, produced_in_seq)
SELECT o.hash, 'unknown', 'null'::jsonb, NULL, i.seq
FROM inserted i
CROSS JOIN LATERAL jsonb_array_elements_text(i.payload->'StepFinished'->'outputs') AS o(hash)
WHERE i.event_type = 'stepfinished'
ORDER BY i.seq
ON CONFLICT (artifact_hash) DO NOTHING
"""


class BenchError(RuntimeError):
    """A run did not store what it was given (or a process died): the numbers would lie."""


# --- progress -------------------------------------------------------------------------------

_STARTED = time.monotonic()


def _say(message: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - _STARTED:7.1f}s] {message}\n")
    sys.stderr.flush()


# --- the generated events ---------------------------------------------------------------------

_SMILES = (
    "c1ccccc1O",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "C1=CC=C(C=C1)C=O",
    "CCO",
    "O=C(O)c1ccccc1",
)
_NAMES = ("éthanol", "β-carotène", "caffeine", "aspirin", "ацетон", "phénol")
_STEP_NAMES = ("acquire", "standardize", "properties", "choose", "report")


def _step_events(seed: int, step: int) -> list[FlowEventKind]:
    """One step as the engine emits it: started, a progress signal, a preference on every
    other step, finished with two artifact hashes."""
    sid = f"{_STEP_NAMES[step % len(_STEP_NAMES)]}-{step:05d}"
    r = (seed * 7919 + step * 104729) % 1_000_003
    progress: dict[str, JsonValue] = {
        "batch": f"B{seed}-{step:05d}",
        "done": 40 + r % 9,
        "total": 48,
        "sample": [
            {"smiles": _SMILES[(r + k) % len(_SMILES)], "name": _NAMES[(r + k) % len(_NAMES)]}
            for k in range(5)
        ],
        "mean_weight_g_per_mol": round(120 + (r % 5000) / 37, 3),
        "units": {"weight": "g/mol", "elapsed": "ms", "logp": "log10"},
        "logp_range": [round(-1 + (r % 13) / 10, 2), round(2 + (r % 17) / 10, 2)],
        "elapsed_ms": 800 + r % 4000,
        "host": f"chem-engine-{r % 4:02d}",
    }
    kinds: list[FlowEventKind] = [
        StepStarted(step, sid),
        StepSignal(step, sid, "PROGRESS", progress),
    ]
    if step % 2 == 0:
        rationale: dict[str, JsonValue] = {
            "why": "lowest variance across the batch",
            "n": 48,
            "score": round(0.5 + (r % 50) / 100, 2),
            "candidates": ["weight", "logp", "tpsa"],
        }
        params_hash = hash_text(f"params:{seed}:{step}")
        kinds.append(PropertyPreferenceAssigned("logp", "minvar-v2", params_hash, rationale))
    outputs = (hash_text(f"artifact:{seed}:{step}:0"), hash_text(f"artifact:{seed}:{step}:1"))
    kinds.append(StepFinished(step, sid, outputs, hash_text(f"fingerprint:{seed}:{step}")))
    return kinds


def flow_kinds(seed: int, count: int) -> list[FlowEventKind]:
    """``count`` events of one flow: FlowInitialized, whole steps, heartbeat signals to fill,
    FlowCompleted. Deterministic per seed; artifact hashes unique per (seed, step)."""
    room = max(0, count - 2)
    body: list[FlowEventKind] = []
    fingerprints: list[str] = []
    step = 0
    while True:
        events = _step_events(seed, step)
        if len(body) + len(events) > room:
            break
        body.extend(events)
        finished = events[-1]
        assert isinstance(finished, StepFinished)
        fingerprints.append(finished.fingerprint)
        step += 1
    while len(body) < room:
        beat: dict[str, JsonValue] = {"seq": len(body), "host": f"chem-engine-{seed % 4:02d}"}
        body.append(StepSignal(max(0, step - 1), "heartbeat", "HEARTBEAT", beat))
    kinds: list[FlowEventKind] = [FlowInitialized(hash_text(f"definition:{seed}"), step), *body]
    kinds.append(FlowCompleted(flow_fingerprint(fingerprints)))
    return kinds[:count]


def _noop_step(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    return StepSuccess(())


def flow_definition(step_count: int) -> FlowDefinition:
    """A definition with ``step_count`` steps, for replaying a generated flow."""
    return FlowDefinition(
        tuple(StepDefinition(f"step-{i}", _noop_step, source=(i == 0)) for i in range(step_count))
    )


@dataclass
class Dataset:
    """The generated events of (d), in the order the engine emits them (flows interleaved),
    with what each scenario needs prepared ahead (not timed)."""

    events: list[FlowEvent]
    envelopes: list[str]
    rows: list[tuple[UUID, int, datetime, str, str]]  # event_log columns, payload as JSON text
    outputs: list[tuple[str, ...]]  # artifact hashes per event
    flows: list[UUID]

    @classmethod
    def generate(cls, flows: int, per_flow: int, seed: int = 0) -> Dataset:
        base = datetime.now(UTC) - timedelta(hours=1)
        flow_ids = [uuid.UUID(int=(seed << 64) | (i + 1), version=4) for i in range(flows)]
        per: list[list[FlowEventKind]] = [
            flow_kinds(seed * 100_000 + i, per_flow) for i in range(flows)
        ]
        events: list[FlowEvent] = []
        tick = 0
        for position in range(per_flow):
            for flow, kinds in zip(flow_ids, per, strict=True):
                events.append(
                    FlowEvent(position, flow, kinds[position], base + timedelta(microseconds=tick))
                )
                tick += 7
        return cls.of(events, flow_ids)

    @classmethod
    def of(cls, events: list[FlowEvent], flows: list[UUID]) -> Dataset:
        from producer.wire import encode_envelope

        envelopes = [encode_envelope(e) for e in events]
        rows = [(e.flow_id, e.seq, e.ts, e.event_type, dumps(encode_kind(e.kind))) for e in events]
        outputs = [e.kind.outputs if isinstance(e.kind, StepFinished) else () for e in events]
        return cls(events, envelopes, rows, outputs, flows)

    @property
    def artifact_rows(self) -> int:
        return len({h for hashes in self.outputs for h in hashes})

    def head(self, n: int) -> Dataset:
        return Dataset(
            self.events[:n], self.envelopes[:n], self.rows[:n], self.outputs[:n], self.flows
        )

    def by_flow(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for event, envelope in zip(self.events, self.envelopes, strict=True):
            grouped.setdefault(str(event.flow_id), []).append(envelope)
        return grouped

    def describe(self) -> dict[str, Any]:
        payload = [len(r[4].encode()) for r in self.rows]
        envelope = [len(e.encode()) for e in self.envelopes]
        kinds: dict[str, int] = {}
        for e in self.events:
            kinds[e.event_type] = kinds.get(e.event_type, 0) + 1
        return {
            "events": len(self.events),
            "flows": len(self.flows),
            "events_per_flow": len(self.events) // max(1, len(self.flows)),
            "avg_payload_bytes": round(statistics.mean(payload), 1),
            "avg_envelope_bytes": round(statistics.mean(envelope), 1),
            "artifact_rows": self.artifact_rows,
            "kinds": kinds,
        }


def event_source(flows: int, seed: int, per_flow: int) -> Iterator[tuple[UUID, int, FlowEventKind]]:
    """Endless (flow, position, kind), round-robin over fresh flows: each flow's generated
    events, then its steps again (positions keep growing) for as long as it is asked."""
    flow_ids = [uuid.uuid4() for _ in range(flows)]
    kinds = [flow_kinds(seed + i, max(4, per_flow)) for i in range(flows)]
    position = 0
    while True:
        for flow, flow_kinds_ in zip(flow_ids, kinds, strict=True):
            if position < len(flow_kinds_) - 1:
                kind = flow_kinds_[position]
            else:  # past the generated flow: its middle again (no second FlowInitialized)
                kind = flow_kinds_[1 + (position - 1) % (len(flow_kinds_) - 2)]
            yield flow, position, kind
        position += 1


# --- measuring helpers ------------------------------------------------------------------------


class CountingConnection(Connection):
    """A redis-py connection that counts what it sends: one send = one round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def _gone(redis: Redis, key: str) -> bool:
    return not redis.exists(key)


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


def _cpu_text(cpu: Mapping[str, float]) -> str:
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


@dataclass
class PipelineConfig:
    """(d) for one (workers, batch size): the throughputs, the latency run and the RSS."""

    workers: int
    batch_size: int
    backlog: Row
    sustained: Row
    latency: dict[str, Any] = field(default_factory=dict)
    peak_rss_kib: int | None = None


# --- the bench environment: database, Redis names, cleanup ------------------------------------


@dataclass
class BenchEnv:
    run_id: str
    admin_url: str
    database_url: str
    redis_url: str
    queue_name: str
    naive_queue_name: str
    key_prefix: str
    scratch: Path
    worker_log: Path

    @property
    def queue_settings(self) -> QueueSettings:
        return QueueSettings(self.redis_url, self.queue_name, self.key_prefix)

    def worker_env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CHEM_", "DATABASE_")) and k != "REDIS_URL"
        }
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            CHEM_QUEUE=self.queue_name,
            CHEM_KEY_PREFIX=self.key_prefix,
        )
        env.update(extra)
        return env


def _admin_url() -> str:
    explicit = os.environ.get(ADMIN_URL_ENV)
    if explicit:
        return explicit
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        return url_with_database(database_url, "postgres")
    return LOCAL_PG_ADMIN_URL


@contextmanager
def bench_environment(output_dir: Path) -> Iterator[BenchEnv]:
    """A fresh database (migrated), this run's Redis names; everything removed at the end."""
    run_id = secrets.token_hex(4)
    admin_url = _admin_url()
    name = f"chem_bench_{run_id}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = url_with_database(admin_url, name)
    redis_url = os.environ.get("REDIS_URL") or LOCAL_REDIS_URL
    scratch = Path(tempfile.mkdtemp(prefix=f"chem-bench-{run_id}-"))
    env = BenchEnv(
        run_id=run_id,
        admin_url=admin_url,
        database_url=database_url,
        redis_url=redis_url,
        queue_name=f"chem-bench-{run_id}",
        naive_queue_name=f"chem-bench-{run_id}-naive",
        key_prefix=f"chembench-{run_id}",
        scratch=scratch,
        worker_log=output_dir / "bench-workers.log",
    )
    _say(f"database {redact_url(database_url)}, Redis {redis_url}, keys {env.key_prefix}:*")
    try:
        migrate.upgrade(database_url)
        yield env
    finally:
        redis = Redis.from_url(redis_url)
        try:
            for queue in (env.queue_name, env.naive_queue_name):
                cleanup_queue(redis, queue)
            delete_keys(redis, f"{env.key_prefix}:*")
            forget_workers(redis, f"bench-{run_id}-")
        finally:
            redis.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        for path in scratch.iterdir():
            path.unlink()
        scratch.rmdir()
        _say(f"dropped {name}, deleted the run's Redis keys")


def delete_keys(redis: Redis, pattern: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(redis.delete(*batch))
            batch = []
    if batch:
        deleted += int(redis.delete(*batch))
    return deleted


def cleanup_queue(redis: Redis, name: str) -> None:
    """Forget an rq queue: its jobs (queued or in any registry), its keys, its name."""
    queue = Queue(name, connection=redis, serializer=JSONSerializer)
    job_ids = set(queue.get_job_ids())
    for registry_class in (
        FailedJobRegistry,
        StartedJobRegistry,
        FinishedJobRegistry,
        DeferredJobRegistry,
        ScheduledJobRegistry,
        CanceledJobRegistry,
    ):
        registry = registry_class(queue=queue)
        job_ids.update(registry.get_job_ids())
    for chunk in chunks(sorted(job_ids), 500):
        redis.delete(*(f"rq:job:{job_id}" for job_id in chunk))
    delete_keys(redis, f"rq:*:{name}")
    delete_keys(redis, f"rq:*:{name}:*")
    redis.srem(Queue.redis_queues_keys, Queue.redis_queue_namespace_prefix + name)


def forget_workers(redis: Redis, name_prefix: str) -> None:
    """rq keeps a stopped worker's key for 60 s and its name in the workers' sets: drop them."""
    prefix = f"{Worker.redis_worker_namespace_prefix}{name_prefix}"
    sets: list[bytes | str] = [Worker.redis_workers_keys]
    sets.extend(redis.scan_iter(match="rq:workers:*", count=1000))
    for key in sets:
        members = [
            m for m in cast(set[bytes], redis.smembers(key)) if m.decode().startswith(prefix)
        ]
        if members:
            redis.srem(key, *members)
    delete_keys(redis, f"{prefix}*")


def reset_database(conn: psycopg.Connection[Any]) -> None:
    """Empty the event log before a run (the bench's own database: the append-only trigger is
    set aside for the TRUNCATE only), then CHECKPOINT so that every run starts alike."""
    with conn.transaction():
        conn.execute("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only_truncate")
        conn.execute("TRUNCATE event_log, workflow_step_artifacts RESTART IDENTITY")
        conn.execute("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only_truncate")
    try:
        with conn.transaction():
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


def count_rows(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    with conn.transaction():
        events = conn.execute("SELECT count(*) FROM event_log").fetchone()
        artifacts = conn.execute("SELECT count(*) FROM workflow_step_artifacts").fetchone()
    assert events is not None and artifacts is not None
    return int(events[0]), int(artifacts[0])


def check_stored(conn: psycopg.Connection[Any], data: Dataset, what: str) -> None:
    events, artifacts = count_rows(conn)
    if events != len(data.events) or artifacts != data.artifact_rows:
        raise BenchError(
            f"{what}: stored {events} events and {artifacts} artifact rows, "
            f"expected {len(data.events)} and {data.artifact_rows}"
        )


# --- worker processes -------------------------------------------------------------------------

_FORKSERVER = "import sys; from worker.bench import forkserver_main; sys.exit(forkserver_main())"


def process_alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class ForkServer:
    """Starts the bench's worker processes by forking one process that imported the worker
    code once: a fresh interpreter costs ~0.8 s of imports per worker, and (d) starts 21.
    Each worker is still the real thing (``run_worker`` in its own process, configured by its
    own environment); nothing is connected before the fork."""

    def __init__(self, log_path: Path) -> None:
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORKSERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.children: set[int] = set()

    def spawn(self, role: str, name: str, env: Mapping[str, str]) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        spec = {"role": role, "name": name, "env": dict(env)}
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the worker fork server exited; see {self.log.name}")
        pid = int(line)
        self.children.add(pid)
        return pid

    def close(self) -> None:
        for pid in self.children:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def forkserver_main() -> int:
    """The fork server: import the worker code, then fork one worker per line of stdin
    (``{"role", "name", "env"}``), answering with its pid; reap them as they exit."""
    import traceback

    import worker.runtime
    import worker.service  # noqa: F401  (imported once, here, for every child)

    def reap(signum: int, frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if status:
                sys.stderr.write(f"bench worker {pid} exited with status {status}\n")

    signal.signal(signal.SIGCHLD, reap)
    for line in sys.stdin:
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.environ.clear()
                os.environ.update(spec["env"])
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(2, 1)  # the worker log
                code = subprocess_main([f"{spec['role']}-worker", spec["name"]])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
    return 0


class WorkerSet:
    """``count`` worker processes on one rq queue; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self,
        env: BenchEnv,
        forks: ForkServer,
        redis: Redis,
        queue_name: str,
        count: int,
        role: str,
        extra_env: Mapping[str, str],
        commit_logs: bool = False,
        tag: str = "",
    ) -> None:
        self.env, self.forks, self.redis, self.queue_name = env, forks, redis, queue_name
        self.tag = tag
        self.count, self.role = count, role
        self.extra_env = dict(extra_env)
        self.commit_logs: list[Path] = []
        self.procs: list[int] = []
        self._want_commit_logs = commit_logs

    def __enter__(self) -> WorkerSet:
        try:
            for i in range(self.count):
                name = f"bench-{self.env.run_id}-{self.role}{self.tag}-{i}"
                extra = dict(self.extra_env)
                if self._want_commit_logs:
                    path = self.env.scratch / f"commits-{name}.log"
                    path.unlink(missing_ok=True)
                    self.commit_logs.append(path)
                    extra[COMMIT_LOG_ENV] = str(path)
                self.procs.append(self.forks.spawn(self.role, name, self.env.worker_env(**extra)))
            self._wait_registered()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_registered(self) -> None:
        queue = Queue(self.queue_name, connection=self.redis, serializer=JSONSerializer)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        while Worker.count(queue=queue) < self.count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"workers did not register within {WORKER_START_TIMEOUT_SECONDS}s")
            time.sleep(0.01)

    def check_alive(self) -> None:
        dead = [pid for pid in self.procs if not process_alive(pid)]
        if dead:
            raise BenchError(
                f"{len(dead)} worker process(es) exited (pid {dead[0]}); see {self.env.worker_log}"
            )

    def peak_rss_kib(self) -> int | None:
        values = [proc_status_kib(pid, "VmHWM") for pid in self.procs]
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def pids(self) -> list[int]:
        return list(self.procs)

    def rss_kib(self) -> list[int | None]:
        return [proc_status_kib(pid, "VmRSS") for pid in self.procs]

    def __exit__(self, *exc: object) -> None:
        for pid in self.procs:
            if process_alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        while any(process_alive(pid) for pid in self.procs) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in self.procs:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def subprocess_main(argv: Sequence[str]) -> int:
    """Entry of the bench's worker processes: ``pipeline-worker NAME`` | ``naive-worker NAME``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    role, name = argv[0], argv[1]
    if role in ("pipeline-worker", "soak-worker"):
        return _pipeline_worker(name)
    if role == "naive-worker":
        return _naive_worker(name)
    raise SystemExit(f"unknown bench subprocess role {role!r}")


class CommitRecorder:
    """Wraps the drain's store: after each append_batch returns (COMMIT done), one line
    ``flow first last unix_time`` (line-buffered: readable while the worker runs)."""

    def __init__(self, store: Any, log: IO[str]) -> None:
        self.store, self.log = store, log

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> list[FlowEvent]:
        stored: list[FlowEvent] = self.store.append_batch(flow_id, events, artifacts)
        self.log.write(f"{flow_id} {events[0].seq} {events[-1].seq} {time.time():.6f}\n")
        return stored


def _pipeline_worker(name: str) -> int:
    from worker.runtime import runtime
    from worker.service import run_worker

    path = os.environ.get(COMMIT_LOG_ENV)
    log = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115
    try:
        if log is not None:
            drainer = runtime().drainer
            drainer.store = CommitRecorder(drainer.store, log)
        run_worker(name=name)
    finally:
        if log is not None:
            log.close()
    return 0


_naive_store: PgEventStore | None = None


def _naive_store_get() -> PgEventStore:
    global _naive_store
    if _naive_store is None:
        _naive_store = PgEventStore(open_pool(DatabaseSettings.from_env(), migrate=False))
    return _naive_store


def naive_append(envelope: str) -> None:
    """(c)'s rq job: store one event (its own transaction)."""
    event, bodies = decode_envelope(envelope)
    _naive_store_get().append_batch(event.flow_id, [event], bodies)


NAIVE_FUNCTION = "worker.bench.naive_append"
NOOP_FUNCTION = "builtins.len"  # rq's own per-job cost, nothing else


def _naive_worker(name: str) -> int:
    settings = QueueSettings.from_env()
    redis = Redis.from_url(settings.redis_url)
    _naive_store_get()  # the pool is open before the first job, as for the drain workers
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=redis, serializer=JSONSerializer, name=name)
    worker.work(burst=False, logging_level="WARNING", with_scheduler=False)
    return 0


# --- the bench --------------------------------------------------------------------------------


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
            _say(
                f"{row.scenario} [{row.config}] run {i + 1}/{self.scale.runs}: {rate:,.0f} events/s"
                f" (CPU µs/event {_cpu_text(cpu[-1])})"
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

    # -- (a) ceilings --

    def run_ceilings(self) -> None:
        data = self.ceiling_data()
        variants: list[tuple[str, str, str, Callable[[Dataset], None]]] = [
            ("a.copy.events", "COPY", "events only", self._copy_events),
            ("a.copy", "COPY", "events + artifact rows", self._copy_all),
            (
                "a.insert.executemany",
                "batched INSERT, executemany (pipeline mode)",
                "events + artifact rows",
                self._insert_executemany,
            ),
            (
                "a.insert.multirow",
                "batched INSERT, one multi-row statement",
                "events + artifact rows",
                self._insert_multirow,
            ),
            (
                "a.insert.json",
                "batched INSERT, one statement (JSON array, as the store)",
                "events + artifact rows",
                self._insert_json,
            ),
            (
                "a.insert.multirow.events",
                "batched INSERT, one multi-row statement",
                "events only",
                self._insert_multirow_events,
            ),
        ]
        for key, scenario, what, write in variants:
            row = self.new_row(key, "a", scenario, f"{what}, {CEILING_BATCH:,}/txn")

            def once(
                watch: Stopwatch, write: Callable[[Dataset], None] = write, what: str = what
            ) -> None:
                self.reset()
                watch.start()
                write(data)
                watch.stop(len(data.events))
                if what.startswith("events +"):
                    check_stored(self.conn, data, "ceiling")

            self.repeat(row, once)

    def _copy_events(self, data: Dataset) -> None:
        statement = "COPY event_log (flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
        with self.conn.cursor() as cur:
            for chunk in chunks(data.rows, CEILING_BATCH):
                with cur.copy(statement) as copy:
                    for row in chunk:
                        copy.write_row(row)
                self.conn.commit()

    def _copy_all(self, data: Dataset) -> None:
        events_copy = "COPY event_log (seq, flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
        artifacts_copy = (
            "COPY workflow_step_artifacts (artifact_hash, kind, payload, metadata, "
            "produced_in_seq) FROM STDIN"
        )
        with self.conn.cursor() as cur:
            for start in range(0, len(data.rows), CEILING_BATCH):
                rows = data.rows[start : start + CEILING_BATCH]
                cur.execute(
                    "SELECT nextval('event_log_seq_seq') FROM generate_series(1, %s)", (len(rows),)
                )
                seqs = [int(r[0]) for r in cur.fetchall()]
                with cur.copy(events_copy) as copy:
                    for seq, row in zip(seqs, rows, strict=True):
                        copy.write_row((seq, *row))
                with cur.copy(artifacts_copy) as copy:
                    for seq, hashes in zip(
                        seqs, data.outputs[start : start + CEILING_BATCH], strict=True
                    ):
                        for h in hashes:
                            copy.write_row((h, "unknown", "null", None, seq))
                self.conn.commit()

    def _insert_executemany(self, data: Dataset) -> None:
        with self.conn.cursor() as cur:
            for start in range(0, len(data.rows), CEILING_BATCH):
                rows = data.rows[start : start + CEILING_BATCH]
                cur.executemany(CEILING_INSERT_EVENT, rows, returning=True)
                seqs = []
                while True:
                    fetched = cur.fetchone()
                    assert fetched is not None
                    seqs.append(fetched[0])
                    if not cur.nextset():
                        break
                artifacts = [
                    (h, "unknown", "null", None, seq)
                    for seq, hashes in zip(
                        seqs, data.outputs[start : start + CEILING_BATCH], strict=True
                    )
                    for h in hashes
                ]
                if artifacts:
                    cur.executemany(CEILING_INSERT_ARTIFACT, artifacts)
                self.conn.commit()

    @staticmethod
    def _values(n: int, row: str) -> str:
        return ",".join([row] * n)

    def _insert_multirow(self, data: Dataset) -> None:
        with self.conn.cursor() as cur:
            for start in range(0, len(data.rows), CEILING_BATCH):
                rows = data.rows[start : start + CEILING_BATCH]
                statement = (
                    "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload) VALUES "
                    + self._values(len(rows), "(%s,%s,%s,%s,%s::jsonb)")
                    + " RETURNING seq"
                )
                cur.execute(statement.encode(), [v for r in rows for v in r])
                seqs = [r[0] for r in cur.fetchall()]
                artifacts = [
                    v
                    for seq, hashes in zip(
                        seqs, data.outputs[start : start + CEILING_BATCH], strict=True
                    )
                    for h in hashes
                    for v in (h, seq)
                ]
                if artifacts:
                    statement = (
                        "INSERT INTO workflow_step_artifacts "
                        "(artifact_hash, kind, payload, metadata, produced_in_seq) VALUES "
                        + self._values(len(artifacts) // 2, "(%s,'unknown','null'::jsonb,NULL,%s)")
                        + " ON CONFLICT (artifact_hash) DO NOTHING"
                    )
                    cur.execute(statement.encode(), artifacts)
                self.conn.commit()

    def _insert_json(self, data: Dataset) -> None:
        with self.conn.cursor() as cur:
            for start in range(0, len(data.rows), CEILING_BATCH):
                rows = data.rows[start : start + CEILING_BATCH]
                text = (
                    "["
                    + ",".join(
                        f'["{flow}",{seq},"{ts.isoformat()}","{kind}",{payload}]'
                        for flow, seq, ts, kind, payload in rows
                    )
                    + "]"
                )
                cur.execute(CEILING_INSERT_JSON, (text,))
                self.conn.commit()

    def _insert_multirow_events(self, data: Dataset) -> None:
        with self.conn.cursor() as cur:
            for start in range(0, len(data.rows), CEILING_BATCH):
                rows = data.rows[start : start + CEILING_BATCH]
                statement = (
                    "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload) VALUES "
                    + self._values(len(rows), "(%s,%s,%s,%s,%s::jsonb)")
                )
                cur.execute(statement.encode(), [v for r in rows for v in r])
                self.conn.commit()

    # -- (b) synchronous --

    def run_sync(self) -> None:
        n = min(self.scale.sync_events, len(self.data.events))
        data = self.data.head(n)
        row = self.new_row(
            "b.sync", "b", "synchronous PgEventStore.append", "1 event/txn, in the engine's thread"
        )

        def once(watch: Stopwatch) -> None:
            self.reset()
            watch.start()
            for event in data.events:
                self.store.append(event.flow_id, event.kind, event.ts)
            watch.stop(n)
            check_stored(self.conn, data, "synchronous path")

        self.repeat(row, once)
        row.extra["us_per_event"] = 1e6 / row.median

    # -- (c) naive rq --

    def run_naive(self) -> None:
        n = min(self.scale.naive_events, len(self.data.events))
        data = self.data.head(n)
        row = self.new_row(
            "c.naive",
            "c",
            "naive rq: one job per event",
            "1 SimpleWorker (more would reorder a flow)",
        )
        queue = Queue(self.env.naive_queue_name, connection=self.redis, serializer=JSONSerializer)
        env = {"CHEM_QUEUE": self.env.naive_queue_name}
        with WorkerSet(
            self.env, self.forks, self.redis, self.env.naive_queue_name, 1, "naive", env
        ) as workers:
            self.rq_noop = self._rq_noop_jobs(queue, workers)

            def once(watch: Stopwatch) -> None:
                self.reset()
                watch.start()
                for envelope in data.envelopes:
                    queue.enqueue(
                        NAIVE_FUNCTION, envelope, result_ttl=0, failure_ttl=3600, job_timeout=60
                    )
                self._wait_for(lambda: count_rows(self.conn)[0] >= n, workers, 0.02)
                watch.stop(n)
                failed = FailedJobRegistry(queue=queue).count
                if failed:
                    raise BenchError(f"naive rq: {failed} job(s) failed; see {self.env.worker_log}")
                check_stored(self.conn, data, "naive rq")

            self.repeat(row, once, workers)
            row.extra["peak_rss_kib"] = workers.peak_rss_kib()

    def _rq_noop_jobs(self, queue: Queue, workers: WorkerSet) -> dict[str, float]:
        """rq's own cost per job: no-op jobs (``builtins.len``) through one SimpleWorker."""
        n = max(50, self.scale.naive_events // 2)
        ping = ping_rtt_us(self.redis)
        rates = []
        for _ in range(self.scale.runs):
            start = time.perf_counter()
            last = ""
            for _ in range(n):
                last = queue.enqueue(NOOP_FUNCTION, "x", result_ttl=0).id
            # FIFO, one worker: the last job gone (result_ttl=0) = every job done
            self._wait_for(partial(_gone, self.redis, f"rq:job:{last}"), workers)
            rates.append(n / (time.perf_counter() - start))
        rate = statistics.median(rates)
        _say(f"rq no-op jobs, 1 SimpleWorker: {rate:,.0f} jobs/s ({1000 / rate:.2f} ms/job)")
        return {"jobs_per_s": rate, "ms_per_job": 1000 / rate, "ping_us": ping}

    def _wait_for(
        self, done: Callable[[], bool], workers: WorkerSet | None, interval: float = POLL_SECONDS
    ) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while not done():
            if workers is not None:
                workers.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"not done after {RUN_TIMEOUT_SECONDS:.0f}s")
            time.sleep(interval)

    # -- (d) the pipeline --

    def pipeline_done(self) -> bool:
        """Every queued event committed: a flow with queued events is always pending, and
        its pending mark goes only once its queue is empty (after the COMMIT and the ack)."""
        return int(self.redis.zcard(self.producer.keys.pending)) == 0

    def run_pipeline(self) -> None:
        for workers in WORKER_COUNTS:
            for batch in BATCH_SIZES:
                self.configs.append(self._pipeline_config(workers, batch))

    def _pipeline_config(self, count: int, batch: int) -> PipelineConfig:
        label = f"{count} worker{'s' if count > 1 else ''} x batch {batch}"
        env = {"CHEM_BATCH_SIZE": str(batch)}
        _say(f"(d) starting {label}")
        with WorkerSet(
            self.env,
            self.forks,
            self.redis,
            self.env.queue_name,
            count,
            "pipeline",
            env,
            commit_logs=True,
            tag=f"-w{count}b{batch}",
        ) as workers:
            backlog = self.new_row(
                f"d.backlog.w{count}.b{batch}", "d", "pipeline: backlog drain", label
            )
            self.repeat(backlog, partial(self._backlog_once, workers), workers)
            sustained = self.new_row(
                f"d.sustained.w{count}.b{batch}",
                "d",
                "pipeline: sustained (producer running)",
                label,
            )
            self.repeat(sustained, partial(self._sustained_once, workers), workers)
            config = PipelineConfig(count, batch, backlog, sustained)
            config.latency = self._latency_run(workers, 0.5 * sustained.median)
            config.peak_rss_kib = workers.peak_rss_kib()
            backlog.extra["peak_rss_kib"] = sustained.extra["peak_rss_kib"] = config.peak_rss_kib
            sustained.extra["latency"] = {
                k: v for k, v in config.latency.items() if k != "quantiles_ms"
            }
        return config

    def _fill(self, by_flow: Mapping[str, list[str]]) -> list[str]:
        """What ``Producer.send_many`` does, without enqueueing the drain jobs yet."""
        pipe = self.redis.pipeline(transaction=False)
        calls: list[str] = []
        stamp = now_ms()
        keys = self.producer.keys
        for flow, envelopes in by_flow.items():
            flow_keys = [keys.queue(flow), keys.parked(flow), keys.pending]
            for chunk in chunks(envelopes, EMIT_MANY_CHUNK):
                self.producer.scripts.emit(keys=flow_keys, args=[flow, stamp, *chunk], client=pipe)
                calls.append(flow)
        results = pipe.execute()
        return sorted({f for f, r in zip(calls, results, strict=True) if r == 1})

    def _backlog_once(self, workers: WorkerSet, watch: Stopwatch) -> None:
        self.reset()
        flows = self._fill(self.data.by_flow())
        watch.start()
        for flow in flows:
            enqueue_drain(self.producer.queue, flow, self.producer.keys.job(flow))
        self._wait_for(self.pipeline_done, workers)
        watch.stop(len(self.data.events))
        check_stored(self.conn, self.data, "backlog drain")

    def _sustained_once(self, workers: WorkerSet, watch: Stopwatch) -> None:
        self.reset()
        watch.start()
        for chunk in chunks(self.data.events, SUSTAINED_CHUNK):
            self.producer.emit_many(chunk)
        self._wait_for(self.pipeline_done, workers)
        watch.stop(len(self.data.events))
        check_stored(self.conn, self.data, "sustained")

    def _paced_emit(
        self,
        rate: float,
        seconds: float,
        source: Iterator[tuple[UUID, int, FlowEventKind]],
        record: dict[tuple[UUID, int], float] | None = None,
        tick: Callable[[float], None] | None = None,
    ) -> dict[str, float]:
        """Emit ``source``'s events at ``rate`` events/s for ``seconds``, as an engine would:
        one ``Producer.emit`` per event (ts = now) while it keeps up; when it falls behind (an
        emit costs ~0.25 ms of CPU here), the events due go in one ``emit_many`` (ts = that
        call's time). ``record`` gets each event's emit time; ``tick`` is called in between."""
        total = max(1, int(rate * seconds))
        emitted = singles = 0
        start = time.perf_counter()
        while emitted < total:
            now = time.perf_counter()
            if tick is not None:
                tick(now - start)
            due = min(total, int((now - start) * rate) + 1)
            if due <= emitted:
                time.sleep(max(0.0, start + emitted / rate - now))
                continue
            ts = utc_now()
            events = [FlowEvent(p, f, k, ts) for f, p, k in islice(source, due - emitted)]
            if len(events) == 1:
                self.producer.emit(events[0])
                singles += 1
            else:
                self.producer.emit_many(events)
            if record is not None:
                stamp = ts.timestamp()
                for event in events:
                    record[(event.flow_id, event.seq)] = stamp
            emitted += len(events)
        elapsed = time.perf_counter() - start
        return {
            "events": emitted,
            "seconds": elapsed,
            "achieved_events_per_s": emitted / elapsed,
            "single_emit_share": singles / emitted,
        }

    def _latency_run(self, workers: WorkerSet, rate: float) -> dict[str, Any]:
        self.reset()
        for path in workers.commit_logs:
            path.write_text("")  # the runs before were throughput runs
        seconds = self.scale.latency_seconds
        flows = self.scale.flows
        emitted: dict[tuple[UUID, int], float] = {}
        source = event_source(flows, 7_000_000, math.ceil(rate * seconds / flows) + 2)
        paced = self._paced_emit(rate, seconds, source, record=emitted)
        achieved = paced["achieved_events_per_s"]
        self._wait_for(self.pipeline_done, workers)
        committed: dict[tuple[UUID, int], float] = {}
        for path in workers.commit_logs:
            for line in path.read_text().splitlines():
                flow_text, first, last, at = line.split()
                flow = UUID(flow_text)
                for position in range(int(first), int(last) + 1):
                    committed.setdefault((flow, position), float(at))
        drains = 0
        drained = 0
        first_commit, last_commit = math.inf, 0.0
        for path in workers.commit_logs:
            for line in path.read_text().splitlines():
                _, first, last, at = line.split()
                drains += 1
                drained += int(last) - int(first) + 1
                first_commit, last_commit = (
                    min(first_commit, float(at)),
                    max(last_commit, float(at)),
                )
        span = max(1e-9, last_commit - first_commit)
        latencies = sorted(
            (committed[key] - ts) * 1000 for key, ts in emitted.items() if key in committed
        )
        if len(latencies) != len(emitted):
            raise BenchError(
                f"latency run: {len(emitted) - len(latencies)} of {len(emitted)} events "
                "have no recorded COMMIT"
            )
        result = {
            "offered_events_per_s": rate,
            "achieved_events_per_s": achieved,
            "events": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99),
            "max_ms": latencies[-1],
            "quantiles_ms": [round(percentile(latencies, q), 3) for q in range(101)],
            "single_emit_share": paced["single_emit_share"],
            "flows": self.scale.flows,
            "workers": workers.count,
            "drains": drains,
            "events_per_drain": drained / max(1, drains),
            "drains_per_s": drains / span,
            # busy workers: the time one drain (its rq job included) takes, at most
            "ms_per_drain": 1000 * workers.count * span / max(1, drains),
        }
        _say(
            f"(d) latency at {achieved:,.0f} events/s (half load {rate:,.0f}): "
            f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
        )
        return result

    # -- the producer's cost --

    def run_producer_costs(self) -> None:
        """Engine-side cost, no worker running (every flow stays pending after its first
        event: the steady state of a busy flow). Round trips counted by the connection."""
        n = min(self.scale.producer_events, len(self.data.events))
        data = self.data.head(n)
        counting = Producer(self.counting_redis, self.env.queue_settings)
        by_flow = data.by_flow()
        results: dict[str, Any] = {"events": n, "flows": len(by_flow)}

        def measure(name: str, label: str, fn: Callable[[], None]) -> None:
            ping = ping_rtt_us(self.redis)
            times, trips = [], []
            for _ in range(self.scale.runs):
                delete_keys(self.redis, f"{self.env.key_prefix}:*")
                Queue(self.env.queue_name, connection=self.redis, serializer=JSONSerializer).empty()  # type: ignore[no-untyped-call]
                CountingConnection.sends = 0
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) / n * 1e6)
                trips.append(CountingConnection.sends / n)
            results[name] = {
                "label": label,
                "us_per_event": statistics.median(times),
                "min_us": min(times),
                "max_us": max(times),
                "events_per_s": 1e6 / statistics.median(times),
                "round_trips_per_event": statistics.median(trips),
                "ping_us": ping,
            }
            _say(f"producer {label}: {statistics.median(times):.1f} µs/event")

        def emit_each() -> None:
            for event in data.events:
                counting.emit(event)

        def send_each() -> None:
            for event, envelope in zip(data.events, data.envelopes, strict=True):
                counting.send(str(event.flow_id), [envelope])

        def encode_only() -> None:
            for event in data.events:
                counting.encode(event)

        def emit_many() -> None:
            for chunk in chunks(data.events, SUSTAINED_CHUNK):
                counting.emit_many(chunk)

        def send_many() -> None:
            for start in range(0, n, SUSTAINED_CHUNK):
                grouped: dict[str, list[str]] = {}
                for event, envelope in zip(
                    data.events[start : start + SUSTAINED_CHUNK],
                    data.envelopes[start : start + SUSTAINED_CHUNK],
                    strict=True,
                ):
                    grouped.setdefault(str(event.flow_id), []).append(envelope)
                counting.send_many(grouped)

        def raw_rpush() -> None:
            keys = counting.keys
            for start in range(0, n, SUSTAINED_CHUNK):
                grouped: dict[str, list[str]] = {}
                for event, envelope in zip(
                    data.events[start : start + SUSTAINED_CHUNK],
                    data.envelopes[start : start + SUSTAINED_CHUNK],
                    strict=True,
                ):
                    grouped.setdefault(str(event.flow_id), []).append(envelope)
                pipe = self.counting_redis.pipeline(transaction=False)
                for flow, envelopes in grouped.items():
                    pipe.rpush(keys.queue(flow), *envelopes)
                pipe.execute()

        def raw_rpush_each() -> None:
            keys = counting.keys
            for start in range(0, n, SUSTAINED_CHUNK):
                pipe = self.counting_redis.pipeline(transaction=False)
                for event, envelope in zip(
                    data.events[start : start + SUSTAINED_CHUNK],
                    data.envelopes[start : start + SUSTAINED_CHUNK],
                    strict=True,
                ):
                    pipe.rpush(keys.queue(str(event.flow_id)), envelope)
                pipe.execute()

        measure("emit", "emit (one event, validated + sent)", emit_each)
        measure("encode", "encode only (validate + serialize)", encode_only)
        measure("send", "send (one pre-encoded envelope: the Lua call)", send_each)
        measure("emit_many", f"emit_many ({SUSTAINED_CHUNK:,} events per call)", emit_many)
        measure("send_many", "send_many (pre-encoded envelopes, Lua)", send_many)
        measure("raw_rpush", "raw RPUSH, pipelined (same envelopes, grouped per flow)", raw_rpush)
        measure("raw_rpush_each", "raw RPUSH, pipelined, one command per envelope", raw_rpush_each)
        delete_keys(self.redis, f"{self.env.key_prefix}:*")
        Queue(self.env.queue_name, connection=self.redis, serializer=JSONSerializer).empty()  # type: ignore[no-untyped-call]
        self.producer_costs = results

    # -- replay --

    def run_replay(self) -> None:
        n = self.scale.replay_events
        flow = uuid.uuid4()
        kinds = flow_kinds(9_000_000, n)
        first = kinds[0]
        assert isinstance(first, FlowInitialized)
        definition = flow_definition(first.step_count)
        base = datetime.now(UTC) - timedelta(hours=2)
        self.reset()
        statement = "COPY event_log (flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            for position, kind in enumerate(kinds):
                ts = base + timedelta(microseconds=position)
                copy.write_row((flow, position, ts, kind.event_type, dumps(encode_kind(kind))))
        self.conn.commit()
        with self.conn.transaction():
            self.conn.execute("ANALYZE event_log")  # as autovacuum would after a bulk load
        row = self.new_row(
            "replay",
            "replay",
            "read + replay one flow",
            f"{n:,} events, PgEventStore.list + InMemoryFlowRepository.load",
        )
        reads = []

        def once(watch: Stopwatch) -> None:
            watch.start()
            events = self.store.list(flow)
            read = time.perf_counter()
            instance = InMemoryFlowRepository.load(flow, events, definition)
            watch.stop(n)
            if len(events) != n or not instance.completed:
                raise BenchError(f"replay: read {len(events)} of {n} events")
            reads.append(n / (read - watch.started))

        # The harness's own objects (the generated data sets) must not tax the collections the
        # 100,000 new events trigger: freeze them (the events' own cost stays measured).
        gc.collect()
        gc.freeze()
        try:
            self.repeat(row, once)
            row.extra["read_only_events_per_s"] = statistics.median(reads)
            row.extra.update(self._replay_bounds(flow, n))
            gc.disable()
            try:
                start = time.perf_counter()
                events = self.store.list(flow)
                InMemoryFlowRepository.load(flow, events, definition)
                row.extra["gc_paused_events_per_s"] = n / (time.perf_counter() - start)
            finally:
                gc.enable()
        finally:
            gc.unfreeze()
        self.reset()

    def _replay_bounds(self, flow: UUID, n: int) -> dict[str, float]:
        """What bounds read + replay in CPython: fetching the rows alone (payload as text), and
        fetching + json.loads of every payload (no decoding, no replay)."""
        statement = (
            "SELECT seq, flow_seq, ts, payload::text FROM event_log "
            "WHERE flow_id = %s ORDER BY flow_seq"
        )
        fetch, parse = [], []
        for _ in range(2):
            start = time.perf_counter()
            with self.conn.cursor() as cur:
                cur.execute(statement, (flow,))
                rows = cur.fetchall()
            self.conn.commit()
            fetched = time.perf_counter()
            for row in rows:
                json.loads(row[3])
            done = time.perf_counter()
            fetch.append(n / (fetched - start))
            parse.append(n / (done - start))
        return {
            "bound_fetch_events_per_s": statistics.median(fetch),
            "bound_fetch_json_loads_events_per_s": statistics.median(parse),
        }

    # -- soak --

    def run_soak(self) -> None:
        count, batch = DEFAULT_CONFIG
        config = next(
            (c for c in self.configs if (c.workers, c.batch_size) == DEFAULT_CONFIG), None
        )
        rate = 0.5 * config.sustained.median if config else 2000.0
        seconds = self.scale.soak_seconds
        _say(f"soak: {count} workers x {batch} for {seconds:.0f}s at {rate:,.0f} events/s")
        self.reset()
        samples: list[dict[str, Any]] = []
        env = {"CHEM_BATCH_SIZE": str(batch)}
        with WorkerSet(
            self.env, self.forks, self.redis, self.env.queue_name, count, "soak", env
        ) as workers:
            start = time.perf_counter()
            next_sample = [0.0]
            interval = min(SOAK_SAMPLE_SECONDS, max(0.5, seconds / 30))

            def sample(at: float) -> None:
                if at < next_sample[0]:
                    return
                workers.check_alive()
                rss = workers.rss_kib()
                samples.append({"t": round(at, 1), "rss_kib": rss})
                _say(
                    f"soak {at:5.0f}s: worker RSS "
                    + ", ".join(f"{(r or 0) / 1024:.1f}" for r in rss)
                    + " MiB"
                )
                next_sample[0] += interval

            source = event_source(self.scale.flows, 8_000_000, 400)
            paced = self._paced_emit(rate, seconds, source, tick=sample)
            emitted = int(paced["events"])
            next_sample[0] = 0.0
            sample(time.perf_counter() - start)  # the last one, at the end of the run
            self._wait_for(self.pipeline_done, workers)
            elapsed = time.perf_counter() - start
            peak = workers.peak_rss_kib()
        self.soak = _soak_summary(samples, rate, emitted, elapsed, peak, count, batch)
        verdict = {True: "flat", False: "GREW", None: "not judged"}[self.soak["flat"]]
        _say(f"soak: RSS {verdict} ({self.soak['verdict']})")
        self.reset()

    # -- all of it --

    def run(self, soak: bool) -> None:
        _say(f"data set: {json.dumps(self.data.describe())}")
        self.reset()
        self.run_ceilings()
        self.run_sync()
        self.run_naive()
        self.run_producer_costs()
        self.run_pipeline()
        self.run_replay()
        if soak:
            self.run_soak()


def _soak_summary(
    samples: list[dict[str, Any]],
    rate: float,
    emitted: int,
    elapsed: float,
    peak: int | None,
    workers: int,
    batch: int,
) -> dict[str, Any]:
    """Flat = per worker, the highest RSS of the last 20% of the samples is within 2% (or
    1 MiB) of the highest of the 20% after warm-up (the first 10%: imports, pools, caches).
    Also the least-squares slope of RSS after warm-up, MiB per minute."""
    n = len(samples)
    skip, width = max(1, n // 10), max(1, n // 5)
    early_samples = samples[skip : skip + width]
    late_samples = samples[-width:]
    early, late, slopes = [], [], []
    for i in range(workers):

        def rss(chosen: list[dict[str, Any]], i: int = i) -> list[int]:
            return [s["rss_kib"][i] for s in chosen if s["rss_kib"][i] is not None]

        early.append(max(rss(early_samples), default=0))
        late.append(max(rss(late_samples), default=0))
        points = [(s["t"], s["rss_kib"][i]) for s in samples[skip:] if s["rss_kib"][i]]
        slope = 0.0
        if len(points) >= 2:
            mean_t = statistics.mean(t for t, _ in points)
            mean_r = statistics.mean(r for _, r in points)
            var = sum((t - mean_t) ** 2 for t, _ in points)
            if var:
                cov = sum((t - mean_t) * (r - mean_r) for t, r in points)
                slope = cov / var * 60 / 1024  # KiB/s → MiB/min
        slopes.append(slope)
    judged = n >= 3
    flat = judged and all(
        (b - a) * 1024 <= max(RSS_FLAT_MIN_BYTES, RSS_FLAT_TOLERANCE * a * 1024)
        for a, b in zip(early, late, strict=True)
    )
    verdict = "; ".join(
        f"worker {i}: {a / 1024:.1f} → {b / 1024:.1f} MiB ({slope:+.2f} MiB/min)"
        for i, (a, b, slope) in enumerate(zip(early, late, slopes, strict=True))
    )
    return {
        "workers": workers,
        "batch_size": batch,
        "seconds": elapsed,
        "offered_events_per_s": rate,
        "events": emitted,
        "achieved_events_per_s": emitted / elapsed if elapsed else 0.0,
        "early_max_rss_kib": early,
        "late_max_rss_kib": late,
        "slope_mib_per_min": slopes,
        "peak_rss_kib": peak,
        "flat": flat if judged else None,
        "verdict": verdict if judged else "too few samples",
        "samples": samples,
    }


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
        root = Path(__file__).resolve().parents[1]
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
            f"| {_cpu_text(s['extra'].get('cpu_us_per_event', {}))} |"
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


def _scale_factor() -> float:
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV}: {raw!r} is not a number") from None
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{SCALE_ENV}: {raw!r} must be a positive number")
    return factor


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_bench(*, quick: bool, soak: bool, output_dir: Path, as_json: bool) -> int:
    """Run every scenario; print the Markdown table (or the JSON) on stdout, write
    ``bench-<mode>.json``, ``.md`` and ``.png`` into ``output_dir``. Progress on stderr."""
    scale = QUICK if quick else FULL
    factor = _scale_factor()
    if factor != 1:
        scale = scale.scaled(factor)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / f"bench-{'quick' if quick else 'full'}"
    started = time.time()
    _say(f"bench ({scale.mode}): results into {output_dir}/")
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _interrupt)  # stop what we started on SIGTERM too
    try:
        with ExitStack() as stack:
            env = stack.enter_context(bench_environment(output_dir))
            bench = Bench(env, scale)
            stack.callback(bench.close)
            bench.run(soak)
            report = build_report(bench, started, soak)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"bench: PostgreSQL is not reachable ({exc}); run `make services`", file=sys.stderr)
        return 2
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    markdown = render_markdown(report)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    from worker.bench_plot import plot

    plotted = plot(report, stem.with_suffix(".png"))
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    if plotted:
        written.append(stem.with_suffix(".png"))
    _say("wrote " + ", ".join(str(p) for p in written))
    print(json.dumps(report, indent=2, ensure_ascii=False) if as_json else markdown, end="")
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
