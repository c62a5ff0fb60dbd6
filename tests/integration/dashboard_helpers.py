"""The scene of the dashboard's tests: real workers, a busy one among them, a failed sweep job,
a parked flow, and the real ``chem-persistence dashboard`` process in front of them.

- The *busy* worker is the lab's worker paused inside its transaction (``--pause-at
  before_commit``) on a flow of its own, the *decoy*: it stays busy (its current job is that
  sweep) for the whole module. It listens on the same rq queue but uses a key prefix of its own
  (and a long lease), so its paused sweep, which counts as alive until its lease ends, never
  holds back the sweeps of the scene's flows, and nothing of it moves meanwhile.
- The *normal* worker runs everything else: it fails a sweep job of a shard that does not exist
  and parks flow P, emitted at positions 0, 1, 3, 4 (a gap at 2: SeqGap, 4 queued behind).

The dashboard runs as an operator runs it, with basic auth, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Worker
from rq.registry import FailedJobRegistry

from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import SWEEP_FUNCTION, SWEEP_JOB_TIMEOUT_SECONDS
from chem_persistence.producer.producer import Producer
from lab.ports import free_port
from tests.integration.queue_helpers import (
    REPO_ROOT,
    ExampleFlow,
    QueueEnv,
    WorkerProcesses,
    describe,
    random_flows,
    stored_counts,
    wait_until,
)

USERNAME = "operator"
PASSWORD = "dash-s3cret"
AUTH = (USERNAME, PASSWORD)
START_TIMEOUT_S = 60.0
#: Not a shard of CHEM_SHARDS=1: the sweep raises on it, so the job really fails in the worker.
BAD_SHARD = 99
#: The busy worker's lease on the decoy outlives the module: nothing reaps it meanwhile.
BUSY_LEASE_MS = 900_000
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]  # names in lower case

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, auth: tuple[str, str] | None = None, timeout: float = 10.0) -> Reply:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(
                response.status,
                response.read(),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})


@dataclass
class Dashboard:
    proc: subprocess.Popen[bytes]
    log: Path
    base_url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the dashboard ignored {sig}:\n{self.output()}") from None


def start_dashboard(
    env: QueueEnv, log: Path, *args: str, port: int | None = None, **overrides: str
) -> Dashboard:
    """``chem-persistence dashboard --port P ARGS`` with basic auth (unless overridden)."""
    port = free_port() if port is None else port
    variables = env.variables(CHEM_DASHBOARD_USERNAME=USERNAME, CHEM_DASHBOARD_PASSWORD=PASSWORD)
    variables.update(overrides)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chem_persistence.worker.cli",
                "dashboard",
                "--port",
                str(port),
                *args,
            ],
            cwd=REPO_ROOT,
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Dashboard(proc, log, f"http://127.0.0.1:{port}")


def wait_answers(dashboard: Dashboard) -> None:
    def healthy() -> bool:
        if dashboard.proc.poll() is not None:
            raise AssertionError(
                f"the dashboard exited with {dashboard.proc.returncode}:\n{dashboard.output()}"
            )
        try:
            return get(dashboard.base_url + "/healthz", timeout=2).status == 200
        except OSError:
            return False

    wait_until(healthy, START_TIMEOUT_S, "the dashboard to answer", details=dashboard.output)


@dataclass(frozen=True)
class Scene:
    env: QueueEnv
    workers: WorkerProcesses
    dashboard: Dashboard
    busy_worker: str
    normal_worker: str
    failed_job: str
    decoy: ExampleFlow
    parked: ExampleFlow  # positions 0, 1, 3, 4 emitted; 2 is missing

    @property
    def base_url(self) -> str:
        return self.dashboard.base_url

    @property
    def parked_id(self) -> str:
        return str(self.parked.flow_id)

    def details(self) -> str:
        client = redis.Redis.from_url(self.env.redis_url)
        try:
            state = describe(client, self.env.keys)
        finally:
            client.close()
        return f"{state}\n{self.workers.output()}\n--- dashboard ---\n{self.dashboard.output()}"


@contextmanager
def dashboard_scene(env: QueueEnv, tmp_path: Path) -> Iterator[Scene]:
    client = redis.Redis.from_url(env.redis_url)
    queue = env.queue(client)
    workers = WorkerProcesses(env, tmp_path)
    dashboard: Dashboard | None = None
    run = env.queue_name[-6:]
    busy, normal = f"busy-{run}", f"normal-{run}"
    decoy, parked = random_flows(seed=1313, count=2, min_len=5, max_len=5)
    try:
        producer = env.producer(client)
        busy_prefix = f"{env.key_prefix}-busy"
        pause_file = tmp_path / "paused"
        workers.start_faulty(
            "--pause-at",
            "before_commit",
            "--pause-file",
            str(pause_file),
            "--name",
            busy,
            CHEM_LEASE_TTL_MS=BUSY_LEASE_MS,
            CHEM_KEY_PREFIX=busy_prefix,
        )
        busy_settings = QueueSettings(env.redis_url, env.queue_name, busy_prefix)
        Producer(client, busy_settings).emit_many(decoy.items[:3])
        wait_until(
            pause_file.exists, START_TIMEOUT_S, "the busy worker to pause", details=workers.output
        )

        workers.start("--name", normal)
        job = queue.enqueue_call(
            SWEEP_FUNCTION,
            args=(BAD_SHARD,),
            timeout=SWEEP_JOB_TIMEOUT_SECONDS,
            description=f"sweep of shard {BAD_SHARD}: starting",  # as enqueue_sweep sets it
        )
        failed_job = str(job.id)
        failed = FailedJobRegistry(queue=queue)
        wait_until(
            lambda: failed_job in failed,
            START_TIMEOUT_S,
            "the bad sweep job to fail",
            details=workers.output,
        )

        flow = str(parked.flow_id)
        shard = env.keys.for_flow(flow)
        producer.emit_many(parked.items[:2])
        producer.emit_many([parked.items[3], parked.items[4]])  # position 2 missing: a gap
        wait_until(
            lambda: (
                client.exists(shard.reason(flow))
                and stored_counts(env.database_url, [parked.flow_id]).get(parked.flow_id) == 2
            ),
            START_TIMEOUT_S,
            "flow P to park",
            details=workers.output,
        )
        wait_until(
            lambda: {busy, normal} <= {w.name for w in Worker.all(queue=queue)},
            START_TIMEOUT_S,
            "both workers registered",
            details=workers.output,
        )

        dashboard = start_dashboard(env, tmp_path / "dashboard.log")
        wait_answers(dashboard)
        yield Scene(env, workers, dashboard, busy, normal, failed_job, decoy, parked)
    finally:
        if dashboard is not None:
            dashboard.stop()
        workers.stop_all()
        client.close()
