"""Replay (InMemoryFlowRepository.load): each rule of ARCHITECTURE.md, Domain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from chem_persistence.domain.events import (
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    MessageError,
    PropertyPreferenceAssigned,
    StepFailed,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.replay import FlowInstance, InMemoryFlowRepository, StepSlot, StepState
from tests.strategies import definition_of

FLOW = UUID("00000000-0000-4000-8000-0000000000aa")
T0 = datetime(2024, 5, 1, tzinfo=UTC)
STEPS = ("acquire", "properties", "report")
DEFINITION = definition_of(STEPS)
FP = ["1" * 64, "2" * 64, "3" * 64]
OUT = ("a" * 64, "b" * 64)


def t(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def events(*kinds: FlowEventKind) -> list[FlowEvent]:
    return [FlowEvent(i, FLOW, kind, t(i)) for i, kind in enumerate(kinds)]


def load(*kinds: FlowEventKind) -> FlowInstance:
    return InMemoryFlowRepository.load(FLOW, events(*kinds), DEFINITION)


INIT = FlowInitialized("d" * 64, 3)


def test_no_events_gives_every_step_pending() -> None:
    instance = InMemoryFlowRepository.load(FLOW, [], DEFINITION)
    assert instance == FlowInstance(FLOW, tuple(StepSlot(s) for s in STEPS), 0, False)
    assert all(slot.state is StepState.PENDING for slot in instance.steps)
    assert [slot.step_id for slot in instance.steps] == list(STEPS)
    assert instance.flow_id == FLOW
    assert not instance.failed and not instance.completed


def test_flow_initialized_changes_nothing() -> None:
    assert load(INIT) == InMemoryFlowRepository.load(FLOW, [], DEFINITION)


def test_step_started_makes_the_step_running() -> None:
    instance = load(INIT, StepStarted(0, "acquire"))
    slot = instance.steps[0]
    assert slot == StepSlot("acquire", StepState.RUNNING, attempts=1, started_at=t(1))
    assert instance.steps[1:] == (StepSlot("properties"), StepSlot("report"))
    assert instance.cursor == 1  # a Running step is not Pending


def test_two_step_started_count_two_attempts_and_keep_the_last_start() -> None:
    slot = load(INIT, StepStarted(0, "acquire"), StepStarted(0, "acquire")).steps[0]
    assert slot.attempts == 2
    assert slot.started_at == t(2)
    assert slot.state is StepState.RUNNING


def test_step_finished_makes_the_step_finished_ok() -> None:
    instance = load(INIT, StepStarted(0, "acquire"), StepFinished(0, "acquire", OUT, FP[0]))
    assert instance.steps[0] == StepSlot(
        "acquire",
        StepState.FINISHED_OK,
        attempts=1,
        started_at=t(1),
        finished_at=t(2),
        fingerprint=FP[0],
        outputs=OUT,
    )
    assert instance.cursor == 1
    assert not instance.completed and not instance.failed


def test_step_failed_makes_the_step_failed() -> None:
    error = MessageError("PolicyViolation", "too heavy")
    instance = load(INIT, StepStarted(0, "acquire"), StepFailed(0, "acquire", error, FP[0]))
    assert instance.steps[0] == StepSlot(
        "acquire",
        StepState.FAILED,
        attempts=1,
        started_at=t(1),
        finished_at=t(2),
        fingerprint=FP[0],
    )
    assert instance.failed
    assert not instance.completed
    assert instance.cursor == 1


def _complete_run() -> list[FlowEventKind]:
    kinds: list[FlowEventKind] = [INIT]
    for i, step in enumerate(STEPS):
        kinds += [StepStarted(i, step), StepFinished(i, step, (OUT[0],), FP[i])]
    return kinds


def test_flow_completed_marks_the_flow_completed() -> None:
    before = load(*_complete_run())
    after = load(*_complete_run(), FlowCompleted("c" * 64))
    assert not before.completed
    assert after.completed
    assert after.steps == before.steps
    assert after.cursor == before.cursor == len(STEPS)
    assert [s.fingerprint for s in after.steps] == FP
    assert all(s.state is StepState.FINISHED_OK for s in after.steps)


def test_flow_completed_alone_changes_no_slot() -> None:
    instance = load(FlowCompleted("c" * 64))
    assert instance.completed
    assert instance.steps == tuple(StepSlot(s) for s in STEPS)


@pytest.mark.parametrize(
    "noise",
    [
        INIT,
        StepSignal(0, "acquire", "ACQUIRED", {"count": 3}),
        StepSignal(1, "properties", "PROGRESS", [1, 2]),
        PropertyPreferenceAssigned("weight", "minvar", "p" * 64, {"why": "x"}),
    ],
    ids=lambda k: type(k).__name__,
)
def test_signals_preferences_and_initialization_change_nothing(noise: FlowEventKind) -> None:
    base = events(StepStarted(0, "acquire"), StepFinished(0, "acquire", OUT, FP[0]))
    # the noise before, between and after the base events; the base events keep their ts
    noisy = [
        FlowEvent(0, FLOW, noise, t(10)),
        base[0],
        FlowEvent(2, FLOW, noise, t(11)),
        base[1],
        FlowEvent(4, FLOW, noise, t(12)),
    ]
    assert InMemoryFlowRepository.load(FLOW, noisy, DEFINITION) == InMemoryFlowRepository.load(
        FLOW, base, DEFINITION
    )


@pytest.mark.parametrize("index", [3, 4, 99, 2**31 - 1])
def test_an_out_of_range_step_index_is_ignored(index: int) -> None:
    reference = load(StepStarted(0, "acquire"))
    assert (
        load(
            StepStarted(0, "acquire"),
            StepStarted(index, "ghost"),
            StepFinished(index, "ghost", OUT, FP[0]),
            StepFailed(index, "ghost", MessageError("Internal", "x"), FP[0]),
        ).steps
        == reference.steps
    )


def test_the_step_id_in_the_event_does_not_rename_the_slot() -> None:
    slot = load(StepStarted(1, "something-else")).steps[1]
    assert slot.step_id == "properties"
    assert slot.state is StepState.RUNNING


@pytest.mark.parametrize(
    ("kinds", "cursor"),
    [
        ([], 0),
        ([StepStarted(0, "acquire")], 1),
        ([StepFinished(0, "acquire", OUT, FP[0])], 1),
        ([StepFinished(0, "acquire", OUT, FP[0]), StepStarted(2, "report")], 1),
        ([StepStarted(1, "properties")], 0),
        ([StepFinished(0, "a", OUT, FP[0]), StepFinished(1, "p", OUT, FP[1])], 2),
        (
            [
                StepFinished(0, "a", OUT, FP[0]),
                StepFailed(1, "p", MessageError("Internal", "x"), FP[1]),
            ],
            2,
        ),
        ([StepStarted(i, s) for i, s in enumerate(STEPS)], 3),
    ],
)
def test_cursor_is_the_first_pending_slot_else_the_number_of_steps(
    kinds: list[FlowEventKind], cursor: int
) -> None:
    assert load(*kinds).cursor == cursor


def test_a_step_can_be_rerun_after_a_failure() -> None:
    error = MessageError("Internal", "x")
    instance = load(
        StepStarted(0, "acquire"),
        StepFailed(0, "acquire", error, FP[0]),
        StepStarted(0, "acquire"),
        StepFinished(0, "acquire", OUT, FP[1]),
    )
    slot = instance.steps[0]
    assert slot.state is StepState.FINISHED_OK
    assert slot.attempts == 2
    assert (slot.started_at, slot.finished_at, slot.fingerprint) == (t(2), t(3), FP[1])
    assert not instance.failed


def test_flow_instances_are_values() -> None:
    kinds = _complete_run()
    a = InMemoryFlowRepository.load(FLOW, events(*kinds), DEFINITION)
    b = InMemoryFlowRepository.load(FLOW, list(events(*kinds)), definition_of(STEPS))
    assert a == b
    assert a is not b
    assert hash(a) == hash(b)  # frozen: usable as a value anywhere
    shifted = [
        FlowEvent(e.seq, e.flow_id, e.kind, e.ts + timedelta(microseconds=1))
        for e in events(*kinds)
    ]
    assert InMemoryFlowRepository.load(FLOW, shifted, DEFINITION) != a
    other_flow = UUID(int=FLOW.int + 1)
    assert InMemoryFlowRepository.load(other_flow, events(*kinds), DEFINITION) != a


def test_replay_ignores_log_seq() -> None:
    plain = events(*_complete_run())
    from_pg = [FlowEvent(e.seq, e.flow_id, e.kind, e.ts, log_seq=1000 + e.seq) for e in plain]
    assert InMemoryFlowRepository.load(FLOW, from_pg, DEFINITION) == InMemoryFlowRepository.load(
        FLOW, plain, DEFINITION
    )
