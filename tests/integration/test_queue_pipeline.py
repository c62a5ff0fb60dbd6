"""The queue path end to end on the real servers: producer → Redis → worker processes → PostgreSQL.

What went in through the producer must come out of PostgreSQL identical — per flow, in order,
with its timestamps and artifacts — with nothing missing and nothing twice.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from uuid import UUID

import pytest
import redis
from rq import Queue, SimpleWorker

from domain.engine import FlowEngine
from domain.events import Artifact, FlowEvent
from domain.examples import example_flow
from domain.replay import InMemoryFlowRepository
from eventlog.store import PgEventStore
from producer.jobs import DRAIN_FUNCTION
from producer.queued_store import FlowParked, QueuedEventStore
from producer.scripts import Scripts
from producer.wire import encode_envelope
from tests.integration.queue_helpers import (
    QueueEnv,
    WorkerProcesses,
    all_stored,
    assert_artifacts_stored,
    assert_flows_stored,
    describe,
    emit_flows,
    emit_round_robin,
    jobs_idle,
    queue_idle,
    random_flows,
    wait_until,
)
from worker.config import WorkerSettings
from worker.drain import Drainer, DrainResult

DRAIN_TIMEOUT_SECONDS = 60.0


def test_500_interleaved_flows_drained_by_three_workers(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    flows = random_flows(seed=500, count=500, min_len=1, max_len=30)
    for i in range(3):
        workers.start("--name", f"pipeline-{env.queue_name}-{i}")
    emitted = emit_round_robin(env.producer(redis_conn), flows)
    assert emitted == sum(len(f.items) for f in flows)

    wait_until(
        lambda: all_stored(database_url, flows) and queue_idle(redis_conn, env.keys, flows),
        DRAIN_TIMEOUT_SECONDS,
        "every flow in PostgreSQL and Redis idle",
        interval=0.2,
        details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
    )
    assert [p.poll() for p in workers.procs] == [None] * 3, workers.output()
    assert_flows_stored(store, flows)
    assert_artifacts_stored(store, flows)
    # the drain jobs still queued find nothing to do, and leave no lock behind
    wait_until(lambda: jobs_idle(redis_conn, env), 10, "the workers to go idle")
    assert queue_idle(redis_conn, env.keys, flows)
    assert redis_conn.zcard(env.keys.parked_index) == 0
    assert env.queue(redis_conn).failed_job_registry.count == 0


@pytest.mark.parametrize("mode", [["--fork"], []], ids=["forking-Worker", "SimpleWorker"])
def test_burst_worker_drains_everything_then_exits(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    mode: list[str],
) -> None:
    # the forking Worker builds a pool in every job's child: keep the job count small
    flows = random_flows(seed=7, count=4, min_len=1, max_len=12)
    emit_flows(env.producer(redis_conn), flows)
    assert env.queue(redis_conn).count == len(flows)

    proc = workers.start(*mode, "--burst", CHEM_BATCH_SIZE=4)
    assert proc.wait(timeout=60) == 0, workers.output()
    assert_flows_stored(store, flows)
    assert queue_idle(redis_conn, env.keys, flows)
    assert env.queue(redis_conn).count == 0


# --- the engine's side: QueuedEventStore ------------------------------------------------------


def test_queued_event_store_with_the_engine_and_wait_durable(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    workers.start()
    queued = QueuedEventStore(env.producer(redis_conn))
    engine = FlowEngine(queued)
    runs: dict[UUID, int] = {}
    for seed in (0, 1, 3, 6, 14):  # failing (0, 14), with a policy step (0, 3, 6), plain (1)
        flow_id = uuid.uuid4()
        runs[flow_id] = seed
        engine.run(flow_id, example_flow(seed))
    for flow_id, seed in runs.items():
        queued.wait_durable(flow_id, timeout=30)
        # nothing more to wait for: the barrier's promise is that it is all in PostgreSQL now
        stored = store.list(flow_id)
        assert stored == queued.list(flow_id)
        definition = example_flow(seed)
        assert InMemoryFlowRepository.load(
            flow_id, stored, definition
        ) == InMemoryFlowRepository.load(flow_id, queued.list(flow_id), definition)


def test_wait_durable_raises_flow_parked(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis
) -> None:
    workers.start()
    queued = QueuedEventStore(env.producer(redis_conn))
    engine = FlowEngine(queued)
    flow_id = uuid.uuid4()
    engine.next(flow_id, example_flow(1))
    queued.producer.send(str(flow_id), ["this entry is not an envelope"])
    with pytest.raises(FlowParked) as caught:
        queued.wait_durable(flow_id, timeout=30)
    assert caught.value.flow_id == flow_id
    assert "InvalidEvent" in caught.value.reason
    assert str(flow_id) in str(caught.value)


def test_wait_durable_times_out_when_no_worker_runs(env: QueueEnv, redis_conn: redis.Redis) -> None:
    queued = QueuedEventStore(env.producer(redis_conn))
    flow_id = uuid.uuid4()
    FlowEngine(queued).next(flow_id, example_flow(2))
    with pytest.raises(TimeoutError, match=str(flow_id)):
        queued.wait_durable(flow_id, timeout=0.3)


# --- two drains racing for one flow -----------------------------------------------------------


@dataclass
class GatedStore:
    """PgEventStore whose appends wait until the test opens the gate."""

    inner: PgEventStore
    gate: threading.Event
    entered: threading.Event

    def append_batch(
        self,
        flow_id: UUID,
        events: Sequence[FlowEvent],
        artifacts: Mapping[str, Artifact] | None = None,
    ) -> list[FlowEvent]:
        self.entered.set()
        assert self.gate.wait(timeout=10)
        return self.inner.append_batch(flow_id, events, artifacts)


def test_two_drains_racing_for_one_flow(
    env: QueueEnv, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    [flow] = random_flows(seed=99, count=1, min_len=25, max_len=25)
    emit_flows(env.producer(redis_conn), [flow])
    gated = GatedStore(store, threading.Event(), threading.Event())
    drainer = Drainer(
        redis_conn,
        gated,
        env.keys,
        Scripts.register(redis_conn),
        env.queue(redis_conn),
        WorkerSettings(batch_size=4, lock_ttl_ms=30_000),
    )
    results: list[DrainResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def drain() -> None:
        try:
            start.wait(timeout=10)
            results.append(drainer.drain(str(flow.flow_id)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            if results and results[-1].outcome == "busy":
                gated.gate.set()  # the loser is out: let the winner go on

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    gated.gate.set()
    assert not errors, errors
    assert gated.entered.is_set()
    assert sorted(r.outcome for r in results) == ["busy", "drained"]
    assert sum(r.appended for r in results) == len(flow.items)
    assert_flows_stored(store, [flow])
    assert queue_idle(redis_conn, env.keys, [flow])


# --- rq jobs are JSON: a pickled job is refused, never executed ---------------------------------


def test_a_pickled_job_is_refused_not_executed(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    pickled = Queue(env.queue_name, connection=redis_conn)  # rq's default serializer: pickle
    job = pickled.enqueue("os.mkdir", str(marker))
    assert job.get_status() == "queued"

    proc = workers.start("--burst")
    proc.wait(timeout=60)
    assert not marker.exists(), "a pickled job was executed"
    assert pickled.count == 0  # taken off the queue, and failed
    assert job.id in pickled.failed_job_registry.get_job_ids()

    # the control: the same pickled job does run under a pickle worker
    control = Queue(f"{env.queue_name}-control", connection=redis_conn)
    control.enqueue("os.mkdir", str(marker))
    SimpleWorker([control], connection=redis_conn).work(burst=True)
    assert marker.is_dir()


def test_drain_jobs_are_json_serialized(env: QueueEnv, redis_conn: redis.Redis) -> None:
    [flow] = random_flows(seed=3, count=1, min_len=2, max_len=2)
    emit_flows(env.producer(redis_conn), [flow])
    [job_id] = env.queue(redis_conn).get_job_ids()
    data = cast(bytes, redis_conn.hget(f"rq:job:{job_id}", "data"))
    func, _, args, _ = json.loads(zlib.decompress(data))
    assert (func, args) == (DRAIN_FUNCTION, [str(flow.flow_id)])
    assert encode_envelope(flow.events[0], flow.items[0][1])  # the entries are JSON too
