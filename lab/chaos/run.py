"""`chem-persistence chaos`: the pipeline under sustained load while faults hit it at random.

Private servers under ./.chem/chaos/ (lab.chaos.servers), a producer process emitting the
deterministic stream (lab.chaos.producer), W ``lab.faulty_worker`` processes sweeping it, all
of their Redis connections through a proxy that loses a few % of replies after Redis ran the
command; a fault loop injects the faults of lab.chaos.faults and a supervisor restarts what
died (lab.chaos.fleet). After the fault window the run drains, then every flow read from
PostgreSQL is compared with the stream (lab.chaos.report). Exit status 0 only when nothing was
lost, duplicated, reordered or parked, nothing is left queued, and no process exited on its own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import psycopg
import redis.exceptions
from redis import Redis
from rich.progress import BarColumn

from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import open_pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.keys import Keys
from lab.chaos.faults import ARMED_KINDS, FAULT_KINDS, INJECTED_KINDS, fault_period, inject
from lab.chaos.faults import weighted as weighted_fault
from lab.chaos.fleet import Fleet
from lab.chaos.report import ChaosReport, check_stored, redis_left
from lab.chaos.servers import Servers, private_servers
from lab.chaos.stream import flow_id_of
from lab.console import STDOUT, LiveProgress
from lab.embedded import raise_keyboard_interrupt
from lab.proxy import ReplyLoss

CHAOS_ROOT = Path(".chem") / "chaos"
DEFAULT_REPLY_LOSS = 0.02
PLAIN_PROGRESS_SECONDS = 10.0  # a progress line this often when stderr is not a terminal
#: The rig's own PostgreSQL connections: not the workers' application_name, so that the
#: pg_terminate fault leaves them alone.
RIG_POOL_NAME = "chem-chaos-rig"
TRANSIENT = (psycopg.Error, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
T = TypeVar("T")


def worker_env(servers: Servers, run_id: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.proxied_redis_url,
        "CHEM_QUEUE": f"chem-chaos-{run_id}",
        "CHEM_KEY_PREFIX": f"chemchaos-{run_id}",
        "CHEM_BATCH_SIZE": "200",
        "CHEM_CLAIM_FLOWS": "50",
        "CHEM_LEASE_TTL_MS": "3000",
        "CHEM_CHECK_INTERVAL_SECONDS": "0.5",
        "CHEM_SWEEP_SLICE_SECONDS": "5",
        "CHEM_SWEEP_LINGER_SECONDS": "1",
    }


def run_chaos(
    *,
    duration: float,
    flows: int,
    events: int,
    workers: int,
    rate: float | None,
    seed: int,
    reply_loss: float = DEFAULT_REPLY_LOSS,
    root: Path = CHAOS_ROOT,
    as_json: bool = False,
) -> int:
    """Run, check, print the table; 0 only when the run passed (see the module docstring).

    ``rate`` None: spread the flows' events over 90% of the fault window (sustained load).
    """
    command = (
        f"chem-persistence chaos --duration {duration:g} --flows {flows} --events {events}"
        f" --workers {workers} --seed {seed} --reply-loss {reply_loss:g}"
        + (f" --rate {rate:g}" if rate else "")
    )
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
        env = worker_env(servers, run_id)
        settings = DatabaseSettings.from_env(env)
        pool = stack.enter_context(open_pool(settings, name=RIG_POOL_NAME))  # migrates first
        store = PgEventStore(pool)
        direct = Redis.from_url(servers.redis_url)
        keys = Keys(env["CHEM_KEY_PREFIX"])
        producer_cmd = [
            sys.executable, "-m", "lab.chaos", "produce", "--seed", str(seed),
            "--flows", str(flows), "--events", str(events), "--rate", str(rate),
            "--log", str(root / "emitted.log"), "--arm-file", str(root / "arm" / "producer"),
        ]  # fmt: skip
        fleet = Fleet(env, workers, producer_cmd, root)
        stack.callback(fleet.stop)
        servers.proxy.set_reply_loss(ReplyLoss(reply_loss, seed=seed) if reply_loss else None)
        injected, started, last_fault = _fault_window(fleet, servers, rng, duration)
        drained_at = _drain(fleet, store, direct, keys, seed, flows, events, duration)
        faults = Counter(injected) + fleet.faults
        faults["reply_lost"] = servers.proxy.counters().replies_dropped
        stored, lost, duplicated, reordered, problems = _retry(
            lambda: check_stored(store, seed, flows, events)
        )
        left = _retry(lambda: redis_left(direct, keys, seed, flows))
        report = ChaosReport(
            seconds=time.monotonic() - started,
            flows=flows,
            events_expected=flows * events,
            events_emitted=_emitted(root / "emitted.log"),
            events_stored=stored,
            faults={k: faults.get(k, 0) for k in FAULT_KINDS},
            lost=lost,
            duplicated=duplicated,
            reordered=reordered,
            parked_flows=left.parked,
            left_in_redis=left.queued,
            unexpected_exits=len(fleet.unexpected),
            process_starts=fleet.spawned,
            drain_seconds_after_last_fault=None if drained_at is None else drained_at - last_fault,
            producer_done_seconds=_since(started, fleet.producer_done_at),
            drain_seconds_after_producer_done=(
                None
                if drained_at is None or fleet.producer_done_at is None
                else max(0.0, drained_at - max(fleet.producer_done_at, last_fault))
            ),
            command=command,
            problems=problems + [str(u) for u in fleet.unexpected],
        )
        if drained_at is None:
            report.problems.append(
                f"not drained after the last fault (Redis: {left}); see {root / 'logs'}"
            )
        for exit_ in fleet.unexpected[:3]:
            sys.stderr.write(f"--- {exit_}; its log ends with:\n{exit_.log_tail}\n")
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        STDOUT.print(report.table())
        print(f"command: {report.command}")
    for problem in report.problems[:20]:
        print(f"PROBLEM {problem}")
    return 0 if report.ok else 1


def _fault_window(
    fleet: Fleet, servers: Servers, rng: random.Random, duration: float
) -> tuple[Counter[str], float, float]:
    """Inject faults for ``duration`` seconds; (injected counts, start, end).

    Replies are lost until the end of the window: that is the time of the last fault."""
    injected: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + duration
    forced = list(INJECTED_KINDS)
    rng.shuffle(forced)
    next_fault = started + 1.0
    overtime = started + 2 * duration  # a loaded machine may need longer to see every kind
    columns = (
        "chaos",
        BarColumn(),
        "{task.completed:.0f}/{task.total:.0f} s {task.fields[faults]}",
    )
    with LiveProgress(*columns, total=duration, every=PLAIN_PROGRESS_SECONDS, faults="") as bar:
        while time.monotonic() < deadline or (
            time.monotonic() < overtime and _missing(injected + fleet.faults)
        ):
            fleet.supervise()
            now = time.monotonic()
            if now >= next_fault:
                was_forced = bool(forced)
                kind = forced.pop() if forced else _unfired(fleet) or weighted_fault(rng)
                try:
                    done = inject(kind, fleet, servers, rng)
                except TRANSIENT:  # e.g. terminating backends while PostgreSQL restarts
                    done = False
                if done and kind not in ARMED_KINDS:
                    injected[kind] += 1
                elif not done and was_forced:
                    forced.insert(0, kind)  # a forced kind that could not happen now: later
                next_fault = time.monotonic() + rng.uniform(0.5, 1.5) * fault_period(duration)
            counts = injected + fleet.faults
            faults = " ".join(f"{k}={counts[k]}" for k in INJECTED_KINDS)
            bar.update(min(time.monotonic() - started, duration), faults=faults)
            time.sleep(0.05)
    fleet.disarm()
    servers.proxy.set_reply_loss(None)  # lost replies were a fault until now
    fleet.supervise()
    return injected, started, time.monotonic()


def _missing(counts: Counter[str]) -> bool:
    """Whether a kind of injected fault has not happened yet."""
    return any(not counts[kind] for kind in INJECTED_KINDS)


def _unfired(fleet: Fleet) -> str | None:
    """An armed kind that has not fired yet and is not pending: armed again first, so that
    a short run sees every kind."""
    for kind in ARMED_KINDS:
        if not fleet.faults[kind] and kind not in fleet.armed:
            return kind
    return None


def _drain(
    fleet: Fleet,
    store: PgEventStore,
    direct: Redis,
    keys: Keys,
    seed: int,
    flows: int,
    events: int,
    duration: float,
) -> float | None:
    """Wait until the producer is done and everything is stored and gone from Redis."""
    deadline = time.monotonic() + max(120.0, duration)
    flow_ids = [flow_id_of(seed, i) for i in range(flows)]
    expected = flows * events
    while time.monotonic() < deadline:
        fleet.supervise()
        try:
            stored = store.count_events(flow_ids)
            left = redis_left(direct, keys, seed, flows)
        except TRANSIENT:
            stored, left = -1, None
        if (
            fleet.producer_done
            and stored >= expected
            and left is not None
            and left.queued == 0
            and left.leased == 0
        ):
            return time.monotonic()
        time.sleep(0.2)
    return None


def _since(start: float, at: float | None) -> float | None:
    return None if at is None else at - start


def _retry(call: Callable[[], T], attempts: int = 20) -> T:
    for _ in range(attempts - 1):
        try:
            return call()
        except TRANSIENT:
            time.sleep(0.5)
    return call()


def _emitted(log_path: Path) -> int:
    if not log_path.exists():
        return 0
    return len({line for line in log_path.read_text().splitlines() if line.strip()})
