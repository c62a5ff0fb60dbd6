"""`chem-persistence worker`: an rq worker with the right settings, reconcile and metrics.

By default a SimpleWorker: drains run in this process and reuse one connection pool. With
``--fork`` the standard forking Worker runs each drain in a child (isolation, but a new pool
per job). Either way jobs are JSON-serialized: whoever can write Redis gets no code execution.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, cast

from prometheus_client import start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer

from producer.config import QueueSettings
from producer.jobs import ingest_queue
from producer.wire import Keys
from worker.config import WorkerSettings
from worker.reconcile import PeriodicReconciler, reconcile

log = logging.getLogger(__name__)


class QueueGauges(Collector):
    """Backlog, pending and parked flows, read from Redis at scrape time."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._lock = threading.Lock()

    def collect(self) -> Any:
        with self._lock:
            pending = cast(list[bytes], self.redis.zrange(self.keys.pending, 0, -1))
            parked = cast(list[bytes], self.redis.zrange(self.keys.parked_index, 0, -1))
            pipe = self.redis.pipeline(transaction=False)
            for flow in pending + parked:
                pipe.llen(self.keys.queue(flow.decode()))
            backlog = sum(pipe.execute()) if pending or parked else 0
        yield GaugeMetricFamily("chem_backlog_events", "Events queued in Redis", value=backlog)
        yield GaugeMetricFamily("chem_pending_flows", "Flows owed a drain", value=len(pending))
        yield GaugeMetricFamily("chem_parked_flows", "Flows parked", value=len(parked))


def run_worker(*, burst: bool = False, fork: bool = False, name: str | None = None) -> bool:
    queue_settings = QueueSettings.from_env()
    settings = WorkerSettings.from_env()
    redis = Redis.from_url(queue_settings.redis_url)
    keys = Keys(queue_settings.key_prefix)
    queue = ingest_queue(redis, queue_settings.queue_name)

    if not fork:
        from worker.runtime import runtime

        runtime()  # open the pool (and migrate) before taking jobs: fail fast on bad config

    reconcile(redis, keys, queue, settings.reconcile_grace_seconds)
    reconciler = PeriodicReconciler(
        Redis.from_url(queue_settings.redis_url),
        keys,
        queue,
        settings.reconcile_interval_seconds,
        settings.reconcile_grace_seconds,
    )
    reconciler.start()
    if settings.metrics_port is not None:
        from prometheus_client import REGISTRY

        REGISTRY.register(QueueGauges(Redis.from_url(queue_settings.redis_url), keys))
        start_http_server(settings.metrics_port)
        log.info("action=metrics_listening port=%d", settings.metrics_port)

    worker_class = Worker if fork else SimpleWorker
    worker = worker_class(
        [queue],
        connection=redis,
        serializer=JSONSerializer,
        name=name or f"chem-{socket.gethostname()}-{threading.get_native_id()}",
    )
    try:
        return bool(worker.work(burst=burst, logging_level="WARNING", with_scheduler=False))
    finally:
        reconciler.stop()
