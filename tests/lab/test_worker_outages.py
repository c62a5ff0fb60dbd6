"""A real `chem-persistence worker` behind lab.proxy survives Redis outages and blips under load.

The worker's Redis connections (rq's, the sweep's, the recovery check's) all go through the
proxy; the producer's too. Redis "down" (the proxy refusing connections and cutting the open
ones), dropped connections and lost replies come and go while flows are emitted: the worker
process must never exit, and every event must be stored once, in order.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis import Redis

from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.producer import Producer
from lab.chaos.stream import expected_event, flow_id_of
from lab.proxy import ReplyLoss, TcpProxy

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 8
EVENTS = 30
DEADLINE_S = 120.0


def wait_until(what: str, condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not before the deadline: {what}")
        time.sleep(0.05)


@pytest.fixture
def proxy(redis_url: str, redis_conn: Redis) -> Iterator[TcpProxy]:
    parts = urlsplit(redis_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as started:
        yield started


def test_worker_survives_outages_cuts_and_lost_replies(
    tmp_path: Path, proxy: TcpProxy, redis_url: str, database_url: str, pool: Pool, key_prefix: str
) -> None:
    db = urlsplit(redis_url).path.lstrip("/") or "0"
    proxied = f"redis://127.0.0.1:{proxy.port}/{db}"
    run = f"{key_prefix}-outage-{random.randrange(1 << 30)}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "REDIS_"))},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "REDIS_URL": proxied,
        "CHEM_KEY_PREFIX": run,
        "CHEM_QUEUE": run,
        "CHEM_LEASE_TTL_MS": "2000",
        "CHEM_CHECK_INTERVAL_SECONDS": "0.5",
        "CHEM_SWEEP_LINGER_SECONDS": "1",
        "CHEM_SWEEP_SLICE_SECONDS": "3",
    }
    log_path = tmp_path / "worker.log"
    seed = random.randrange(1 << 30)
    # Redis is down when the worker starts.
    proxy.pause("refuse")
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "chem_persistence.worker.cli", "worker", "--name", run],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:

        def alive() -> bool:
            return worker.poll() is None

        def logged(text: str) -> Callable[[], bool]:
            return lambda: text in log_path.read_text(errors="replace")

        def errors_logged() -> int:
            return log_path.read_text(errors="replace").count("Error")

        wait_until("the worker saw Redis down", logged("action=worker_redis_error"), 60)
        assert alive(), log_path.read_text()[-3000:]
        proxy.resume()

        settings = QueueSettings(redis_url=proxied, queue_name=run, key_prefix=run)
        producer = Producer(Redis.from_url(proxied), settings)
        emitted = threading.Event()

        def emit_all() -> None:
            for seq in range(EVENTS):
                for index in range(FLOWS):
                    producer.emit(*expected_event(seed, index, seq))
                time.sleep(0.02)
            emitted.set()

        emitter = threading.Thread(target=emit_all, daemon=True)
        emitter.start()
        store = PgEventStore(pool)
        flow_ids = [flow_id_of(seed, i) for i in range(FLOWS)]
        wait_until("some events stored", lambda: store.count_events(flow_ids) > 0)
        # Blips: lost replies, cut connections, and Redis down for a while, under load.
        proxy.set_reply_loss(ReplyLoss(0.05, seed=seed))
        wait_until("replies lost", lambda: proxy.counters().replies_dropped >= 3)
        proxy.cut_all()
        before = errors_logged()
        proxy.pause("refuse")
        wait_until("the worker met Redis down", lambda: errors_logged() >= before + 2, 60)
        proxy.resume()
        proxy.cut_all()
        wait_until("the producer is done", emitted.is_set)
        emitter.join()
        proxy.set_reply_loss(None)
        wait_until("every event stored", lambda: store.count_events(flow_ids) == FLOWS * EVENTS)
        assert alive(), log_path.read_text()[-3000:]
        for index in range(FLOWS):
            stored = store.list(flow_id_of(seed, index))
            assert stored == [expected_event(seed, index, s)[0] for s in range(EVENTS)]
        producer.redis.close()
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
    assert worker.returncode in (0, -15), log_path.read_text()[-3000:]


def test_worker_started_while_postgres_is_down_waits_for_it(
    tmp_path: Path,
    redis_url: str,
    redis_conn: Redis,
    database_url: str,
    pool: Pool,
    key_prefix: str,
) -> None:
    """A worker (re)started while PostgreSQL restarts must wait, not exit (as a bad URL does)."""
    pg = urlsplit(database_url)
    run = f"{key_prefix}-pgdown-{random.randrange(1 << 30)}"
    with TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432) as pg_proxy:
        proxied_pg = pg._replace(netloc=f"{pg.username}@127.0.0.1:{pg_proxy.port}").geturl()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "REDIS_"))},
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": proxied_pg,
            "REDIS_URL": redis_url,
            "CHEM_KEY_PREFIX": run,
            "CHEM_QUEUE": run,
            "CHEM_CHECK_INTERVAL_SECONDS": "0.5",
        }
        log_path = tmp_path / "worker.log"
        pg_proxy.pause("refuse")
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "chem_persistence.worker.cli", "worker", "--name", run],
                env=env,
                stdout=log,
                stderr=log,
            )
        try:
            wait_until(
                "the worker saw PostgreSQL down",
                lambda: (
                    worker.poll() is not None
                    or "action=waiting_for_database" in log_path.read_text(errors="replace")
                ),
                60,
            )
            assert worker.poll() is None, log_path.read_text()[-3000:]
            pg_proxy.resume()
            seed = random.randrange(1 << 30)
            settings = QueueSettings(redis_url=redis_url, queue_name=run, key_prefix=run)
            producer = Producer(Redis.from_url(redis_url), settings)
            for seq in range(5):
                producer.emit(*expected_event(seed, 0, seq))
            store = PgEventStore(pool)
            wait_until("the events stored", lambda: len(store.list(flow_id_of(seed, 0))) == 5)
            assert worker.poll() is None, log_path.read_text()[-3000:]
            producer.redis.close()
        finally:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
