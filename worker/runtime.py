"""The process-wide objects a drain needs, built on first use and rebuilt after a fork.

rq's forking Worker runs each job in a child process: a connection pool must never cross a
fork, so the runtime remembers the pid that built it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from psycopg_pool import ConnectionPool
from redis import Redis

from eventlog.config import DatabaseSettings
from eventlog.errors import sqlstate_of
from eventlog.pool import open_pool
from eventlog.store import PgEventStore
from producer.config import QueueSettings
from producer.jobs import ingest_queue
from producer.scripts import Scripts
from producer.wire import Keys
from worker import metrics
from worker.config import WorkerSettings
from worker.drain import Drainer


@dataclass
class Runtime:
    pid: int
    redis: Redis
    pool: ConnectionPool
    store: PgEventStore
    drainer: Drainer

    def close(self) -> None:
        self.pool.close()
        self.redis.close()


_lock = threading.Lock()
_current: Runtime | None = None


def _count_retry(exc: BaseException) -> None:
    metrics.RETRIES.labels(sqlstate_of(exc) or "none").inc()


def build_runtime() -> Runtime:
    queue_settings = QueueSettings.from_env()
    worker_settings = WorkerSettings.from_env()
    db = DatabaseSettings.from_env()
    redis = Redis.from_url(queue_settings.redis_url)
    pool = open_pool(db)
    store = PgEventStore(pool, no_artifact_insert=db.no_artifact_insert, on_retry=_count_retry)
    drainer = Drainer(
        redis,
        store,
        Keys(queue_settings.key_prefix),
        Scripts.register(redis),
        ingest_queue(redis, queue_settings.queue_name),
        worker_settings,
    )
    return Runtime(os.getpid(), redis, pool, store, drainer)


def runtime() -> Runtime:
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = build_runtime()
        return _current


def reset_runtime() -> None:
    """Close and forget this process's runtime (tests; a worker shutting down)."""
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            _current.close()
        _current = None


def drain_flow(flow_id: str) -> dict[str, str | int]:
    """The rq job: drain one flow with this process's runtime (built on first use)."""
    return runtime().drainer.drain(flow_id).as_dict()
