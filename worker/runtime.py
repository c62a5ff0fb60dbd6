"""The process-wide objects a sweep needs, built once per process and rebuilt after a fork.

rq's forking Worker runs each job in a child process: a connection pool must never cross a
fork, so the runtime remembers the pid that built it. The lab builds its own runtime with
hooks (``install``); production code never sets any.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg_pool import ConnectionPool
from redis import Redis
from rq import Queue

from chem_persistence.eventlog.config import DatabaseSettings, redact_url
from chem_persistence.eventlog.errors import sqlstate_of
from chem_persistence.eventlog.pool import open_pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import enqueue_sweep, ingest_queue
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker import metrics
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import REDIS_ERRORS, FlowsStore, Sweeper, SweepHooks

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    pid: int
    redis: Redis
    redis_url: str
    queue_settings: QueueSettings
    database: str  # the PostgreSQL URL, password redacted
    keys: Keys
    queue: Queue
    sweeper: Sweeper
    settings: WorkerSettings
    close: Callable[[], None]
    #: Set when the worker is asked to stop: a running sweep hands over at its next cycle.
    stopping: threading.Event = field(default_factory=threading.Event)


def _count_retry(exc: BaseException) -> None:
    metrics.RETRIES.labels(sqlstate_of(exc) or "none").inc()


def starter(queue: Queue) -> Callable[[str, int], None]:
    """``start(job_id, shard)``: enqueue a registered sweep; a failure only delays it (the
    registration lapses and the periodic check registers another)."""

    def start(job_id: str, shard: int) -> None:
        try:
            enqueue_sweep(queue, job_id, shard)
        except REDIS_ERRORS as exc:
            log.warning("action=enqueue_sweep_failed shard=%d error=%s", shard, type(exc).__name__)

    return start


def build_runtime(
    hooks: SweepHooks | None = None,
    wrap_store: Callable[[PgEventStore], FlowsStore] | None = None,
) -> Runtime:
    queue_settings = QueueSettings.from_env()
    worker_settings = WorkerSettings.from_env()
    db = DatabaseSettings.from_env()
    redis = queue_settings.redis()
    pool: ConnectionPool = open_pool(db)
    pg = PgEventStore(pool, no_artifact_insert=db.no_artifact_insert, on_retry=_count_retry)
    store: FlowsStore = wrap_store(pg) if wrap_store is not None else pg
    queue = ingest_queue(redis, queue_settings.queue_name)
    sweeper = Sweeper(redis, store, Scripts.register(redis), worker_settings, starter(queue), hooks)

    def close() -> None:
        pool.close()
        redis.close()

    return Runtime(
        os.getpid(),
        redis,
        queue_settings.redis_url,
        queue_settings,
        redact_url(db.url),
        Keys(queue_settings.key_prefix, queue_settings.shards),
        queue,
        sweeper,
        worker_settings,
        close,
    )


_lock = threading.Lock()
_current: Runtime | None = None
_factory: Callable[[], Runtime] = build_runtime


def install(factory: Callable[[], Runtime]) -> None:
    """Use ``factory`` to build this process's runtime (the lab's hooks); before any job."""
    global _factory
    with _lock:
        _factory = factory


def runtime() -> Runtime:
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = _factory()
        return _current


def reset_runtime() -> None:
    """Close and forget this process's runtime (tests; a worker shutting down)."""
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            _current.close()
        _current = None
