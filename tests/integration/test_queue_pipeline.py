"""The queue path end to end on the real servers: producer → Redis → sweeps → PostgreSQL.

What went in through the producer must come out of PostgreSQL identical — per flow, in order,
with its timestamps and artifacts — with nothing missing and nothing twice; and the number of
rq jobs stays bounded by the workers, not by the flows or the events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast
from uuid import UUID

import pytest
import redis
from rq import Queue, SimpleWorker

from chem_persistence.domain.batches import FlowBatch, FlowOutcome
from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.events import StepSignal
from chem_persistence.domain.examples import example_flow
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import SWEEP_FUNCTION
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.queued_store import FlowParked, QueuedEventStore
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.config import WorkerSettings
from chem_persistence.worker.sweep import Sweeper
from tests.integration.queue_helpers import (
    REPO_ROOT,
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

DRAIN_TIMEOUT_SECONDS = 60.0


def sweeps_in_flight(redis_conn: redis.Redis, env: QueueEnv) -> int:
    """Sweep jobs queued or running, as rq sees them."""
    queue = env.queue(redis_conn)
    return int(queue.count) + int(queue.started_job_registry.count)


def test_500_interleaved_flows_swept_by_three_workers_with_few_jobs(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    flows = random_flows(seed=500, count=500, min_len=1, max_len=30)
    for i in range(3):
        workers.start("--name", f"pipeline-{env.queue_name}-{i}")
    seen: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        sampler = redis.Redis.from_url(env.redis_url)
        while not sampling.wait(0.02):
            seen.append(sweeps_in_flight(sampler, env))
        sampler.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        emitted = emit_round_robin(env.producer(redis_conn), flows)
        assert emitted == sum(len(f.items) for f in flows)
        wait_until(
            lambda: all_stored(database_url, flows) and queue_idle(redis_conn, env.keys, flows),
            DRAIN_TIMEOUT_SECONDS,
            "every flow in PostgreSQL and Redis idle",
            interval=0.2,
            details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
        )
    finally:
        sampling.set()
        sampler.join()
    assert [p.poll() for p in workers.procs] == [None] * 3, workers.output()
    assert_flows_stored(store, flows)
    assert_artifacts_stored(store, flows)
    assert seen and max(seen) <= 3 + 1, f"sweeps in flight: {sorted(set(seen))}"
    # every sweep job ever made: a handful, for 500 flows and thousands of events
    made = int(redis_conn.get(env.shard.base + "sweep_seq") or 0)
    assert 1 <= made <= 40, made
    wait_until(lambda: jobs_idle(redis_conn, env), 20, "the sweeps to end")
    assert redis_conn.zcard(env.shard.parked) == 0
    assert env.queue(redis_conn).failed_job_registry.count == 0


@pytest.mark.parametrize("mode", [["--fork"], []], ids=["forking-Worker", "SimpleWorker"])
def test_one_job_for_a_backlog_then_a_burst_worker_drains_it_and_exits(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    mode: list[str],
) -> None:
    flows = random_flows(seed=7, count=30, min_len=1, max_len=12)
    emit_flows(env.producer(redis_conn), flows)
    assert env.queue(redis_conn).count == 1  # one sweep for 30 flows, not one job per flow

    proc = workers.start(*mode, "--burst", CHEM_BATCH_SIZE=4)
    assert proc.wait(timeout=60) == 0, workers.output()
    assert_flows_stored(store, flows)
    assert queue_idle(redis_conn, env.keys, flows)
    assert env.queue(redis_conn).count == 0
    assert redis_conn.zcard(env.shard.sweeps) == 0  # the sweep said goodbye


def test_redis_holds_nothing_of_a_flow_once_it_is_drained(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flows = random_flows(seed=8, count=20, min_len=2, max_len=9)
    emit_flows(env.producer(redis_conn), flows)
    workers.start("--burst")
    wait_until(lambda: jobs_idle(redis_conn, env), 60, "the sweep to end", details=workers.output)
    assert_flows_stored(store, flows)
    left = sorted(k.decode() for k in redis_conn.keys(f"{env.key_prefix}:*"))
    assert left == [env.shard.base + "sweep_seq"], left  # the job-id counter only


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


ENGINE_PROCESS = """
import sys, uuid
from redis import Redis
from chem_persistence.domain.events import FlowInitialized, StepSignal
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import open_pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.queued_store import QueuedEventStore

settings = QueueSettings(sys.argv[1], sys.argv[2], sys.argv[3])
durable = PgEventStore(open_pool(DatabaseSettings.from_env(), migrate=False))
store = QueuedEventStore(Producer(Redis.from_url(sys.argv[1]), settings), durable=durable)
flow = uuid.UUID(sys.argv[4])
if not store.list(flow):
    store.append(flow, FlowInitialized("0" * 64, 1))
for i in range(int(sys.argv[5])):
    store.append(flow, StepSignal(0, "acquire", "PROGRESS", {"engine": sys.argv[6], "i": i}))
print(len(store.list(flow)))
"""


def run_engine_process(env: QueueEnv, flow_id: UUID, events: int, name: str) -> int:
    """A separate engine process appends ``events`` events to the flow, then exits."""
    done = subprocess.run(
        [
            *(sys.executable, "-c", ENGINE_PROCESS, env.redis_url, env.queue_name, env.key_prefix),
            *(str(flow_id), str(events), name),
        ],
        cwd=REPO_ROOT,
        env=env.variables(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[-1])


def test_a_restarted_engine_continues_from_postgres_plus_what_is_queued(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flow_id = uuid.uuid4()
    worker = workers.start()
    durable = run_engine_process(env, flow_id, 3, "first")
    wait_until(lambda: len(store.list(flow_id)) == durable, 30, "the first part in PostgreSQL")
    workers.stop(worker)
    emitted = run_engine_process(env, flow_id, 4, "second")  # no worker: this part stays queued
    assert emitted == durable + 4
    queue = env.keys.for_flow(str(flow_id)).queue(str(flow_id))
    assert redis_conn.llen(queue) == 4

    # the third engine (this process) starts fresh and must see both parts, in order
    restarted = QueuedEventStore(env.producer(redis_conn), durable=store)
    assert [e.seq for e in restarted.list(flow_id)] == list(range(emitted))
    restarted.append(flow_id, StepSignal(0, "acquire", "PROGRESS", {"engine": "third"}))
    workers.start()
    restarted.wait_durable(flow_id, timeout=30)  # never parked: no position taken twice
    stored = store.list(flow_id)
    assert [e.seq for e in stored] == list(range(emitted + 1))
    assert stored == restarted.list(flow_id)
    engines = [cast(StepSignal, e.kind).data for e in stored[1:]]
    assert [cast(dict[str, str], d)["engine"] for d in engines] == ["first"] * 3 + [
        "second"
    ] * 4 + ["third"]

    restarted.forget(flow_id)
    assert restarted.memory.list(flow_id) == []  # bounded memory: the finished flow is gone
    assert restarted.list(flow_id) == stored  # and comes back from PostgreSQL when asked


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


# --- two sweeps at once: disjoint claims --------------------------------------------------------


class GatedStore:
    """PgEventStore whose transactions wait until the test opens the gate; records claims."""

    def __init__(self, inner: PgEventStore) -> None:
        self.inner = inner
        self.claims: list[list[UUID]] = []
        self.both_in = threading.Barrier(2)

    def append_flows(
        self, batches: Sequence[FlowBatch], before_commit: Callable[[], None] | None = None
    ) -> list[FlowOutcome]:
        self.claims.append([b.flow_id for b in batches])
        self.both_in.wait(timeout=10)  # both sweeps hold their claims at the same time
        return self.inner.append_flows(batches, before_commit)


def test_two_sweeps_at_once_claim_disjoint_flows(
    env: QueueEnv, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flows = random_flows(seed=99, count=10, min_len=3, max_len=6)
    emit_flows(env.producer(redis_conn), flows)
    gated = GatedStore(store)
    settings = WorkerSettings(batch_size=500, claim_flows=5)
    sweepers = [
        Sweeper(redis_conn, gated, Scripts.register(redis_conn), settings, lambda j, s: None)
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def one_cycle(sweeper: Sweeper, n: int) -> None:
        try:
            sweeper.cycle(env.shard, f"test-sweep-{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one_cycle, args=(s, i)) for i, s in enumerate(sweepers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    first, second = gated.claims
    assert len(first) == len(second) == 5
    assert not set(first) & set(second)  # no flow leased twice
    assert_flows_stored(store, flows)
    assert queue_idle(redis_conn, env.keys, flows)


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


def test_sweep_jobs_are_json_serialized(env: QueueEnv, redis_conn: redis.Redis) -> None:
    [flow] = random_flows(seed=3, count=1, min_len=2, max_len=2)
    emit_flows(env.producer(redis_conn), [flow])
    [job_id] = env.queue(redis_conn).get_job_ids()
    data = cast(bytes, redis_conn.hget(f"rq:job:{job_id}", "data"))
    func, _, args, _ = json.loads(zlib.decompress(data))
    assert (func, args) == (SWEEP_FUNCTION, [0])
    entry = redis_conn.lindex(env.shard.queue(str(flow.flow_id)), 0)
    assert json.loads(cast(bytes, entry))["seq"] == 0  # the entries are JSON too


def test_two_shards_each_swept_in_order(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    flows = random_flows(seed=77, count=40, min_len=2, max_len=10)
    settings = QueueSettings(env.redis_url, env.queue_name, env.key_prefix, shards=2)
    keys = Keys(env.key_prefix, 2)
    shards_used = {keys.shard_of(str(f.flow_id)) for f in flows}
    assert shards_used == {0, 1}  # the flows spread over both shards
    workers.start(CHEM_SHARDS=2)
    emit_round_robin(Producer(redis_conn, settings), flows)
    wait_until(
        lambda: all_stored(env.database_url, flows) and queue_idle(redis_conn, keys, flows),
        DRAIN_TIMEOUT_SECONDS,
        "every flow of both shards stored",
        interval=0.2,
        details=workers.output,
    )
    assert_flows_stored(store, flows)
    assert all(redis_conn.get(keys.shard(s).base + "sweep_seq") for s in (0, 1))
