"""`chem-persistence worker`: an rq worker with the right settings, reconcile and metrics.

By default a SimpleWorker: drains run in this process and reuse one connection pool. With
``--fork`` the standard forking Worker runs each drain in a child (isolation, but a new pool
per job). Either way jobs are JSON-serialized and only ``drain_flow`` runs (``DrainJob``):
whoever can write Redis gets no code execution.
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
from rq.job import Job
from rq.serializers import JSONSerializer

from producer.config import QueueSettings
from producer.jobs import DRAIN_FUNCTION, ingest_queue
from producer.wire import Keys
from worker.config import WorkerSettings
from worker.reconcile import PeriodicReconciler, reconcile

log = logging.getLogger(__name__)


class RefusedJob(RuntimeError):
    """A job on the queue that is not ``drain_flow(flow_id)``: failed, never run."""


class DrainJob(Job):
    """The only job a chem worker runs: ``worker.runtime.drain_flow``; no callbacks, no webhooks.

    The JSON serializer keeps pickles out, but a JSON job still names any importable function
    (``os.system``), callbacks and webhooks: whoever can write Redis could run or send them.
    A job naming another function fails (visible in the failed registry) before anything is
    imported; callbacks and webhooks are dropped with a warning.
    """

    @property
    def func(self) -> Any:
        if self.func_name != DRAIN_FUNCTION or self.instance is not None:
            raise RefusedJob(f"job {self.id}: {self.func_name!r:.100} is not {DRAIN_FUNCTION}")
        return super().func

    def _dropped(self, what: str, name: object) -> None:
        if name:
            log.warning("action=job_refused job=%s dropped=%s value=%.100r", self.id, what, name)

    @property
    def success_callback(self) -> Any:
        self._dropped("success_callback", self._success_callback_name)
        return None

    @property
    def failure_callback(self) -> Any:
        self._dropped("failure_callback", self._failure_callback_name)
        return None

    @property
    def stopped_callback(self) -> Any:
        self._dropped("stopped_callback", self._stopped_callback_name)
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        self._dropped("webhooks", [w.url for w in self.webhooks])


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
        job_class=DrainJob,
        name=name or f"chem-{socket.gethostname()}-{threading.get_native_id()}",
    )
    try:
        return bool(worker.work(burst=burst, logging_level="WARNING", with_scheduler=False))
    finally:
        reconciler.stop()
