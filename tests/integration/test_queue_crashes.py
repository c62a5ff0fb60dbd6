"""Crashes, on the real servers with real worker processes: SIGKILL after COMMIT and inside the
transaction, a producer dying before its rq enqueue, PostgreSQL connections killed mid-drain.

After each: every flow is in PostgreSQL exactly as emitted (no loss, nothing twice).
"""

from __future__ import annotations

import signal
import time

import psycopg
import redis
from rq import Worker

from eventlog.store import LOCK_NAMESPACE, PgEventStore
from producer.producer import now_ms
from producer.scripts import Scripts
from producer.wire import encode_envelope
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

RECOVERY_TIMEOUT_SECONDS = 30.0
KILL_ROUNDS = 25
KILL_PAUSE_SECONDS = 0.1
LOCK_TTL_MS = 2000
CRASH_SETTINGS: dict[str, str | float] = {
    "CHEM_LOCK_TTL_MS": LOCK_TTL_MS,
    "CHEM_RECONCILE_INTERVAL_SECONDS": 0.5,
    "CHEM_RECONCILE_GRACE_SECONDS": 1,
}


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


# --- SIGKILL after COMMIT, before the ack -------------------------------------------------------


def test_sigkill_after_commit_before_ack_repeatedly(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flows = random_flows(seed=11, count=24, min_len=6, max_len=14)
    emit_flows(env.producer(redis_conn), flows)
    faulty = {"CHEM_FAULT_KILL_AFTER_COMMIT": 0.3, "CHEM_BATCH_SIZE": 3, **CRASH_SETTINGS}
    running = [workers.start(**faulty) for _ in range(2)]

    # Supervise: restart every worker that dies, until enough kills happened (or all done).
    kills = 0
    deadline = time.monotonic() + 20
    while kills < 6 and time.monotonic() < deadline:
        if all_stored(env.database_url, flows):
            break
        for i, proc in enumerate(running):
            code = proc.poll()
            if code is not None:
                assert code == -signal.SIGKILL, workers.output()
                kills += 1
                running[i] = workers.start(**faulty)
        time.sleep(0.05)
    assert kills >= 3, f"only {kills} kills: the faults did not fire\n{workers.output()}"
    for proc in running:
        workers.kill(proc)

    # Then a clean worker finishes: reconcile picks up the flows the killed workers held.
    workers.start(**CRASH_SETTINGS)
    wait_complete(env, redis_conn, workers, flows)
    assert_flows_stored(store, flows)  # redelivered batches were absorbed: nothing twice


# --- SIGKILL inside the transaction ---------------------------------------------------------


def waiting_drain_backends(database_url: str) -> int:
    """Worker connections blocked on an advisory lock (our lock_flow statement)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND wait_event_type = 'Lock'"
            " AND query LIKE '%%pg_advisory_xact_lock%%'",
            [WORKER_APPLICATION_NAME],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_sigkill_inside_the_transaction(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    [flow] = random_flows(seed=12, count=1, min_len=20, max_len=20)
    others = random_flows(seed=13, count=5, min_len=3, max_len=8)
    holder = psycopg.connect(database_url, autocommit=True)
    try:
        holder.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, str(flow.flow_id)]
        )
        emit_flows(env.producer(redis_conn), [flow, *others])
        victim = workers.start(CHEM_BATCH_SIZE=5, **CRASH_SETTINGS)
        wait_until(
            lambda: waiting_drain_backends(database_url) == 1,
            RECOVERY_TIMEOUT_SECONDS,
            "the worker to block inside its transaction",
            details=workers.output,
        )
        assert stored_counts(database_url, [flow.flow_id]) == {}
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        # the dead worker's drain lock is still live in Redis; the flow is still owed a drain
        assert redis_conn.exists(env.keys.lock(str(flow.flow_id)))
        assert redis_conn.zscore(env.keys.pending, str(flow.flow_id)) is not None
    finally:
        holder.close()  # releases the session advisory lock

    workers.start(CHEM_BATCH_SIZE=5, **CRASH_SETTINGS)
    wait_complete(env, redis_conn, workers, [flow, *others])
    assert_flows_stored(store, [flow, *others])


# --- the producer dies between its Lua call and the rq enqueue ----------------------------------


def push_without_a_job(env: QueueEnv, redis_conn: redis.Redis, flow: ExampleFlow, now: int) -> None:
    """Only the Lua half of ``emit``: the events and the pending mark, but no rq job."""
    keys = [
        env.keys.queue(str(flow.flow_id)),
        env.keys.parked(str(flow.flow_id)),
        env.keys.pending,
    ]
    entries = [encode_envelope(event, bodies) for event, bodies in flow.items]
    became_pending = Scripts.register(redis_conn).emit(
        keys=keys, args=[str(flow.flow_id), now, *entries]
    )
    assert became_pending == 1


def test_producer_died_before_enqueue_reconcile_at_worker_start(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flows = random_flows(seed=14, count=3, min_len=2, max_len=9)
    for flow in flows:
        push_without_a_job(env, redis_conn, flow, now_ms() - 10_000)  # died a while ago
    assert env.queue(redis_conn).count == 0  # no job: only reconcile can find them

    # a burst worker with no periodic reconcile in sight: only the one at start can do it
    proc = workers.start(
        "--burst", CHEM_RECONCILE_INTERVAL_SECONDS=3600, CHEM_RECONCILE_GRACE_SECONDS=1
    )
    assert proc.wait(timeout=60) == 0, workers.output()
    assert_flows_stored(store, flows)
    assert queue_idle(redis_conn, env.keys, flows)


def test_producer_died_before_enqueue_periodic_reconcile(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    [flow] = random_flows(seed=15, count=1, min_len=5, max_len=5)
    workers.start(**CRASH_SETTINGS)
    queue = env.queue(redis_conn)
    wait_until(
        lambda: Worker.all(queue=queue), 30, "the worker to register", details=workers.output
    )
    push_without_a_job(env, redis_conn, flow, now_ms())  # after the worker's start-up reconcile
    assert queue.count == 0
    wait_complete(env, redis_conn, workers, [flow], timeout=15)
    assert_flows_stored(store, [flow])


# --- PostgreSQL connections killed mid-drain ----------------------------------------------------


def test_postgres_connections_killed_mid_drain(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    flows = random_flows(seed=16, count=40, min_len=20, max_len=30)
    emit_flows(env.producer(redis_conn), flows)
    for _ in range(2):
        workers.start(CHEM_BATCH_SIZE=2, **CRASH_SETTINGS)

    # Kill the workers' connections that are inside a transaction, a bounded number of times.
    terminated = 0
    for _ in range(KILL_ROUNDS):
        if all_stored(database_url, flows):
            break
        terminated += terminate_backends(
            database_url, WORKER_APPLICATION_NAME, in_transaction_only=True
        )
        time.sleep(KILL_PAUSE_SECONDS)
    wait_complete(env, redis_conn, workers, flows)
    assert terminated > 0, "no transaction was caught: the drain was over too soon"
    assert all(p.poll() is None for p in workers.procs), workers.output()
    assert "action=retry" in workers.all_output(), workers.output()  # broke, and was retried
    # retried inside the drain (the flow's order holds while it waits), not failed and redone
    assert env.queue(redis_conn).failed_job_registry.count == 0, workers.output()
    assert_flows_stored(store, flows)
