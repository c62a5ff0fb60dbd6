"""Prometheus metrics of a real `chem-persistence worker` process, scraped over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.examples import example_flow
from chem_persistence.producer import Producer, QueuedEventStore, QueueSettings
from lab.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "metrics-s3cret-pw"
START_TIMEOUT_S = 30.0
WAIT_TIMEOUT_S = 20.0
BATCH_SIZE = 5  # one of the bounds of chem_batch_size_events' buckets
WORK_CYCLES = 'chem_sweep_cycles_total{outcome="work"}'
#: One sample line of the text exposition format: name, optional labels, value.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` for every sample line of a /metrics page."""
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def wait_for(self, condition: Callable[[dict[str, float]], bool]) -> dict[str, float]:
        """Scrape until ``condition`` holds (gauges settle a moment after the queue empties)."""
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while True:
            self.assert_alive()
            values = samples(self.scrape())
            if condition(values) or time.monotonic() > deadline:
                return values
            time.sleep(0.05)

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log.read_text()}")


@pytest.fixture
def settings(redis_url: str, redis_conn: redis.Redis, key_prefix: str) -> QueueSettings:
    run = uuid.uuid4().hex[:8]
    return QueueSettings(redis_url, f"{key_prefix}-metrics-{run}", f"{key_prefix}-metrics-{run}")


@pytest.fixture
def worker(database_url: str, settings: QueueSettings, tmp_path: Path) -> Iterator[WorkerProcess]:
    port = free_port()
    env = {
        **os.environ,
        # trust authentication ignores the password; the worker must never show it
        "DATABASE_URL": with_password(database_url, SECRET),
        "REDIS_URL": settings.redis_url,
        "CHEM_QUEUE": settings.queue_name,
        "CHEM_KEY_PREFIX": settings.key_prefix,
        "CHEM_BATCH_SIZE": str(BATCH_SIZE),  # several transactions for the flows' events
        "CHEM_METRICS_PORT": str(port),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chem_persistence.worker.cli",
                "worker",
                "--name",
                f"metrics-{uuid.uuid4().hex}",
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = WorkerProcess(proc, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            running.assert_alive()
            try:
                running.scrape()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no /metrics on port {port}:\n{log.read_text()}")
                time.sleep(0.05)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert SECRET not in log.read_text()


def test_worker_metrics_count_every_event_and_the_parked_flow(
    worker: WorkerProcess, settings: QueueSettings
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    producer = Producer(client, settings)
    queued = QueuedEventStore(producer)
    engine = FlowEngine(queued)
    flows = [uuid.uuid4() for _ in range(4)]
    for seed, flow_id in enumerate(flows, start=1):
        engine.run(flow_id, example_flow(seed))
    for flow_id in flows:
        queued.wait_durable(flow_id, timeout=WAIT_TIMEOUT_S)
    events = sum(len(queued.list(f)) for f in flows)
    assert events > 2 * BATCH_SIZE  # more events than one transaction takes

    def settled(v: dict[str, float]) -> bool:
        """Redis idle, and the last cycle's histograms observed (just after its ack)."""
        return (
            v.get("chem_ready_flows") == 0
            and v.get("chem_leased_flows") == 0
            and v.get("chem_batch_size_events_sum") == events
            and v.get("chem_cycle_seconds_count")
            == v.get('chem_sweep_cycles_total{outcome="work"}')
        )

    values = worker.wait_for(settled)
    assert values["chem_events_appended_total"] == events
    assert values["chem_emit_to_durable_seconds_count"] == events
    transactions = values["chem_batch_size_events_count"]
    assert transactions >= -(-events // BATCH_SIZE)
    assert values["chem_batch_size_events_sum"] == events
    assert (
        values[f'chem_batch_size_events_bucket{{le="{BATCH_SIZE}.0"}}'] == transactions
    )  # never more than CHEM_BATCH_SIZE events per transaction, whatever the flows
    assert values["chem_cycle_seconds_count"] == transactions
    assert values[WORK_CYCLES] == transactions
    assert values["chem_claimed_flows_count"] == transactions
    assert values["chem_claimed_flows_sum"] >= len(flows)  # every flow was claimed
    assert values.get('chem_sweep_cycles_total{outcome="trouble"}', 0) == 0
    assert values["chem_leases_reaped_total"] == 0  # no sweep died: no lease expired
    assert values["chem_backlog_events"] == 0
    assert values["chem_ready_flows"] == 0
    assert values["chem_leased_flows"] == 0
    assert values["chem_parked_flows"] == 0
    assert values.get('chem_dead_letters_total{reason="InvalidEvent"}', 0) == 0
    assert "chem_sweeps" in values  # sweeps queued or running (lingering or ended)
    assert "chem_drains_total" not in worker.scrape()  # v1's counter is gone

    # Park a flow: an entry that is not an envelope, pushed with the emit script like any event.
    poisoned = str(uuid.uuid4())
    producer.send(poisoned, ["not an envelope"])

    # The parked gauge is read from Redis at scrape time; the counter is bumped just before the
    # ack script runs: wait for both, or the scrape can fall between the two.
    dead = 'chem_dead_letters_total{reason="InvalidEvent"}'
    values = worker.wait_for(lambda v: v.get("chem_parked_flows") == 1 and v.get(dead) == 1)
    assert values["chem_parked_flows"] == 1
    assert values['chem_dead_letters_total{reason="InvalidEvent"}'] == 1
    assert values["chem_ready_flows"] == 0
    assert values["chem_leased_flows"] == 0
    assert values["chem_backlog_events"] == 0  # the poison moved to the dead letters
    assert values["chem_events_appended_total"] == events  # nothing else was stored

    # A parked flow's later events wait, and count as backlog.
    producer.send(poisoned, ["{}", "{}"])
    values = worker.wait_for(lambda v: v.get("chem_backlog_events") == 2)
    assert values["chem_backlog_events"] == 2
    assert values["chem_parked_flows"] == 1
    assert values["chem_ready_flows"] == 0  # parked: not claimable
    assert SECRET not in worker.scrape()
    client.close()


def test_metrics_never_show_the_database_url_or_password(
    worker: WorkerProcess, database_url: str
) -> None:
    text = worker.scrape()
    assert "chem_backlog_events" in text  # the project's metrics are on this page
    assert SECRET not in text
    assert urlsplit(database_url).path.lstrip("/") not in text  # nor the database name
    assert "postgresql://" not in text
