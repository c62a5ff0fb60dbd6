"""InMemoryEventStore: the reference semantics every other store is held to."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from chem_persistence.domain.errors import ArtifactHashMismatch, SeqConflict, SeqGap, StoreError
from chem_persistence.domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepStarted,
)
from chem_persistence.domain.store import InMemoryEventStore

F1 = UUID("00000000-0000-4000-8000-000000000001")
F2 = UUID("00000000-0000-4000-8000-000000000002")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FP = "f" * 64


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def started(i: int) -> StepStarted:
    return StepStarted(i, f"step-{i}")


def ev(seq: int, kind: FlowEventKind | None = None, flow: UUID = F1) -> FlowEvent:
    return FlowEvent(seq, flow, kind if kind is not None else started(seq), ts(seq))


def batch(start: int, stop: int, flow: UUID = F1) -> list[FlowEvent]:
    return [ev(i, flow=flow) for i in range(start, stop)]


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


# --- positions --------------------------------------------------------------------------------


def test_append_assigns_positions_from_zero(store: InMemoryEventStore) -> None:
    events = [store.append(F1, started(i), ts(i)) for i in range(3)]
    assert [e.seq for e in events] == [0, 1, 2]
    assert events == [FlowEvent(i, F1, started(i), ts(i)) for i in range(3)]
    assert store.list(F1) == events


def test_positions_are_independent_per_flow(store: InMemoryEventStore) -> None:
    a0 = store.append(F1, started(0), ts(0))
    b0 = store.append(F2, started(0), ts(1))
    a1 = store.append(F1, started(1), ts(2))
    b1 = store.append(F2, started(1), ts(3))
    b2 = store.append(F2, started(2), ts(4))
    assert (a0.seq, a1.seq) == (0, 1)
    assert (b0.seq, b1.seq, b2.seq) == (0, 1, 2)
    assert store.list(F1) == [a0, a1]
    assert store.list(F2) == [b0, b1, b2]
    assert all(e.flow_id == F2 for e in store.list(F2))
    assert sorted(store.flow_ids()) == [F1, F2]


def test_an_unknown_flow_has_no_events(store: InMemoryEventStore) -> None:
    assert store.list(F1) == []
    assert store.flow_ids() == []


def test_append_stamps_utc_now_when_no_ts_is_given(store: InMemoryEventStore) -> None:
    before = datetime.now(UTC)
    event = store.append(F1, started(0))
    after = datetime.now(UTC)
    assert event.ts.tzinfo is not None and event.ts.utcoffset() == timedelta(0)
    assert before <= event.ts <= after


def test_events_in_memory_have_no_log_seq(store: InMemoryEventStore) -> None:
    assert store.append(F1, started(0), ts(0)).log_seq is None


def test_list_returns_a_copy(store: InMemoryEventStore) -> None:
    store.append(F1, started(0), ts(0))
    listed = store.list(F1)
    listed.clear()
    assert len(store.list(F1)) == 1


def _append_concurrently(
    store: InMemoryEventStore, threads_n: int, per_thread: int
) -> list[BaseException]:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for j in range(per_thread):
                store.append(F1, StepStarted(j, f"thread-{t}"))
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_concurrent_appends_to_one_flow_never_share_a_position() -> None:
    # Each thread appends its own numbered events; the store must serialise them without
    # ever raising (a plain append picks the next position) and keep each thread's order.
    # Several rounds with a tiny switch interval make a race (if any) show up reliably.
    threads_n, per_thread, rounds = 4, 150, 4
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(rounds):
            store = InMemoryEventStore()
            assert _append_concurrently(store, threads_n, per_thread) == []
            events = store.list(F1)
            assert [e.seq for e in events] == list(range(threads_n * per_thread))
            started_kinds = [e.kind for e in events if isinstance(e.kind, StepStarted)]
            for t in range(threads_n):
                indices = [k.step_index for k in started_kinds if k.step_id == f"thread-{t}"]
                assert indices == list(range(per_thread))
    finally:
        sys.setswitchinterval(previous)


# --- append_batch: idempotence, conflicts, gaps -----------------------------------------------


def test_append_batch_stores_and_returns_the_events(store: InMemoryEventStore) -> None:
    events = batch(0, 3)
    assert store.append_batch(F1, events) == events
    assert store.list(F1) == events


def test_an_empty_batch_is_a_no_op(store: InMemoryEventStore) -> None:
    assert store.append_batch(F1, []) == []
    assert store.list(F1) == []
    assert store.flow_ids() == []


def test_identical_re_append_is_a_no_op_returning_the_stored_events(
    store: InMemoryEventStore,
) -> None:
    stored = store.append_batch(F1, batch(0, 3))
    again = batch(0, 3)  # equal, not the same objects
    result = store.append_batch(F1, again)
    assert result == stored
    assert all(r is s for r, s in zip(result, stored, strict=True))
    assert store.list(F1) == stored


def test_re_append_of_a_suffix_is_a_no_op(store: InMemoryEventStore) -> None:
    stored = store.append_batch(F1, batch(0, 4))
    assert store.append_batch(F1, batch(2, 4)) == stored[2:]
    assert len(store.list(F1)) == 4


def test_log_seq_is_not_part_of_identity(store: InMemoryEventStore) -> None:
    store.append_batch(F1, batch(0, 1))
    with_log_seq = FlowEvent(0, F1, started(0), ts(0), log_seq=99)
    assert store.append_batch(F1, [with_log_seq]) == batch(0, 1)
    assert store.list(F1)[0].log_seq is None


def test_a_partly_stored_batch_appends_only_the_new_events(store: InMemoryEventStore) -> None:
    first = store.append_batch(F1, batch(0, 2))
    result = store.append_batch(F1, batch(1, 5))
    assert result == batch(1, 5)
    assert result[0] is first[1]
    assert store.list(F1) == batch(0, 5)


def test_a_different_kind_at_an_occupied_position_is_a_conflict(
    store: InMemoryEventStore,
) -> None:
    store.append_batch(F1, batch(0, 2))
    other = FlowEvent(1, F1, FlowCompleted(FP), ts(1))
    with pytest.raises(SeqConflict) as caught:
        store.append_batch(F1, [other])
    assert caught.value.flow_id == F1
    assert caught.value.seq == 1
    assert str(F1) in str(caught.value) and "position 1" in str(caught.value)
    assert store.list(F1) == batch(0, 2)


def test_same_kind_different_field_at_an_occupied_position_is_a_conflict(
    store: InMemoryEventStore,
) -> None:
    store.append_batch(F1, batch(0, 1))
    with pytest.raises(SeqConflict):
        store.append_batch(F1, [FlowEvent(0, F1, StepStarted(0, "other"), ts(0))])
    assert store.list(F1) == batch(0, 1)


def test_same_kind_different_ts_at_an_occupied_position_is_a_conflict(
    store: InMemoryEventStore,
) -> None:
    store.append_batch(F1, batch(0, 1))
    later = FlowEvent(0, F1, started(0), ts(0) + timedelta(microseconds=1))
    with pytest.raises(SeqConflict) as caught:
        store.append_batch(F1, [later])
    assert caught.value.seq == 0
    assert store.list(F1) == batch(0, 1)


def test_a_conflict_inside_a_partly_stored_batch_stores_nothing(
    store: InMemoryEventStore,
) -> None:
    store.append_batch(F1, batch(0, 3))
    mixed = [ev(1), FlowEvent(2, F1, FlowCompleted(FP), ts(2)), ev(3), ev(4)]
    with pytest.raises(SeqConflict) as caught:
        store.append_batch(F1, mixed)
    assert caught.value.seq == 2
    assert store.list(F1) == batch(0, 3)


def test_a_first_event_past_the_next_position_is_a_gap(store: InMemoryEventStore) -> None:
    with pytest.raises(SeqGap) as caught:
        store.append_batch(F1, batch(1, 3))
    assert (caught.value.flow_id, caught.value.seq, caught.value.expected) == (F1, 1, 0)
    assert store.list(F1) == []
    store.append_batch(F1, batch(0, 2))
    with pytest.raises(SeqGap) as caught:
        store.append_batch(F1, batch(3, 5))
    assert (caught.value.seq, caught.value.expected) == (3, 2)
    assert "position 3" in str(caught.value) and "is 2" in str(caught.value)
    assert store.list(F1) == batch(0, 2)


def test_a_non_contiguous_batch_is_a_gap(store: InMemoryEventStore) -> None:
    with pytest.raises(SeqGap) as caught:
        store.append_batch(F1, [ev(0), ev(1), ev(3)])
    assert (caught.value.seq, caught.value.expected) == (3, 2)
    assert store.list(F1) == []


@pytest.mark.parametrize("seqs", [[0, 0], [1, 0], [0, 2, 1]])
def test_a_batch_out_of_order_is_refused(store: InMemoryEventStore, seqs: list[int]) -> None:
    with pytest.raises(SeqGap):
        store.append_batch(F1, [ev(s) for s in seqs])
    assert store.list(F1) == []


def test_a_foreign_flow_in_a_batch_is_a_value_error(store: InMemoryEventStore) -> None:
    with pytest.raises(ValueError, match=r"events\[1\]\.flow_id"):
        store.append_batch(F1, [ev(0), ev(1, flow=F2), ev(2)])
    assert store.list(F1) == []
    assert store.list(F2) == []


def test_a_negative_position_is_a_value_error(store: InMemoryEventStore) -> None:
    store.append_batch(F1, batch(0, 1))
    with pytest.raises(ValueError, match=r"events\[0\]\.seq"):
        store.append_batch(F1, [FlowEvent(-1, F1, started(0), ts(0))])
    assert store.list(F1) == batch(0, 1)


def test_a_failed_batch_does_not_create_the_flow(store: InMemoryEventStore) -> None:
    with pytest.raises(SeqGap):
        store.append_batch(F1, batch(2, 3))
    assert store.flow_ids() == []


def test_store_errors_share_a_base() -> None:
    assert issubclass(SeqConflict, StoreError)
    assert issubclass(SeqGap, StoreError)
    assert issubclass(ArtifactHashMismatch, StoreError)


# --- artifacts --------------------------------------------------------------------------------

BATCH_A = Artifact("molecule_batch", {"molecules": ["C", "CC"]}, {"seed": 1})
TABLE = Artifact("property_table", {"rows": [1, 2]})


def finished(seq: int, *outputs: str, flow: UUID = F1) -> FlowEvent:
    return FlowEvent(seq, flow, StepFinished(0, "acquire", outputs, FP), ts(seq))


def init(flow: UUID = F1) -> FlowEvent:
    return FlowEvent(0, flow, FlowInitialized("d" * 64, 1), ts(0))


def test_step_finished_stores_its_artifact_bodies(store: InMemoryEventStore) -> None:
    store.append_batch(
        F1,
        [init(), finished(1, BATCH_A.hash, TABLE.hash)],
        {BATCH_A.hash: BATCH_A, TABLE.hash: TABLE},
    )
    assert store.artifact(BATCH_A.hash) == BATCH_A
    assert store.artifact(TABLE.hash) == TABLE


def test_append_takes_artifact_bodies_too(store: InMemoryEventStore) -> None:
    kind = StepFinished(0, "acquire", (BATCH_A.hash,), FP)
    store.append(F1, kind, ts(0), [BATCH_A])
    assert store.artifact(BATCH_A.hash) is BATCH_A


def test_an_output_without_a_body_is_known_without_a_body(store: InMemoryEventStore) -> None:
    store.append_batch(F1, [init(), finished(1, BATCH_A.hash)])
    assert store.artifact(BATCH_A.hash) is None
    assert store.artifact("0" * 64) is None


def test_bodies_that_are_not_outputs_are_not_stored(store: InMemoryEventStore) -> None:
    store.append_batch(F1, [init(), finished(1, BATCH_A.hash)], {TABLE.hash: TABLE})
    assert store.artifact(TABLE.hash) is None


def test_a_body_whose_hash_differs_is_refused_and_nothing_is_stored(
    store: InMemoryEventStore,
) -> None:
    claimed = BATCH_A.hash
    forged = Artifact("molecule_batch", {"molecules": ["N"]})
    with pytest.raises(ArtifactHashMismatch) as caught:
        store.append_batch(F1, [init(), finished(1, claimed)], {claimed: forged})
    assert caught.value.claimed == claimed
    assert caught.value.actual == forged.hash
    assert claimed in str(caught.value) and forged.hash in str(caught.value)
    assert store.list(F1) == []
    assert store.flow_ids() == []
    assert store.artifact(claimed) is None


def test_first_producer_of_an_artifact_wins(store: InMemoryEventStore) -> None:
    same_payload = Artifact("renamed", BATCH_A.payload, {"seed": 2})
    assert same_payload.hash == BATCH_A.hash
    store.append_batch(F1, [init(F1), finished(1, BATCH_A.hash)], {BATCH_A.hash: BATCH_A})
    store.append_batch(
        F2, [init(F2), finished(1, BATCH_A.hash, flow=F2)], {BATCH_A.hash: same_payload}
    )
    assert store.artifact(BATCH_A.hash) == BATCH_A


def test_a_re_append_does_not_replace_an_artifact(store: InMemoryEventStore) -> None:
    store.append_batch(F1, [init(), finished(1, BATCH_A.hash)])
    store.append_batch(F1, [init(), finished(1, BATCH_A.hash)], {BATCH_A.hash: BATCH_A})
    assert store.artifact(BATCH_A.hash) is None  # the first producer had no body


def test_conflicting_batch_stores_no_artifact(store: InMemoryEventStore) -> None:
    store.append_batch(F1, [init()])
    with pytest.raises(SeqGap):
        store.append_batch(F1, [finished(2, TABLE.hash)], {TABLE.hash: TABLE})
    assert store.artifact(TABLE.hash) is None


def test_flow_ids_lists_flows_with_events(store: InMemoryEventStore) -> None:
    store.append_batch(F2, batch(0, 2, flow=F2))
    store.append(F1, started(0), ts(0))
    assert {flow: len(store.list(flow)) for flow in store.flow_ids()} == {F1: 1, F2: 2}
