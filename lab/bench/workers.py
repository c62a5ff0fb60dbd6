"""The bench's worker processes: the real worker (``python -m lab.faulty_worker --commit-log
PATH --name NAME``, no fault enabled: only its commit recorder) and the naive one-job-per-event
rq worker kept as a reference."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import open_pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.wire import decode_envelope
from lab.bench.config import WORKER_START_TIMEOUT_SECONDS, WORKER_STOP_SECONDS, BenchError
from lab.bench.measure import proc_status_kib
from lab.bench.servers import BenchEnv


def process_alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class WorkerSet:
    """``count`` worker processes on one rq queue; stopped (SIGTERM, then SIGKILL) on exit.

    role ``pipeline``: the production worker through the lab's entry, each with a commit log
    (one line per flow per COMMIT: ``flow first last unix_time``). role ``naive``: one
    SimpleWorker running ``naive_append`` jobs.
    """

    def __init__(
        self,
        env: BenchEnv,
        redis: Redis,
        count: int,
        role: str,
        tag: str = "",
        linger_seconds: float | None = None,
    ) -> None:
        self.env, self.redis, self.count, self.role, self.tag = env, redis, count, role, tag
        self.queue_name = env.queue_name if role == "pipeline" else env.naive_queue_name
        self.extra_env: dict[str, str] = {}
        if linger_seconds is not None:
            self.extra_env["CHEM_SWEEP_LINGER_SECONDS"] = f"{linger_seconds:g}"
        self.commit_logs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] | None = None
        self.transactions = 0  # in the commit logs, as of the last ``commits()``

    def __enter__(self) -> WorkerSet:
        self._log = self.env.worker_log.open("ab")
        try:
            for i in range(self.count):
                name = f"bench-{self.env.run_id}-{self.role}{self.tag}-{i}"
                env = self.env.worker_env(CHEM_QUEUE=self.queue_name, **self.extra_env)
                if self.role == "pipeline":
                    path = self.env.scratch / f"commits-{name}.log"
                    path.write_text("")
                    self.commit_logs.append(path)
                    argv = ["-m", "lab.faulty_worker", "--commit-log", str(path)]
                    argv += ["--name", name]  # the entry adds the `worker` command
                else:
                    argv = ["-c", _NAIVE_MAIN, name]
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, *argv],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=self._log,
                        stderr=self._log,
                    )
                )
            self._wait_registered()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_registered(self) -> None:
        queue = Queue(self.queue_name, connection=self.redis, serializer=JSONSerializer)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        while Worker.count(queue=queue) < self.count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"workers did not register within {WORKER_START_TIMEOUT_SECONDS}s")
            time.sleep(0.02)

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.poll() is not None]
        if dead:
            raise BenchError(
                f"{len(dead)} bench worker process(es) exited (pid {dead[0].pid}, status"
                f" {dead[0].returncode}); see {self.env.worker_log}"
            )

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def peak_rss_kib(self) -> int | None:
        known = [v for v in (proc_status_kib(p, "VmHWM") for p in self.pids()) if v is not None]
        return max(known) if known else None

    def rss_kib(self) -> list[int | None]:
        return [proc_status_kib(pid, "VmRSS") for pid in self.pids()]

    def clear_commit_logs(self) -> None:
        for path in self.commit_logs:
            path.write_text("")  # the workers append (O_APPEND): their next line lands at 0

    def commits(self) -> dict[tuple[str, int], float]:
        """(flow, position) -> the first COMMIT time logged for it. Also counts the
        transactions (``transactions``: one recorder call per COMMIT, one time stamp)."""
        committed: dict[tuple[str, int], float] = {}
        stamps: set[tuple[int, float]] = set()
        for number, path in enumerate(self.commit_logs):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 4:
                    continue  # a line being written
                flow, first, last, at = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
                stamps.add((number, at))
                for position in range(first, last + 1):
                    key = (flow, position)
                    if key not in committed or committed[key] > at:
                        committed[key] = at
        self.transactions = len(stamps)
        return committed

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()


# --- the naive rq reference: one job per event ----------------------------------------------

_NAIVE_MAIN = "import sys; from lab.bench.workers import naive_main; sys.exit(naive_main(sys.argv))"
NAIVE_FUNCTION = "lab.bench.workers.naive_append"
_naive_store: PgEventStore | None = None


def _naive_store_get() -> PgEventStore:
    global _naive_store
    if _naive_store is None:
        _naive_store = PgEventStore(open_pool(DatabaseSettings.from_env(), migrate=False))
    return _naive_store


def naive_append(envelope: str) -> None:
    """(c)'s rq job: store one event (its own transaction)."""
    event, bodies = decode_envelope(envelope)
    _naive_store_get().append_batch(event.flow_id, [event], bodies)


def naive_main(argv: Sequence[str]) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    settings = QueueSettings.from_env()
    redis = Redis.from_url(settings.redis_url)
    _naive_store_get()  # the pool is open before the first job
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=redis, serializer=JSONSerializer, name=argv[1])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    worker.work(burst=False, logging_level="WARNING", with_scheduler=False)
    return 0
