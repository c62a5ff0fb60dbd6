"""The faults a chaos run injects, and how often.

Injected by the rig at random times: ``worker_kill`` (SIGKILL a worker anywhere),
``kill_before_commit`` / ``kill_after_commit`` (arm a point: the next worker to get there
SIGKILLs itself inside the transaction, or after COMMIT and before the ack: the redelivery
window), ``pg_terminate`` (pg_terminate_backend of the workers' connections), ``pg_restart``
(immediate mode: a crash), ``redis_restart`` (SIGKILL, AOF reload), ``redis_cut`` (the proxy
closes every client connection) and ``producer_kill`` (arm the producer: its next emit that
registers a sweep exits the process before the rq enqueue). All the time: ``reply_lost``, the
proxy drops a few % of replies after Redis ran the command.
"""

from __future__ import annotations

import random

import psycopg

from lab.chaos.fleet import Fleet
from lab.chaos.servers import Servers

#: Faults that are counted when a process actually dies at the armed point, not when armed.
ARMED_KINDS = ("kill_before_commit", "kill_after_commit", "producer_kill")
INJECTED_KINDS = (
    "worker_kill",
    "kill_before_commit",
    "kill_after_commit",
    "pg_terminate",
    "pg_restart",
    "redis_restart",
    "redis_cut",
    "producer_kill",
)
FAULT_KINDS = (*INJECTED_KINDS, "reply_lost")
# Relative frequency of each injected fault; every kind is also forced early (a short run
# has them all).
FAULT_WEIGHTS = {
    "worker_kill": 0.30,
    "kill_before_commit": 0.12,
    "kill_after_commit": 0.15,
    "pg_terminate": 0.10,
    "pg_restart": 0.06,
    "redis_restart": 0.06,
    "redis_cut": 0.12,
    "producer_kill": 0.09,
}
TERMINATE_SQL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name = 'chem' AND pid <> pg_backend_pid()"
)


def weighted(rng: random.Random) -> str:
    return rng.choices(list(FAULT_WEIGHTS), weights=list(FAULT_WEIGHTS.values()))[0]


def fault_period(duration: float) -> float:
    """Mean seconds between faults: 2 s on a long run (restarts of PostgreSQL and Redis take
    a few seconds of that), less on a short one so that every kind happens."""
    return min(2.0, max(0.8, duration / 25))


def inject(kind: str, fleet: Fleet, servers: Servers, rng: random.Random) -> bool:
    """Inject (or arm) ``kind``; False when it could not be done now (then it is not counted)."""
    if kind == "worker_kill":
        return fleet.kill_worker(rng)
    if kind in ARMED_KINDS:
        return fleet.arm(kind)
    if kind == "pg_terminate":
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(TERMINATE_SQL)
        return True
    if kind == "pg_restart":
        servers.pg_restart()
        return True
    if kind == "redis_restart":
        servers.redis_restart()
        return True
    if kind == "redis_cut":
        servers.proxy.cut_all()
        return True
    raise ValueError(f"unknown fault kind {kind!r}")
