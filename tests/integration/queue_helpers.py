"""Helpers for the queue's integration tests: real worker processes, polling, example flows.

Every test gets its own rq queue name and key prefix (``QueueEnv``), so tests never see each
other's jobs or keys even on a shared Redis DB. Worker processes are the real command,
``python -m worker.cli worker`` (or the lab's ``python -m lab.faulty_worker`` with crash and
pause points), configured only by environment variables; their output goes to a log file
that failed assertions quote. ``WorkerProcesses`` kills whatever it started.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

import psycopg
from redis import Redis
from rq import Queue

from chem_persistence.domain.canonical import hash_value
from chem_persistence.domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    InvalidTransition,
    MessageError,
    PropertyPreferenceAssigned,
    RetryNotAllowed,
    StepFailed,
    StepFinished,
    StepSignal,
    StepStarted,
    UnitError,
)
from chem_persistence.domain.json_values import JsonValue
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import ingest_queue
from chem_persistence.producer.keys import Keys, ShardKeys
from chem_persistence.producer.producer import Producer

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_CHARS = 4000
#: The pool's connections show this application_name in pg_stat_activity (eventlog.pool).
WORKER_APPLICATION_NAME = "chem"

T = TypeVar("T")
Item = tuple[FlowEvent, tuple[Artifact, ...]]


# --- waiting ------------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = POLL_SECONDS,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


# --- the environment of one test ----------------------------------------------------------------


@dataclass(frozen=True)
class QueueEnv:
    """The queue name, key prefix and server URLs one test's workers and clients share."""

    database_url: str
    redis_url: str
    queue_name: str
    key_prefix: str

    @classmethod
    def new(cls, database_url: str, redis_url: str, tag: str) -> QueueEnv:
        unique = f"{re.sub(r'[^A-Za-z0-9_.-]', '-', tag)[:30]}-{uuid.uuid4().hex[:10]}"
        return cls(database_url, redis_url, f"chemtest-{unique}", f"chemtest-{unique}")

    @property
    def settings(self) -> QueueSettings:
        return QueueSettings(self.redis_url, self.queue_name, self.key_prefix)

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    @property
    def shard(self) -> ShardKeys:
        """The one shard of the tests' default layout."""
        return self.keys.shard(0)

    def variables(self, **overrides: str | float) -> dict[str, str]:
        """The environment of a worker process or a CLI call for this test (short periods:
        an idle sweep lingers 1 s, the recovery check runs every second)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CHEM_", "DATABASE_")) and k != "REDIS_URL"
        }
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "DATABASE_MIN_CONNECTIONS": "1",
                "DATABASE_MAX_CONNECTIONS": "4",
                "REDIS_URL": self.redis_url,
                "CHEM_QUEUE": self.queue_name,
                "CHEM_KEY_PREFIX": self.key_prefix,
                "CHEM_BATCH_SIZE": "50",
                "CHEM_SWEEP_LINGER_SECONDS": "1",
                "CHEM_CHECK_INTERVAL_SECONDS": "1",
                "PYTHONPATH": str(REPO_ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def producer(self, redis: Redis) -> Producer:
        return Producer(redis, self.settings)

    def queue(self, redis: Redis) -> Queue:
        return ingest_queue(redis, self.queue_name)


# --- worker processes ---------------------------------------------------------------------------


@dataclass
class WorkerProcesses:
    """Starts real ``chem-persistence worker`` processes; ``stop_all`` ends every one of them."""

    env: QueueEnv
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, *args: str, **overrides: str | float) -> subprocess.Popen[bytes]:
        return self._spawn(
            [sys.executable, "-m", "chem_persistence.worker.cli", "worker", *args], overrides
        )

    def start_faulty(self, *faults: str, **overrides: str | float) -> subprocess.Popen[bytes]:
        """A worker with the lab's crash or pause points (``--kill-after-commit 0.3`` ...)."""
        return self._spawn([sys.executable, "-m", "lab.faulty_worker", *faults], overrides)

    def _spawn(
        self, command: list[str], overrides: Mapping[str, str | float]
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"worker-{len(self.procs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env.variables(**overrides),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:  # signal all first: they shut down in parallel
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def output(self) -> str:
        """The tail of every worker's log, for failure messages."""
        parts = []
        for i, log in enumerate(self.logs):
            text = log.read_text(errors="replace") if log.exists() else ""
            code = self.procs[i].poll()
            parts.append(f"--- worker {i} (exit {code}) ---\n{text[-LOG_TAIL_CHARS:]}")
        return "\n".join(parts)

    def all_output(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())


@contextmanager
def worker_processes(env: QueueEnv, log_dir: Path) -> Iterator[WorkerProcesses]:
    workers = WorkerProcesses(env, log_dir)
    try:
        yield workers
    finally:
        workers.stop_all()


def run_cli(env: QueueEnv, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``chem-persistence ARGS`` as an operator runs it, in this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "chem_persistence.worker.cli", *args],
        cwd=REPO_ROOT,
        env=env.variables(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- example flows ------------------------------------------------------------------------------

_IDS = ("acquire", "properties", "choose", "report", "β-step", "步骤")
_ERRORS = (
    UnitError("MissingInputs"),
    MessageError("PolicyViolation", "poids moléculaire > 500"),
    InvalidTransition("Pending", "FinishedOk"),
    RetryNotAllowed("properties", "budget spent"),
)


@dataclass(frozen=True)
class ExampleFlow:
    flow_id: UUID
    items: list[Item]

    @property
    def events(self) -> list[FlowEvent]:
        return [event for event, _ in self.items]

    @property
    def artifacts(self) -> list[Artifact]:
        return [a for _, bodies in self.items for a in bodies]


def random_flow(rng: random.Random, length: int, t0: datetime | None = None) -> ExampleFlow:
    """A flow of ``length`` events of mixed kinds; some StepFinished carry artifact bodies.

    The flow id is always new (``rng`` only shapes the content): the session database keeps
    every flow of every test. Artifact payloads embed the flow id, so no two flows share an
    artifact (its first producer keeps it, so another flow's row would differ from its emit).
    """
    flow_id = uuid.uuid4()
    start = t0 or datetime.now(UTC)
    items: list[Item] = []
    for seq in range(length):
        ts = start + timedelta(milliseconds=seq, microseconds=rng.randrange(1000))
        index = seq // 3
        step = _IDS[index % len(_IDS)]
        fingerprint = hash_value({"flow": str(flow_id), "seq": seq})
        bodies: tuple[Artifact, ...] = ()
        kind: FlowEventKind
        roll = rng.random()
        if seq == 0:
            kind = FlowInitialized(hash_value([str(flow_id)]), rng.randint(1, 6))
        elif seq == length - 1 and length > 2 and roll < 0.5:
            kind = FlowCompleted(fingerprint)
        elif roll < 0.25:
            kind = StepStarted(index, step)
        elif roll < 0.5:
            made = [
                Artifact(
                    rng.choice(("molecule_batch", "property_table", "report")),
                    {"flow": str(flow_id), "seq": seq, "i": i, "w": rng.random(), "名": "苯"},
                    None if i else {"seed": rng.randrange(1000), "units": "g/mol"},
                )
                for i in range(rng.randint(0, 2))
            ]
            # sometimes the engine has the bodies, sometimes only the hashes
            bodies = tuple(made) if rng.random() < 0.7 else ()
            kind = StepFinished(index, step, tuple(a.hash for a in made), fingerprint)
        elif roll < 0.65:
            kind = StepFailed(index, step, rng.choice(_ERRORS), fingerprint)
        elif roll < 0.85:
            data: JsonValue = {"count": rng.randrange(100), "ratio": rng.random(), "n": None}
            kind = StepSignal(index, step, "ACQUIRED", data)
        else:
            rationale: JsonValue = {"why": "lowest variance", "score": round(rng.random(), 4)}
            kind = PropertyPreferenceAssigned("weight", "minvar", fingerprint, rationale)
        items.append((FlowEvent(seq, flow_id, kind, ts), bodies))
    return ExampleFlow(flow_id, items)


def random_flows(seed: int, count: int, min_len: int, max_len: int) -> list[ExampleFlow]:
    rng = random.Random(seed)
    return [random_flow(rng, rng.randint(min_len, max_len)) for _ in range(count)]


def emit_round_robin(producer: Producer, flows: Sequence[ExampleFlow]) -> int:
    """Interleave the flows: round r emits every flow's r-th event; rounds alternate between
    ``emit`` (one call per event) and ``emit_many`` (the whole round at once)."""
    emitted = 0
    longest = max(len(f.items) for f in flows)
    for r in range(longest):
        round_items = [f.items[r] for f in flows if r < len(f.items)]
        if r % 2 == 0:
            for event, bodies in round_items:
                producer.emit(event, bodies or None)
        else:
            producer.emit_many(round_items)
        emitted += len(round_items)
    return emitted


def emit_flows(producer: Producer, flows: Sequence[ExampleFlow]) -> None:
    """Each flow in one ``emit_many`` call (fast set-up when interleaving is not the point)."""
    producer.emit_many([item for f in flows for item in f.items])


# --- checking -----------------------------------------------------------------------------------


def stored_counts(database_url: str, flow_ids: Sequence[UUID]) -> dict[UUID, int]:
    """How many events PostgreSQL holds per flow, in one query."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT flow_id, count(*) FROM event_log WHERE flow_id = ANY(%s) GROUP BY flow_id",
            [list(flow_ids)],
        ).fetchall()
    return {row[0]: int(row[1]) for row in rows}


def all_stored(database_url: str, flows: Sequence[ExampleFlow]) -> bool:
    counts = stored_counts(database_url, [f.flow_id for f in flows])
    return all(counts.get(f.flow_id, 0) >= len(f.items) for f in flows)


def queue_idle(redis: Redis, keys: Keys, flows: Sequence[ExampleFlow]) -> bool:
    """No ready or leased flow, and every flow's queue empty."""
    pipe = redis.pipeline(transaction=False)
    for shard in keys.all_shards():
        pipe.zcard(shard.ready)
        pipe.zcard(shard.leased)
    for f in flows:
        pipe.llen(keys.for_flow(str(f.flow_id)).queue(str(f.flow_id)))
    return not any(pipe.execute())


def jobs_idle(redis: Redis, env: QueueEnv) -> bool:
    """No sweep registered, waiting or running."""
    queue = env.queue(redis)
    if queue.count or queue.started_job_registry.count:
        return False
    return not any(redis.zcard(shard.sweeps) for shard in env.keys.all_shards())


def assert_flows_stored(store: PgEventStore, flows: Sequence[ExampleFlow]) -> None:
    """Every flow in PostgreSQL equals what was emitted: order, content, ts; nothing more."""
    mismatches = []
    for f in flows:
        stored = store.list(f.flow_id)
        if stored != f.events:
            mismatches.append(f"{f.flow_id}: {len(stored)} stored, {len(f.events)} emitted")
        elif [e.log_seq for e in stored] != sorted(cast(list[int], [e.log_seq for e in stored])):
            mismatches.append(f"{f.flow_id}: committed out of order")
    assert not mismatches, f"{len(mismatches)} flows differ: {mismatches[:5]}"
    assert store.count_events([f.flow_id for f in flows]) == sum(len(f.items) for f in flows)


def assert_artifacts_stored(store: PgEventStore, flows: Sequence[ExampleFlow]) -> None:
    for f in flows:
        for artifact in f.artifacts:
            row = store.artifact(artifact.hash)
            assert row is not None, f"{f.flow_id}: artifact {artifact.hash} missing"
            assert (row.kind, row.payload, row.metadata) == (
                artifact.kind,
                artifact.payload,
                artifact.metadata,
            )


def terminate_backends(
    database_url: str, application_name: str, *, in_transaction_only: bool = False
) -> int:
    """pg_terminate_backend the connections of ``application_name`` to this database (only
    those inside a transaction, if asked); returns how many were terminated."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s"
            " AND pid <> pg_backend_pid() AND (NOT %s OR xact_start IS NOT NULL)",
            [application_name, in_transaction_only],
        ).fetchall()
    return sum(1 for row in rows if row[0])


def status_json(env: QueueEnv, healthy: bool = True) -> dict[str, Any]:
    """``status --json``; its exit code says healthy (0) or not (1: parked flows, a stale
    backlog), as ``healthy`` expects."""
    result = run_cli(env, "status", "--json")
    assert result.returncode == (0 if healthy else 1), result.stderr
    return cast(dict[str, Any], json.loads(result.stdout))


def describe(redis: Redis, keys: Keys, extra: Mapping[str, object] | None = None) -> str:
    """A one-line view of the queue state, for timeout messages."""
    shard = keys.shard(0)
    pipe = redis.pipeline(transaction=False)
    for key in (shard.ready, shard.leased, shard.parked, shard.sweeps):
        pipe.zcard(key)
    ready, leased, parked, sweeps = pipe.execute()
    return f"ready={ready} leased={leased} parked={parked} sweeps={sweeps} {dict(extra or {})}"
