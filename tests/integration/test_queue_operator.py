"""A poison event on the real pipeline, and the operator's way out with the real command.

Flow P is emitted at positions 0, 1, then 3, 4: position 3 leaves a gap. It is dead-lettered,
P is parked with 4 waiting untouched, other flows go on. The missing event 2 is emitted late
(it queues behind 4, the flow being parked), and ``chem-persistence dlq retry P`` puts the
dead letter back in position order: 2 first, then 3, then 4. This is the README's recovery for
a SeqGap, run with the commands as the README writes them (tests/readme.py), as is its discard.
"""

from __future__ import annotations

import json

import pytest
import redis

from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.wire import encode_envelope
from tests import readme
from tests.integration.queue_helpers import (
    ExampleFlow,
    QueueEnv,
    WorkerProcesses,
    all_stored,
    assert_flows_stored,
    describe,
    emit_flows,
    queue_idle,
    random_flows,
    run_cli,
    status_json,
    wait_until,
)

TIMEOUT_SECONDS = 30.0


def test_poison_parks_the_flow_until_the_operator_retries(
    env: QueueEnv,
    workers: WorkerProcesses,
    redis_conn: redis.Redis,
    store: PgEventStore,
    database_url: str,
) -> None:
    [poisoned] = random_flows(seed=21, count=1, min_len=5, max_len=5)
    others = random_flows(seed=22, count=6, min_len=2, max_len=10)
    flow = str(poisoned.flow_id)
    producer = env.producer(redis_conn)
    workers.start(CHEM_BATCH_SIZE=10)

    items = poisoned.items
    producer.emit_many(items[:2])
    emit_flows(producer, others[:3])
    producer.emit_many([items[3], items[4]])  # position 2 never emitted: a gap
    emit_flows(producer, others[3:])

    shard = env.keys.for_flow(flow)
    # dead-lettered and parked; the event after it waits, untouched; other flows unaffected
    wait_until(
        lambda: redis_conn.exists(shard.reason(flow)) and all_stored(database_url, others),
        TIMEOUT_SECONDS,
        "the flow to park and the others to drain",
        details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
    )
    assert_flows_stored(store, others)
    assert store.list(poisoned.flow_id) == poisoned.events[:2]
    entry_4 = encode_envelope(*items[4]).encode()
    assert redis_conn.lrange(shard.queue(flow), 0, -1) == [entry_4]
    assert redis_conn.zscore(shard.parked, flow) is not None
    assert redis_conn.zscore(shard.ready, flow) is None
    assert redis_conn.zscore(shard.leased, flow) is None

    # the operator's view
    status = status_json(env, healthy=False)  # a parked flow needs an operator: exit 1
    assert status["problems"] and "parked" in status["problems"][0]
    [parked] = status["parked_flows"]
    assert (parked["flow_id"], parked["dead_letters"], parked["queued"]) == (flow, 1, 1)
    assert parked["reason"].startswith("SeqGap at position 3")
    assert parked["generation"] == 1
    assert status["dead_letters_total"] == 1
    assert status["flows"] == []  # neither ready nor leased

    listed = run_cli(env, *readme.dlq_command("list", flow))
    assert listed.returncode == 0, listed.stderr
    assert flow in listed.stdout and "SeqGap" in listed.stdout

    shown = run_cli(env, *readme.dlq_command("show", flow))
    assert shown.returncode == 0, shown.stderr
    [record] = json.loads(shown.stdout)
    assert (record["reason"], record["position"], record["sqlstate"]) == ("SeqGap", 3, None)
    assert record["entry"] == encode_envelope(*items[3])
    assert flow in record["error"]

    refused = run_cli(env, "dlq", "discard", flow)  # without --yes
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert redis_conn.llen(shard.dead(flow)) == 1  # nothing was discarded
    assert redis_conn.exists(shard.reason(flow))

    # the missing event arrives late: the flow is parked, so it waits behind event 4
    producer.emit(*items[2])
    entry_2 = encode_envelope(*items[2]).encode()
    assert redis_conn.lrange(shard.queue(flow), 0, -1) == [entry_4, entry_2]
    assert redis_conn.zscore(shard.ready, flow) is None  # still parked
    # retry: in position order, the late event 2 first, then the dead letter 3, then 4
    retried = run_cli(env, *readme.dlq_command("retry", flow))
    assert retried.returncode == 0, retried.stderr
    assert "1 dead letter(s) put back" in retried.stdout

    wait_complete(env, redis_conn, workers, [poisoned, *others])
    assert_flows_stored(store, [poisoned, *others])
    after = status_json(env)
    assert after["parked_flows"] == [] and after["dead_letters_total"] == 0
    assert after["flows"] == [] and after["backlog_total"] == 0
    assert run_cli(env, "dlq", "list").stdout.strip() == "no parked flows"


def wait_complete(
    env: QueueEnv, redis_conn: redis.Redis, workers: WorkerProcesses, flows: list[ExampleFlow]
) -> None:
    wait_until(
        lambda: all_stored(env.database_url, flows) and queue_idle(redis_conn, env.keys, flows),
        TIMEOUT_SECONDS,
        "every flow in PostgreSQL and Redis idle",
        details=lambda: describe(redis_conn, env.keys) + "\n" + workers.output(),
    )


def test_discard_with_yes_drops_the_poison_and_resumes(
    env: QueueEnv, workers: WorkerProcesses, redis_conn: redis.Redis, store: PgEventStore
) -> None:
    [flow] = random_flows(seed=23, count=1, min_len=4, max_len=4)
    producer = env.producer(redis_conn)
    producer.emit_many(flow.items[:2])
    producer.send(str(flow.flow_id), ["not an envelope at all"])
    producer.emit_many(flow.items[2:])
    workers.start()
    wait_until(
        lambda: redis_conn.exists(env.keys.for_flow(str(flow.flow_id)).reason(str(flow.flow_id))),
        TIMEOUT_SECONDS,
        "the flow to park",
        details=workers.output,
    )
    shown = json.loads(run_cli(env, "dlq", "show", str(flow.flow_id)).stdout)
    assert [r["reason"] for r in shown] == ["InvalidEvent"]

    discarded = run_cli(env, *readme.dlq_command("discard", str(flow.flow_id)))
    assert discarded.returncode == 0, discarded.stderr
    assert "action=dlq_discard" in discarded.stderr  # the discarded entry is logged in full
    assert "not an envelope at all" in discarded.stderr
    wait_complete(env, redis_conn, workers, [flow])
    assert_flows_stored(store, [flow])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["dlq", "retry"], 2),  # no FLOW
        (["dlq", "show", "not-a-uuid"], 2),
        (["dlq", "retry", "00000000-0000-4000-8000-000000000000"], 1),  # no dead letters
        (["dlq", "show", "00000000-0000-4000-8000-000000000000"], 1),
    ],
)
def test_dlq_command_errors(
    env: QueueEnv, redis_conn: redis.Redis, args: list[str], code: int
) -> None:
    result = run_cli(env, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
