"""rq-dashboard, run as the Procfile runs it (--json, basic auth): our queue, worker, failures."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Worker
from rq.registry import FailedJobRegistry

from chem_persistence.producer.jobs import SWEEP_FUNCTION, SWEEP_JOB_TIMEOUT_SECONDS, ingest_queue
from lab.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = Path(sys.executable).with_name("rq-dashboard")
USERNAME = "operator"
PASSWORD = "dash-s3cret"
START_TIMEOUT_S = 30.0
#: Not a shard of CHEM_SHARDS=1: the sweep raises on it, so the job really fails in the worker.
BAD_SHARD = 99


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {START_TIMEOUT_S}s:\n{log.read_text()}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Scene:
    queue: str
    worker: str
    failed_job: str
    base_url: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, auth: tuple[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read(), dict(error.headers))


@pytest.fixture(scope="module")
def scene(
    database_url: str, redis_url: str, key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    """A live sweep worker on a queue of our own, a sweep job it failed, and the dashboard.

    Module-scoped (starting both processes takes a second or two); the tests only read.
    """
    run = uuid.uuid4().hex[:8]
    queue_name = f"{key_prefix}-dash-{run}"
    worker_name = f"dash-worker-{run}"
    client = redis.Redis.from_url(redis_url)
    queue = ingest_queue(client, queue_name)
    tmp_path = tmp_path_factory.mktemp("dashboard")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHEM_QUEUE": queue_name,
        "CHEM_KEY_PREFIX": f"{key_prefix}-dash-{run}",
    }
    worker_log = tmp_path / "worker.log"
    dashboard_log = tmp_path / "dashboard.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with worker_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "chem_persistence.worker.cli",
                        "worker",
                        "--name",
                        worker_name,
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        job = queue.enqueue_call(
            SWEEP_FUNCTION,
            args=(BAD_SHARD,),
            timeout=SWEEP_JOB_TIMEOUT_SECONDS,
            description=f"sweep of shard {BAD_SHARD}: starting",  # as enqueue_sweep sets it
        )
        job_id = str(job.id)
        failed = FailedJobRegistry(queue=queue)
        wait_until("the sweep job failed", lambda: job_id in failed, procs[0], worker_log)
        wait_until(
            "the worker registered",
            lambda: worker_name in {w.name for w in Worker.all(queue=queue)},
            procs[0],
            worker_log,
        )

        port = free_port()
        with dashboard_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(DASHBOARD),
                        "--json",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--redis-url",
                        redis_url,
                        "--username",
                        USERNAME,
                        "--password",
                        PASSWORD,
                    ],
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        base_url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                get(base_url + "/")
                return True
            except OSError:
                return False

        wait_until("the dashboard answers", answers, procs[1], dashboard_log)
        yield Scene(queue_name, worker_name, job_id, base_url)
    finally:
        for proc in reversed(procs):
            stop(proc)
        client.close()


AUTH = (USERNAME, PASSWORD)


@pytest.mark.parametrize(
    "path", ["/", "/0/data/queues.json", "/0/data/workers.json", "/0/view/workers"]
)
@pytest.mark.parametrize("auth", [None, (USERNAME, "wrong"), ("intruder", PASSWORD)])
def test_without_the_right_credentials_the_dashboard_answers_401(
    scene: Scene, path: str, auth: tuple[str, str] | None
) -> None:
    reply = get(scene.base_url + path, auth)
    assert reply.status == 401
    assert reply.headers.get("WWW-Authenticate", "").startswith("Basic")
    assert scene.queue.encode() not in reply.body


def test_with_credentials_the_dashboard_shows_queue_worker_and_failed_job(scene: Scene) -> None:
    root = get(scene.base_url + "/", AUTH)
    assert root.status == 200
    assert root.headers["Content-Type"].startswith("text/html")
    assert b"RQ Dashboard" in root.body or b"rq-dashboard" in root.body.lower()

    queues = get(scene.base_url + "/0/data/queues.json", AUTH)
    assert queues.status == 200
    ours = [q for q in queues.json()["queues"] if q["name"] == scene.queue]
    assert len(ours) == 1, queues.json()
    assert ours[0]["failed_job_registry_count"] == 1
    assert ours[0]["count"] == 0  # nothing left waiting

    workers = get(scene.base_url + "/0/data/workers.json", AUTH)
    assert workers.status == 200
    listed = {w["name"]: w for w in workers.json()["workers"]}
    assert scene.worker in listed, workers.json()
    assert listed[scene.worker]["queues"] == [scene.queue]
    assert listed[scene.worker]["failed_job_count"] == 1

    failed = get(scene.base_url + f"/0/data/jobs/{scene.queue}/failed/8/asc/1.json", AUTH)
    assert failed.status == 200
    jobs = failed.json()["jobs"]
    assert [j["id"] for j in jobs] == [scene.failed_job]
    assert jobs[0]["description"] == f"sweep of shard {BAD_SHARD}: starting"
    assert "ValueError" in jobs[0]["exc_info"]  # the reason, as the worker recorded it
    assert f"shard: {BAD_SHARD} is not a shard" in jobs[0]["exc_info"]

    job = get(scene.base_url + f"/0/data/job/{scene.failed_job}.json", AUTH)
    assert job.status == 200
    assert job.json()["status"] == "failed"
    assert job.json()["origin"] == scene.queue
