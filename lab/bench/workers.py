"""The bench's worker processes: a fork server, sets of drain / naive rq workers, and their
entry points (the commit recorder of the latency runs, the naive rq job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from domain.events import (
    Artifact,
    FlowEvent,
)
from eventlog.config import DatabaseSettings
from eventlog.pool import open_pool
from eventlog.store import PgEventStore
from lab.bench.config import (
    COMMIT_LOG_ENV,
    WORKER_START_TIMEOUT_SECONDS,
    WORKER_STOP_SECONDS,
    BenchError,
)
from lab.bench.measure import proc_status_kib
from lab.bench.servers import BenchEnv
from producer.config import QueueSettings
from producer.wire import decode_envelope

# --- worker processes -------------------------------------------------------------------------

_FORKSERVER = (
    "import sys; from lab.bench.workers import forkserver_main; sys.exit(forkserver_main())"
)


def process_alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class ForkServer:
    """Starts the bench's worker processes by forking one process that imported the worker
    code once: a fresh interpreter costs ~0.8 s of imports per worker, and (d) starts 21.
    Each worker is still the real thing (``run_worker`` in its own process, configured by its
    own environment); nothing is connected before the fork."""

    def __init__(self, log_path: Path) -> None:
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORKSERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.children: set[int] = set()

    def spawn(self, role: str, name: str, env: Mapping[str, str]) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        spec = {"role": role, "name": name, "env": dict(env)}
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the worker fork server exited; see {self.log.name}")
        pid = int(line)
        self.children.add(pid)
        return pid

    def close(self) -> None:
        for pid in self.children:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def forkserver_main() -> int:
    """The fork server: import the worker code, then fork one worker per line of stdin
    (``{"role", "name", "env"}``), answering with its pid; reap them as they exit."""
    import traceback

    import worker.runtime
    import worker.service  # noqa: F401  (imported once, here, for every child)

    def reap(signum: int, frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if status:
                sys.stderr.write(f"bench worker {pid} exited with status {status}\n")

    signal.signal(signal.SIGCHLD, reap)
    for line in sys.stdin:
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.environ.clear()
                os.environ.update(spec["env"])
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(2, 1)  # the worker log
                code = subprocess_main([f"{spec['role']}-worker", spec["name"]])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
    return 0


class WorkerSet:
    """``count`` worker processes on one rq queue; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self,
        env: BenchEnv,
        forks: ForkServer,
        redis: Redis,
        queue_name: str,
        count: int,
        role: str,
        extra_env: Mapping[str, str],
        commit_logs: bool = False,
        tag: str = "",
    ) -> None:
        self.env, self.forks, self.redis, self.queue_name = env, forks, redis, queue_name
        self.tag = tag
        self.count, self.role = count, role
        self.extra_env = dict(extra_env)
        self.commit_logs: list[Path] = []
        self.procs: list[int] = []
        self._want_commit_logs = commit_logs

    def __enter__(self) -> WorkerSet:
        try:
            for i in range(self.count):
                name = f"bench-{self.env.run_id}-{self.role}{self.tag}-{i}"
                extra = dict(self.extra_env)
                if self._want_commit_logs:
                    path = self.env.scratch / f"commits-{name}.log"
                    path.unlink(missing_ok=True)
                    self.commit_logs.append(path)
                    extra[COMMIT_LOG_ENV] = str(path)
                self.procs.append(self.forks.spawn(self.role, name, self.env.worker_env(**extra)))
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
            time.sleep(0.01)

    def check_alive(self) -> None:
        dead = [pid for pid in self.procs if not process_alive(pid)]
        if dead:
            raise BenchError(
                f"{len(dead)} worker process(es) exited (pid {dead[0]}); see {self.env.worker_log}"
            )

    def peak_rss_kib(self) -> int | None:
        values = [proc_status_kib(pid, "VmHWM") for pid in self.procs]
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def pids(self) -> list[int]:
        return list(self.procs)

    def rss_kib(self) -> list[int | None]:
        return [proc_status_kib(pid, "VmRSS") for pid in self.procs]

    def __exit__(self, *exc: object) -> None:
        for pid in self.procs:
            if process_alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        while any(process_alive(pid) for pid in self.procs) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in self.procs:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def subprocess_main(argv: Sequence[str]) -> int:
    """Entry of the bench's worker processes: ``pipeline-worker NAME`` | ``naive-worker NAME``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    role, name = argv[0], argv[1]
    if role in ("pipeline-worker", "soak-worker"):
        return _pipeline_worker(name)
    if role == "naive-worker":
        return _naive_worker(name)
    raise SystemExit(f"unknown bench subprocess role {role!r}")


class CommitRecorder:
    """Wraps the drain's store: after each append_batch returns (COMMIT done), one line
    ``flow first last unix_time`` (line-buffered: readable while the worker runs)."""

    def __init__(self, store: Any, log: IO[str]) -> None:
        self.store, self.log = store, log

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> list[FlowEvent]:
        stored: list[FlowEvent] = self.store.append_batch(flow_id, events, artifacts)
        self.log.write(f"{flow_id} {events[0].seq} {events[-1].seq} {time.time():.6f}\n")
        return stored


def _pipeline_worker(name: str) -> int:
    from worker.runtime import runtime
    from worker.service import run_worker

    path = os.environ.get(COMMIT_LOG_ENV)
    log = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115
    try:
        if log is not None:
            drainer = runtime().drainer
            drainer.store = CommitRecorder(drainer.store, log)
        run_worker(name=name)
    finally:
        if log is not None:
            log.close()
    return 0


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


NAIVE_FUNCTION = "lab.bench.workers.naive_append"
NOOP_FUNCTION = "builtins.len"  # rq's own per-job cost, nothing else


def _naive_worker(name: str) -> int:
    settings = QueueSettings.from_env()
    redis = Redis.from_url(settings.redis_url)
    _naive_store_get()  # the pool is open before the first job, as for the drain workers
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=redis, serializer=JSONSerializer, name=name)
    worker.work(burst=False, logging_level="WARNING", with_scheduler=False)
    return 0
