"""`chem-persistence worker`: an rq worker that runs sweeps, checks recovery, serves metrics.

By default a SimpleWorker: sweeps run in this process and reuse one connection pool. With
``--fork`` the standard forking Worker runs each sweep in a child (isolation, but a new pool
per job). Either way jobs are JSON-serialized and only ``worker.job.sweep`` runs
(``SweepJob``): whoever can write Redis gets no code execution.

The worker never exits on a transient error: when rq's loop ends on a Redis error, the
worker logs it once, waits with backoff, and starts listening again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, cast

import psycopg
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from chem_persistence.eventlog.config import redact_url
from chem_persistence.producer.jobs import SWEEP_FUNCTION
from chem_persistence.producer.keys import Keys
from chem_persistence.worker.recovery import PeriodicRecovery, Recovery
from chem_persistence.worker.runtime import Runtime, runtime, starter
from chem_persistence.worker.sweep import REDIS_ERRORS
from chem_persistence.worker.version import __version__

log = logging.getLogger(__name__)

RECONNECT_INITIAL_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0


class RefusedJob(RuntimeError):
    """A job on the queue that is not ``sweep(shard)``: failed, never run."""


class SweepJob(Job):
    """The only job a chem worker runs: ``worker.job.sweep``; no callbacks, no webhooks.

    The JSON serializer keeps pickles out, but a JSON job still names any importable function
    (``os.system``), callbacks and webhooks: whoever can write Redis could run or send them.
    A job naming another function fails (visible in the failed registry) before anything is
    imported; callbacks and webhooks are dropped with a warning.
    """

    @property
    def func(self) -> Any:
        if self.func_name != SWEEP_FUNCTION or self.instance is not None:
            raise RefusedJob(f"job {self.id}: {self.func_name!r:.100} is not {SWEEP_FUNCTION}")
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


class ChemWorker(SimpleWorker):
    """A SimpleWorker whose warm shutdown also tells a running sweep to hand over now."""

    stopping: threading.Event | None = None

    def request_stop(self, signum: Any, frame: Any) -> None:
        if self.stopping is not None:
            self.stopping.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


class QueueGauges(Collector):
    """Backlog, ready, leased and parked flows, and sweeps, read from Redis at scrape time."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._lock = threading.Lock()

    def collect(self) -> Any:
        ready = leased = parked = sweeps = backlog = 0
        with self._lock:
            for shard in self.keys.all_shards():
                pipe = self.redis.pipeline(transaction=False)
                pipe.zrange(shard.ready, 0, -1)
                pipe.zrange(shard.leased, 0, -1)
                pipe.zrange(shard.parked, 0, -1)
                pipe.zcard(shard.sweeps)
                r, le, pa, sw = pipe.execute()
                ready, leased, parked, sweeps = (
                    ready + len(r),
                    leased + len(le),
                    parked + len(pa),
                    sweeps + int(sw),
                )
                flows = [f.decode() for f in cast(list[bytes], r + le + pa)]
                if flows:
                    pipe = self.redis.pipeline(transaction=False)
                    for flow in flows:
                        pipe.llen(shard.queue(flow))
                    backlog += sum(pipe.execute())
        yield GaugeMetricFamily("chem_backlog_events", "Events queued in Redis", value=backlog)
        yield GaugeMetricFamily("chem_ready_flows", "Flows waiting for a sweep", value=ready)
        yield GaugeMetricFamily("chem_leased_flows", "Flows being swept", value=leased)
        yield GaugeMetricFamily("chem_parked_flows", "Flows parked", value=parked)
        yield GaugeMetricFamily("chem_sweeps", "Sweep jobs queued or running", value=sweeps)


#: libpq's words for a PostgreSQL that is not there YET (down, restarting, recovering): a
#: starting worker waits for it. Anything else (unknown database or role, bad password) is bad
#: configuration and still fails at once. libpq reports no SQLSTATE for a failed connection.
DATABASE_NOT_YET = (
    "Connection refused",
    "No such file or directory",  # the unix socket, between a crash and the restart
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "server closed the connection unexpectedly",
    "timeout expired",
)


def _open_runtime(burst: bool) -> Runtime:
    """This process's runtime; a PostgreSQL that is down or starting up is waited for (a
    one-shot ``--burst`` run fails instead)."""
    pause = RECONNECT_INITIAL_SECONDS
    waiting = False
    while True:
        try:
            return runtime()  # open the pool (and migrate) before taking jobs
        except psycopg.OperationalError as exc:
            if burst or not any(words in str(exc) for words in DATABASE_NOT_YET):
                raise  # bad configuration (or a one-shot run): fail fast
            if not waiting:
                waiting = True
                log.warning("action=waiting_for_database error=%.300s", exc)
        time.sleep(pause)
        pause = min(pause * 2, RECONNECT_MAX_SECONDS)


def run_worker(*, burst: bool = False, fork: bool = False, name: str | None = None) -> bool:
    rt = _open_runtime(burst)
    recovery = Recovery(
        rt.queue_settings.redis(),
        rt.keys,
        rt.sweeper.scripts,
        rt.queue,
        rt.settings,
        starter(rt.queue),
    )
    _first_check(recovery, burst)
    periodic = PeriodicRecovery(recovery, rt.settings.check_interval_seconds)
    periodic.start()
    if rt.settings.metrics_port is not None:
        REGISTRY.register(QueueGauges(rt.queue_settings.redis(), rt.keys))
        start_http_server(rt.settings.metrics_port)
        log.info("action=metrics_listening port=%d", rt.settings.metrics_port)
    base_name = name or f"chem-{socket.gethostname()}-{threading.get_native_id()}"
    log.info(
        "action=worker_start version=%s name=%s queue=%s redis=%s postgres=%s shards=%d"
        " batch=%d claim_flows=%d lease_ms=%d slice_s=%g mode=%s",
        __version__,
        base_name,
        rt.queue.name,
        redact_url(rt.redis_url),
        rt.database,
        rt.keys.shards,
        rt.settings.batch_size,
        rt.settings.claim_flows,
        rt.settings.lease_ttl_ms,
        rt.settings.sweep_slice_seconds,
        "fork" if fork else "simple",
    )
    try:
        return _work_until_stopped(rt, base_name, burst=burst, fork=fork)
    finally:
        periodic.stop()


def _work_until_stopped(rt: Runtime, base_name: str, *, burst: bool, fork: bool) -> bool:
    pause = RECONNECT_INITIAL_SECONDS
    attempt = 0
    worked = False
    while True:
        worker_class: type[BaseWorker] = Worker if fork else ChemWorker
        worker: BaseWorker | None = None
        started = time.monotonic()
        try:
            # Building the rq worker talks to Redis too (CLIENT SETNAME): inside the try.
            worker = worker_class(
                [rt.queue],
                connection=rt.redis,
                serializer=JSONSerializer,
                job_class=SweepJob,
                name=base_name if attempt == 0 else f"{base_name}-{attempt}",
            )
            if isinstance(worker, ChemWorker):
                worker.stopping = rt.stopping
            worked = bool(worker.work(burst=burst, logging_level="WARNING", with_scheduler=False))
        except REDIS_ERRORS as exc:
            if burst:
                raise  # a one-shot run that could not reach Redis has failed
            log.warning("action=worker_redis_error error=%s", type(exc).__name__)
        if burst or rt.stopping.is_set() or getattr(worker, "_stop_requested", False):
            return worked
        # rq's loop ended on its own (a Redis error it does not survive): wait, then listen again.
        if time.monotonic() - started > RECONNECT_MAX_SECONDS:
            pause = RECONNECT_INITIAL_SECONDS
        log.warning("action=worker_restart in_seconds=%.1f", pause)
        if rt.stopping.wait(pause):
            return worked
        pause = min(pause * 2, RECONNECT_MAX_SECONDS)
        attempt += 1


def _first_check(recovery: Recovery, burst: bool) -> None:
    try:
        recovery.check()
    except REDIS_ERRORS as exc:
        if burst:
            raise  # a one-shot run fails fast, naming REDIS_URL, instead of retrying
        log.warning("action=recovery_failed error=%s (retried periodically)", type(exc).__name__)
