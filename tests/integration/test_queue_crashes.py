"""Crashes, on the real servers with real worker processes, each inside the window it names.

A worker paused by the lab's hook at a named point (inside the transaction with everything
written; committed and not yet acked) is SIGKILLed there; random SIGKILLs after COMMIT; a
producer that dies between its Lua call and the rq enqueue; PostgreSQL connections killed
mid-sweep. After each: every flow is in PostgreSQL exactly as emitted (no loss, nothing twice).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import redis
from rq import Worker

from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.jobs import EMIT_MAX_SWEEPS, QUEUED_SWEEP_TTL_MS
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import encode_envelope
from tests.integration.queue_helpers import (
    WORKER_APPLICATION_NAME,
    ExampleFlow,
    QueueEnv,
    WorkerProcesses,
    all_stored,
    assert_flows_stored,
    describe,
    emit_flows,
    queue_idle,
    random_flows,
    stored_counts,
    terminate_backends,
    wait_until,
)

RECOVERY_TIMEOUT_SECONDS = 60.0
LEASE_TTL_MS = 2000
CRASH_SETTINGS: dict[str, str | float] = {"CHEM_LEASE_TTL_MS": LEASE_TTL_MS}


def wait_complete(
    env: QueueEnv,
    redis_conn: redis.Redis,
    workers: WorkerProcesses,
    flows: list[ExampleFlow],
    timeout: float = RECOVERY_TIMEOUT_SECONDS,
) -> None:
    wait_until(
        lambda: all_stored(env.database_url, flows) and queue_idle(redis_conn, env.keys, flows),
        timeout,
        "every flow in PostgreSQL and Redis idle",
        interval=0.1,
        details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
    )


def kill_at(
    workers: WorkerProcesses, point: str, pause_file: Path, **settings: str | float
) -> float:
    """Start a worker that pauses at ``point``, wait until it is there, SIGKILL it; the time."""
    victim = workers.start_faulty(
        "--pause-at", point, "--pause-file", str(pause_file), **CRASH_SETTINGS, **settings
    )
    wait_until(
        pause_file.exists,
        RECOVERY_TIMEOUT_SECONDS,
        f"the worker to reach {point}",
        details=workers.output,
    )
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    return time.monotonic()


def test_sigkill_after_commit_before_ack(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    tmp_path: Path,
) -> None:
    flows = random_flows(seed=11, count=12, min_len=4, max_len=9)
    emit_flows(env.producer(redis_conn), flows)
    killed_at = kill_at(workers, "after_commit", tmp_path / "paused", CHEM_BATCH_SIZE=8)
    # committed, not acked: PostgreSQL has the claim's events and Redis still holds them
    committed = stored_counts(env.database_url, [f.flow_id for f in flows])
    assert sum(committed.values()) > 0
    assert redis_conn.zcard(env.shard.leased) > 0  # the dead sweep's leases, still live

    workers.start(**CRASH_SETTINGS)
    wait_complete(env, redis_conn, workers, flows)
    recovered = time.monotonic() - killed_at
    assert_flows_stored(store, flows)  # the redelivered events were absorbed: nothing twice
    print(f"recovered {recovered:.1f}s after the SIGKILL (lease {LEASE_TTL_MS} ms)")


def test_sigkill_inside_the_transaction(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    tmp_path: Path,
) -> None:
    flows = random_flows(seed=12, count=8, min_len=3, max_len=8)
    emit_flows(env.producer(redis_conn), flows)
    kill_at(workers, "before_commit", tmp_path / "paused", CHEM_BATCH_SIZE=500)
    # everything was written inside the transaction; the kill rolled all of it back
    wait_until(
        lambda: stored_counts(env.database_url, [f.flow_id for f in flows]) == {},
        10,
        "the killed transaction to roll back",
    )
    workers.start(**CRASH_SETTINGS)
    wait_complete(env, redis_conn, workers, flows)
    assert_flows_stored(store, flows)


def test_random_sigkills_after_commit(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flows = random_flows(seed=13, count=24, min_len=6, max_len=14)
    emit_flows(env.producer(redis_conn), flows)
    faulty = ("--kill-after-commit", "0.3")
    running = [workers.start_faulty(*faulty, CHEM_BATCH_SIZE=6, **CRASH_SETTINGS) for _ in range(2)]
    kills = 0
    deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
    while kills < 4 and not all_stored(env.database_url, flows):
        assert time.monotonic() < deadline, f"{kills} kills so far\n{workers.output()}"
        for i, proc in enumerate(running):
            code = proc.poll()
            if code is not None:
                assert code == -signal.SIGKILL, workers.output()
                kills += 1
                running[i] = workers.start_faulty(*faulty, CHEM_BATCH_SIZE=6, **CRASH_SETTINGS)
        time.sleep(0.05)
    for proc in running:
        workers.kill(proc)
    workers.start(**CRASH_SETTINGS)
    wait_complete(env, redis_conn, workers, flows)
    assert_flows_stored(store, flows)


def test_producer_died_between_its_script_and_the_rq_enqueue(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    workers.start(**CRASH_SETTINGS)
    queue = env.queue(redis_conn)
    wait_until(
        lambda: Worker.all(queue=queue), 30, "the worker to register", details=workers.output
    )
    wait_until(lambda: redis_conn.zcard(env.shard.sweeps) == 0, 30, "no sweep registered")
    [flow] = random_flows(seed=15, count=1, min_len=5, max_len=5)
    shard = env.shard
    entries = [encode_envelope(event, bodies) for event, bodies in flow.items]
    job_id = Scripts.register(redis_conn).emit(  # the Lua half of emit; no rq job follows
        keys=[shard.ready, shard.leased, shard.sweeps, shard.wake],
        args=[shard.base, str(flow.flow_id), QUEUED_SWEEP_TTL_MS, EMIT_MAX_SWEEPS, *entries],
    )
    assert isinstance(job_id, bytes) and queue.count == 0
    # the periodic check sees a registered sweep with no job, forgets it, starts one
    wait_complete(env, redis_conn, workers, [flow])
    assert_flows_stored(store, [flow])
    assert redis_conn.zscore(shard.sweeps, job_id) is None  # the phantom was forgotten


def test_postgres_connections_killed_mid_sweep(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    flows = random_flows(seed=16, count=40, min_len=20, max_len=30)
    for _ in range(2):
        workers.start(CHEM_BATCH_SIZE=20, **CRASH_SETTINGS)
    emit_flows(env.producer(redis_conn), flows)
    terminated = 0
    deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
    while terminated < 3 and not all_stored(database_url, flows):
        assert time.monotonic() < deadline, workers.output()
        terminated += terminate_backends(
            database_url, WORKER_APPLICATION_NAME, in_transaction_only=True
        )
    wait_complete(env, redis_conn, workers, flows)
    assert all(p.poll() is None for p in workers.procs), workers.output()
    assert env.queue(redis_conn).failed_job_registry.count == 0, workers.output()
    assert redis_conn.zcard(env.shard.parked) == 0  # a lost connection never parks a flow
    assert_flows_stored(store, flows)
    if terminated:
        assert "action=retry" in workers.all_output(), workers.output()


def test_a_backend_holding_a_flow_lock_delays_only_that_flow(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    """A stuck holder of one flow's advisory lock: the claim waits, never parks anything, and
    everything is stored once the holder goes away."""
    from chem_persistence.eventlog.batch import LOCK_NAMESPACE

    [held] = random_flows(seed=17, count=1, min_len=4, max_len=4)
    others = random_flows(seed=18, count=5, min_len=2, max_len=5)
    holder = psycopg.connect(database_url, autocommit=True)
    try:
        holder.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, str(held.flow_id)]
        )
        workers.start(**CRASH_SETTINGS)
        emit_flows(env.producer(redis_conn), [held, *others])
        wait_until(
            lambda: redis_conn.zcard(env.shard.leased) > 0, 30, "a claim", details=workers.output
        )
        assert redis_conn.zcard(env.shard.parked) == 0
    finally:
        holder.close()  # the holder goes away
    wait_complete(env, redis_conn, workers, [held, *others])
    assert_flows_stored(store, [held, *others])
