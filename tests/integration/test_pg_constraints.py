"""The schema's guarantees, checked with raw SQL, and PgEventStore's atomicity on top of them.

Read-only or fresh-flow tests share the session database; tests that try to change or remove
rows (which must fail, but would damage a shared database if the guard were missing) get a
fresh migrated database of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors

from chem_persistence.domain.events import (
    EVENT_TYPES,
    Artifact,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.json_values import JsonValue
from chem_persistence.eventlog.batch import UNKNOWN_ARTIFACT_KIND
from chem_persistence.eventlog.errors import IDEMPOTENCY_CONSTRAINT, ErrorClass, classify
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
FP = "c" * 64
BAD_HASH = "a" * 63
PAYLOAD = '{"StepStarted": {"step_index": 0, "step_id": "s"}}'


def ts(i: int) -> datetime:
    return T0 + timedelta(milliseconds=i)


def ev(flow: UUID, seq: int, kind: FlowEventKind | None = None) -> FlowEvent:
    return FlowEvent(seq, flow, kind if kind is not None else StepStarted(seq, "s"), ts(seq))


@pytest.fixture
def store(pool: Pool) -> PgEventStore:
    return PgEventStore(pool)


def fetch(pool: Pool, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute(statement.encode(), params)
        return cur.fetchall()


def execute(pool: Pool, statement: str, params: tuple[Any, ...] = ()) -> None:
    with pool.connection() as conn:
        conn.execute(statement.encode(), params)


def insert_event(pool: Pool, flow: UUID, flow_seq: int, event_type: str = "stepstarted") -> None:
    execute(
        pool,
        "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)"
        " VALUES (%s, %s, now(), %s, %s::jsonb)",
        (flow, flow_seq, event_type, PAYLOAD),
    )


def insert_artifact(pool: Pool, artifact_hash: str, produced_in_seq: int) -> None:
    execute(
        pool,
        "INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, produced_in_seq)"
        " VALUES (%s, 'k', '{}'::jsonb, %s)",
        (artifact_hash, produced_in_seq),
    )


def event_count(pool: Pool, flow: UUID) -> int:
    return int(fetch(pool, "SELECT count(*) FROM event_log WHERE flow_id = %s", (flow,))[0][0])


def artifact_row(pool: Pool, artifact_hash: str) -> tuple[Any, ...] | None:
    rows = fetch(
        pool,
        "SELECT kind, payload, jsonb_typeof(payload), metadata, produced_in_seq"
        " FROM workflow_step_artifacts WHERE artifact_hash = %s",
        (artifact_hash,),
    )
    return rows[0] if rows else None


# --- positions --------------------------------------------------------------------------------


def test_positions_are_0_to_n_minus_1_and_follow_the_log_order(
    pool: Pool, store: PgEventStore
) -> None:
    flows = [uuid4() for _ in range(3)]
    sizes = {flows[0]: 7, flows[1]: 4, flows[2]: 10}
    for i in range(10):  # interleaved writers: the global seq mixes the flows
        for flow in flows:
            if i < sizes[flow]:
                store.append(flow, StepStarted(i, "s"), ts(i))
    for flow in flows:
        by_log = fetch(
            pool, "SELECT flow_seq, seq FROM event_log WHERE flow_id = %s ORDER BY seq", (flow,)
        )
        by_position = fetch(
            pool,
            "SELECT flow_seq, seq FROM event_log WHERE flow_id = %s ORDER BY flow_seq",
            (flow,),
        )
        assert [row[0] for row in by_log] == list(range(sizes[flow]))
        assert by_log == by_position
        assert [e.log_seq for e in store.list(flow)] == [row[1] for row in by_log]


def test_a_negative_position_is_rejected(pool: Pool) -> None:
    with pytest.raises(errors.CheckViolation) as info:
        insert_event(pool, uuid4(), -1)
    assert info.value.diag.constraint_name == "event_log_flow_seq_check"


def test_a_duplicate_position_hits_the_idempotency_key_and_is_a_conflict(
    pool: Pool, store: PgEventStore
) -> None:
    flow = uuid4()
    store.append(flow, StepStarted(0, "s"), ts(0))
    with pytest.raises(errors.UniqueViolation) as info:
        insert_event(pool, flow, 0)
    assert info.value.sqlstate == "23505"
    assert info.value.diag.constraint_name == IDEMPOTENCY_CONSTRAINT
    assert classify(info.value) is ErrorClass.CONFLICT
    assert event_count(pool, flow) == 1


def test_a_duplicate_artifact_hash_outside_the_store_is_unexpected_never_permanent(
    pool: Pool, store: PgEventStore
) -> None:
    # The store inserts artifacts with ON CONFLICT DO NOTHING: a collision here is not an
    # event's fault, so it must never dead-letter one.
    artifact_hash = Artifact("k", {"dup": str(uuid4())}).hash
    event = store.append(uuid4(), StepFinished(0, "s", (artifact_hash,), FP), ts(0))
    assert event.log_seq is not None
    with pytest.raises(errors.UniqueViolation) as info:
        insert_artifact(pool, artifact_hash, event.log_seq)
    assert info.value.diag.constraint_name == "workflow_step_artifacts_pkey"
    assert classify(info.value) is ErrorClass.UNEXPECTED


# --- event_type -------------------------------------------------------------------------------


TYPE_CHECKS = {"event_log_event_type_known", "event_log_event_type_check"}


@pytest.mark.parametrize("event_type", ["bogus", "stepstarted2", "", "StepStarted", "STEPSIGNAL"])
def test_an_unknown_event_type_is_rejected(pool: Pool, event_type: str) -> None:
    flow = uuid4()
    with pytest.raises(errors.CheckViolation) as info:
        insert_event(pool, flow, 0, event_type)
    # A mixed-case type breaks both checks; PostgreSQL reports one of them.
    assert info.value.diag.constraint_name in TYPE_CHECKS
    assert classify(info.value) is ErrorClass.PERMANENT
    assert event_count(pool, flow) == 0


def test_every_known_event_type_is_accepted(pool: Pool) -> None:
    flow = uuid4()
    for i, event_type in enumerate(EVENT_TYPES):
        insert_event(pool, flow, i, event_type)
    assert event_count(pool, flow) == len(EVENT_TYPES) == 7


# --- artifacts --------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 63, 65])
def test_an_artifact_hash_that_is_not_64_characters_is_rejected(
    pool: Pool, store: PgEventStore, length: int
) -> None:
    event = store.append(uuid4(), StepStarted(0, "s"), ts(0))
    assert event.log_seq is not None
    with pytest.raises(errors.CheckViolation) as info:
        insert_artifact(pool, "b" * length, event.log_seq)
    assert info.value.diag.constraint_name == "workflow_step_artifacts_artifact_hash_check"


def test_an_artifact_must_name_an_existing_producing_event(pool: Pool, store: PgEventStore) -> None:
    artifact_hash = Artifact("k", {"fk": str(uuid4())}).hash
    with pytest.raises(errors.ForeignKeyViolation) as info:
        insert_artifact(pool, artifact_hash, -1)
    assert info.value.diag.constraint_name == "workflow_step_artifacts_produced_in_seq_fkey"
    assert artifact_row(pool, artifact_hash) is None
    # and every artifact the store wrote points at its StepFinished
    event = store.append(uuid4(), StepFinished(0, "s", (artifact_hash,), FP), ts(0))
    row = artifact_row(pool, artifact_hash)
    assert row is not None and row[4] == event.log_seq
    orphans = fetch(
        pool,
        "SELECT count(*) FROM workflow_step_artifacts a"
        " LEFT JOIN event_log e ON e.seq = a.produced_in_seq"
        " WHERE e.seq IS NULL OR e.event_type <> 'stepfinished'",
    )
    assert orphans == [(0,)]


# --- append-only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("UPDATE event_log SET event_type = 'flowcompleted'", "UPDATE"),
        ("UPDATE event_log SET ts = ts + interval '1 second' WHERE flow_seq = 0", "UPDATE"),
        ("DELETE FROM event_log", "DELETE"),
        ("DELETE FROM event_log WHERE flow_seq = 1", "DELETE"),
        # plain TRUNCATE is refused earlier by the foreign key; CASCADE reaches the trigger
        ("TRUNCATE event_log CASCADE", "TRUNCATE"),
        ("TRUNCATE workflow_step_artifacts, event_log", "TRUNCATE"),
    ],
)
def test_event_log_rejects_update_delete_and_truncate(
    migrated_database_url: str, statement: str, operation: str
) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        flow = uuid4()
        for i in range(2):
            conn.execute(
                "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)"
                " VALUES (%s, %s, now(), 'stepstarted', %s::jsonb)",
                (flow, i, PAYLOAD),
            )
        before = conn.execute("SELECT seq, flow_seq, ts, event_type FROM event_log").fetchall()
        with pytest.raises(errors.RaiseException) as info:
            conn.execute(statement.encode())
        assert info.value.sqlstate == "P0001"
        assert f"event_log is append-only: {operation} rejected" in str(info.value)
        after = conn.execute("SELECT seq, flow_seq, ts, event_type FROM event_log").fetchall()
        assert after == before
        assert len(after) == 2


# --- atomicity of PgEventStore ----------------------------------------------------------------


def test_a_step_finished_whose_artifact_row_fails_leaves_no_event(
    pool: Pool, store: PgEventStore
) -> None:
    flow = uuid4()
    bad = FlowEvent(0, flow, StepFinished(0, "s", (BAD_HASH,), FP), ts(0))
    with pytest.raises(errors.CheckViolation):
        store.append_batch(flow, [bad])
    assert event_count(pool, flow) == 0
    assert store.list(flow) == []
    with pytest.raises(errors.CheckViolation):
        store.append(flow, StepFinished(0, "s", (BAD_HASH,), FP), ts(0))
    assert event_count(pool, flow) == 0


def test_a_failing_multi_event_batch_leaves_no_partial_rows(
    pool: Pool, store: PgEventStore
) -> None:
    flow = uuid4()
    stored = store.append_batch(flow, [ev(flow, 0, FlowInitialized("d" * 64, 2))])
    good = Artifact("good", {"ok": str(flow)})
    batch = [
        ev(flow, 1),
        ev(flow, 2, StepSignal(0, "s", "SIG", {"x": 1})),
        ev(flow, 3, StepFinished(0, "s", (good.hash,), FP)),  # a valid artifact first ...
        ev(flow, 4, StepFinished(1, "t", (good.hash, BAD_HASH), FP)),  # ... then a bad one
        ev(flow, 5),
    ]
    with pytest.raises(errors.CheckViolation):
        store.append_batch(flow, [*stored, *batch], {good.hash: good})
    assert store.list(flow) == stored
    assert event_count(pool, flow) == 1
    assert artifact_row(pool, good.hash) is None
    assert store.count_artifacts([flow]) == 0
    # the valid part alone commits, with its artifact
    store.append_batch(flow, batch[:3], {good.hash: good})
    assert event_count(pool, flow) == 4
    assert store.artifact(good.hash) is not None


def test_no_artifact_insert_stores_events_without_artifact_rows(pool: Pool) -> None:
    store = PgEventStore(pool, no_artifact_insert=True)
    flow = uuid4()
    body = Artifact("molecule_batch", {"molecules": [str(flow)]}, {"seed": 1})
    event = store.append(flow, StepFinished(0, "acquire", (body.hash,), FP), ts(0), [body])
    store.append_batch(flow, [ev(flow, 1, StepFinished(1, "x", (BAD_HASH,), FP))])
    assert store.list(flow) == [
        FlowEvent(0, flow, StepFinished(0, "acquire", (body.hash,), FP), ts(0)),
        ev(flow, 1, StepFinished(1, "x", (BAD_HASH,), FP)),
    ]
    assert event.log_seq is not None
    assert store.artifact(body.hash) is None
    assert artifact_row(pool, BAD_HASH) is None
    assert store.count_artifacts([flow]) == 0
    assert store.count_events([flow]) == 2


def test_artifact_bodies_are_stored_and_missing_bodies_are_unknown_null(
    pool: Pool, store: PgEventStore
) -> None:
    flow = uuid4()
    with_meta = Artifact("property_table", {"rows": [1, 2.5, "β"], "f": str(flow)}, {"u": "g"})
    no_meta = Artifact("property_stats", {"n": 2, "f": str(flow)})
    bodiless = Artifact("never_sent", {"f": str(flow)}).hash
    outputs = (with_meta.hash, no_meta.hash, bodiless, with_meta.hash)  # a hash twice: one row
    event = store.append(
        flow, StepFinished(0, "properties", outputs, FP), ts(0), [with_meta, no_meta]
    )
    assert event.log_seq is not None
    assert artifact_row(pool, with_meta.hash) == (
        "property_table",
        {"rows": [1, 2.5, "β"], "f": str(flow)},
        "object",
        {"u": "g"},
        event.log_seq,
    )
    assert artifact_row(pool, no_meta.hash) == (
        "property_stats",
        {"n": 2, "f": str(flow)},
        "object",
        None,  # SQL NULL, not JSON null
        event.log_seq,
    )
    assert artifact_row(pool, bodiless) == (
        UNKNOWN_ARTIFACT_KIND,
        None,
        "null",
        None,
        event.log_seq,
    )
    # psycopg reads JSON null and SQL NULL both as None: ask the server which one is stored
    kinds = fetch(
        pool,
        "SELECT artifact_hash, metadata IS NULL, jsonb_typeof(metadata)"
        " FROM workflow_step_artifacts WHERE artifact_hash = ANY(%s)",
        ([with_meta.hash, no_meta.hash, bodiless],),
    )
    assert dict((h, (is_null, typ)) for h, is_null, typ in kinds) == {
        with_meta.hash: (False, "object"),
        no_meta.hash: (True, None),  # SQL NULL, not JSON null
        bodiless: (True, None),
    }
    assert store.count_artifacts([flow]) == 3
    stored = store.artifact(with_meta.hash)
    assert stored is not None
    assert (stored.kind, stored.payload, stored.metadata, stored.produced_in_seq) == (
        with_meta.kind,
        with_meta.payload,
        with_meta.metadata,
        event.log_seq,
    )


def test_the_first_producer_of_an_artifact_wins(pool: Pool, store: PgEventStore) -> None:
    payload: JsonValue = {"shared": str(uuid4())}
    first = Artifact("first", payload, {"by": "a"})
    second = Artifact("second", payload, {"by": "b"})
    assert first.hash == second.hash
    flow_a, flow_b = uuid4(), uuid4()
    a = store.append(flow_a, StepFinished(0, "s", (first.hash,), FP), ts(0), [first])
    b = store.append(flow_b, StepFinished(0, "s", (second.hash,), FP), ts(1), [second])
    assert a.log_seq is not None and b.log_seq is not None
    assert artifact_row(pool, first.hash) == ("first", payload, "object", {"by": "a"}, a.log_seq)
    assert store.count_artifacts([flow_a]) == 1
    assert store.count_artifacts([flow_b]) == 0
    assert store.list(flow_b)[0].kind == StepFinished(0, "s", (second.hash,), FP)

    # within one batch too: the lower position wins; and a body-less first producer stays
    late = Artifact("late", {"late": str(uuid4())})
    flow_c = uuid4()
    stored = store.append_batch(
        flow_c,
        [
            ev(flow_c, 0, StepFinished(0, "s", (late.hash,), FP)),
            ev(flow_c, 1, StepFinished(1, "t", (late.hash,), FP)),
        ],
    )
    store.append_batch(
        flow_c, [ev(flow_c, 2, StepFinished(2, "u", (late.hash,), FP))], {late.hash: late}
    )
    row = artifact_row(pool, late.hash)
    assert row == (UNKNOWN_ARTIFACT_KIND, None, "null", None, stored[0].log_seq)
