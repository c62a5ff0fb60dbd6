"""Blips change nothing: replies lost after Redis ran a command, Redis and PostgreSQL away for a
while — with a real TCP proxy (lab.proxy) between the clients and the servers, real worker
processes and a stream of flows. After each: 0 lost, 0 duplicated, 0 reordered, 0 parked,
and no worker process exited.

Client retries: redis-py re-sends a command after a connection error (CHEM_REDIS_RETRIES,
default 3) and the producer and the sweeps retry on top; every script is safe to run twice.
The lost-reply test runs both ways: with redis-py's retries on, and off (our own retries only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.producer import Producer
from lab.proxy import ReplyLoss, TcpProxy
from tests.integration.queue_helpers import (
    ExampleFlow,
    QueueEnv,
    WorkerProcesses,
    all_stored,
    assert_artifacts_stored,
    assert_flows_stored,
    describe,
    queue_idle,
    random_flows,
    stored_counts,
    wait_until,
)

TIMEOUT_SECONDS = 90.0
LEASE_TTL_MS = 3000


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    return parts._replace(netloc=f"{auth}{proxy.url_host_port}").geturl()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    with TcpProxy(*host_port(redis_url)) as proxy:
        yield proxy


def emit_stream(producer: Producer, flows: list[ExampleFlow]) -> None:
    """Each flow's events one emit at a time, round robin (the engine's trickle)."""
    longest = max(len(f.items) for f in flows)
    for r in range(longest):
        for f in flows:
            if r < len(f.items):
                event, bodies = f.items[r]
                producer.emit(event, bodies or None)


@pytest.mark.parametrize("retries", [3, 0], ids=["redis-py-retries-on", "redis-py-retries-off"])
def test_lost_replies_lose_nothing_and_duplicate_nothing(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_proxy: TcpProxy,
    redis_conn: redis.Redis,
    store: PgEventStore,
    retries: int,
) -> None:
    flows = random_flows(seed=31 + retries, count=60, min_len=5, max_len=25)
    proxied = via(env.redis_url, redis_proxy)
    for i in range(2):
        workers.start(
            "--name",
            f"blip-{env.queue_name}-{retries}-{i}",
            REDIS_URL=proxied,
            CHEM_REDIS_RETRIES=retries,
            CHEM_LEASE_TTL_MS=LEASE_TTL_MS,
        )
    redis_proxy.set_reply_loss(ReplyLoss(0.03, seed=retries))
    settings = QueueSettings(proxied, env.queue_name, env.key_prefix, redis_retries=retries)
    producer = Producer(settings.redis(), settings)
    emit_stream(producer, flows)
    wait_until(
        lambda: all_stored(env.database_url, flows) and queue_idle(redis_conn, env.keys, flows),
        TIMEOUT_SECONDS,
        "every flow in PostgreSQL and Redis idle",
        interval=0.2,
        details=lambda: (
            describe(redis_conn, env.keys, {"proxy": redis_proxy.counters()})
            + "\n"
            + workers.output()
        ),
    )
    counters = redis_proxy.counters()
    assert counters.replies_dropped >= 5, counters  # the fault really happened, many times
    assert [p.poll() for p in workers.procs] == [None, None], workers.output()
    assert_flows_stored(store, flows)  # in order, each event once, ts and content intact
    assert_artifacts_stored(store, flows)
    assert redis_conn.zcard(env.shard.parked) == 0


def test_redis_away_for_a_while_then_back(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_proxy: TcpProxy,
    redis_conn: redis.Redis,
    store: PgEventStore,
) -> None:
    flows = random_flows(seed=41, count=30, min_len=5, max_len=15)
    proxied = via(env.redis_url, redis_proxy)
    for _ in range(2):
        workers.start(REDIS_URL=proxied, CHEM_LEASE_TTL_MS=LEASE_TTL_MS)
    settings = QueueSettings(proxied, env.queue_name, env.key_prefix)
    producer = Producer(settings.redis(), settings)
    emitter = threading.Thread(target=emit_stream, args=(producer, flows))
    emitter.start()
    wait_until(
        lambda: stored_counts(env.database_url, [f.flow_id for f in flows]), 30, "some traffic"
    )
    redis_proxy.pause("refuse")  # Redis is down for workers and producer alike
    try:
        wait_until(
            lambda: redis_proxy.counters().connections_rejected > 0 or not emitter.is_alive(),
            30,
            "a client to find Redis down",
        )
        time.sleep(2.0)  # the fault itself: an outage of two seconds
    finally:
        redis_proxy.resume()
    emitter.join(timeout=60)
    assert not emitter.is_alive()
    wait_until(
        lambda: all_stored(env.database_url, flows) and queue_idle(redis_conn, env.keys, flows),
        TIMEOUT_SECONDS,
        "every flow stored after Redis came back",
        interval=0.2,
        details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
    )
    assert [p.poll() for p in workers.procs] == [None, None], workers.output()
    assert_flows_stored(store, flows)


def test_postgres_away_for_a_while_then_back(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
) -> None:
    flows = random_flows(seed=51, count=30, min_len=5, max_len=15)
    with TcpProxy(*host_port(env.database_url)) as pg_proxy:
        for _ in range(2):
            workers.start(
                DATABASE_URL=via(env.database_url, pg_proxy), CHEM_LEASE_TTL_MS=LEASE_TTL_MS
            )
        producer = env.producer(redis_conn)
        half = len(flows) // 2
        emit_stream(producer, flows[:half])
        wait_until(lambda: all_stored(env.database_url, flows[:half]), 60, "the first half")
        pg_proxy.pause("refuse")
        try:
            emit_stream(producer, flows[half:])  # the engine goes on: Redis takes them
            time.sleep(3.0)  # the fault itself: PostgreSQL away for three seconds
            assert not all_stored(env.database_url, flows[half:])
        finally:
            pg_proxy.resume()
        wait_until(
            lambda: all_stored(env.database_url, flows) and queue_idle(redis_conn, env.keys, flows),
            TIMEOUT_SECONDS,
            "every flow stored after PostgreSQL came back",
            interval=0.2,
            details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
        )
    assert [p.poll() for p in workers.procs] == [None, None], workers.output()
    assert redis_conn.zcard(env.shard.parked) == 0  # an outage never dead-letters anything
    assert_flows_stored(store, flows)
