"""FlowEngine on an InMemoryEventStore with a fixed clock: the exact events it emits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from chem_persistence.domain.canonical import (
    flow_fingerprint,
    hash_value,
    step_fingerprint,
    with_policy,
)
from chem_persistence.domain.definition import (
    PROPERTY_PREFERENCE_ASSIGNED,
    FlowDefinition,
    Signal,
    StepDefinition,
    StepFailure,
    StepOutcome,
    StepSuccess,
)
from chem_persistence.domain.engine import ENGINE_VERSION, EngineError, FlowEngine
from chem_persistence.domain.events import (
    Artifact,
    CoreEngineError,
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
    UnitError,
)
from chem_persistence.domain.examples import example_flow
from chem_persistence.domain.json_values import JsonValue
from chem_persistence.domain.replay import InMemoryFlowRepository, StepState
from chem_persistence.domain.store import InMemoryEventStore

FLOW = UUID("00000000-0000-4000-8000-0000000000f1")
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


class Clock:
    """A fixed clock: T0, T0 + 1 s, T0 + 2 s, ... one tick per emitted event."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> datetime:
        now = T0 + timedelta(seconds=self.ticks)
        self.ticks += 1
        return now


def tick(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def engine(store: InMemoryEventStore | None = None) -> FlowEngine:
    return FlowEngine(store if store is not None else InMemoryEventStore(), clock=Clock())


def kinds(events: Sequence[FlowEvent]) -> list[FlowEventKind]:
    return [e.kind for e in events]


def raises_engine_error(eng: FlowEngine, definition: FlowDefinition) -> CoreEngineError:
    with pytest.raises(EngineError) as caught:
        eng.next(FLOW, definition)
    return caught.value.error


# --- a small hand-made flow -------------------------------------------------------------------

MADE = Artifact("numbers", {"values": [1, 2, 3]}, {"unit": "mol"})
SEEN: list[tuple[str, list[Artifact], JsonValue]] = []


def make(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    SEEN.append(("make", list(inputs), params))
    return StepSuccess((MADE,))


def double(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    SEEN.append(("double", list(inputs), params))
    payload = inputs[0].payload
    assert isinstance(payload, dict) and isinstance(payload["values"], list)
    assert isinstance(params, dict) and isinstance(params["factor"], int)
    doubled: list[JsonValue] = [v * params["factor"] for v in payload["values"]]  # type: ignore[operator]
    return StepSuccess((Artifact("numbers", {"values": doubled}),))


TWO_STEPS = FlowDefinition(
    (
        StepDefinition("make", make, {"n": 3}, source=True),
        StepDefinition("double", double, {"factor": 2}),
    )
)
DOUBLED = Artifact("numbers", {"values": [2, 4, 6]})


def fp(step: StepDefinition, inputs: Sequence[str], definition: FlowDefinition) -> str:
    return step_fingerprint(
        engine_version=ENGINE_VERSION,
        step_id=step.step_id,
        input_hashes=inputs,
        params=step.params,
        definition_hash=definition.definition_hash,
    )


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    SEEN.clear()


def test_success_flow_exact_events() -> None:
    store = InMemoryEventStore()
    eng = engine(store)
    fp0 = fp(TWO_STEPS.steps[0], [], TWO_STEPS)
    fp1 = fp(TWO_STEPS.steps[1], [MADE.hash], TWO_STEPS)
    expected_kinds: list[FlowEventKind] = [
        FlowInitialized(TWO_STEPS.definition_hash, 2),
        StepStarted(0, "make"),
        StepFinished(0, "make", (MADE.hash,), fp0),
        StepStarted(1, "double"),
        StepFinished(1, "double", (DOUBLED.hash,), fp1),
        FlowCompleted(flow_fingerprint([fp0, fp1])),
    ]
    expected = [FlowEvent(i, FLOW, k, tick(i)) for i, k in enumerate(expected_kinds)]

    first = eng.next(FLOW, TWO_STEPS)
    assert first == expected[:3]
    second = eng.next(FLOW, TWO_STEPS)
    assert second == expected[3:]
    assert store.list(FLOW) == expected
    # the steps got their params and the previous step's outputs
    assert SEEN == [("make", [], {"n": 3}), ("double", [MADE], {"factor": 2})]
    # artifact bodies travel with StepFinished into the store
    assert store.artifact(MADE.hash) == MADE
    assert store.artifact(DOUBLED.hash) == DOUBLED


def test_run_returns_every_event_until_completion() -> None:
    store = InMemoryEventStore()
    emitted = engine(store).run(FLOW, TWO_STEPS)
    assert emitted == store.list(FLOW)
    assert [e.seq for e in emitted] == list(range(6))
    assert [e.ts for e in emitted] == [tick(i) for i in range(6)]
    assert isinstance(emitted[-1].kind, FlowCompleted)
    assert sum(isinstance(k, FlowInitialized) for k in kinds(emitted)) == 1


def test_flow_completed_carries_the_flow_fingerprint_of_the_step_fingerprints() -> None:
    emitted = engine().run(FLOW, TWO_STEPS)
    finished = [k.fingerprint for k in kinds(emitted) if isinstance(k, StepFinished)]
    last = emitted[-1].kind
    assert isinstance(last, FlowCompleted)
    assert last.flow_fingerprint == flow_fingerprint(finished)
    assert last.flow_fingerprint == hash_value(sorted(finished))


def test_next_on_a_completed_flow_raises_flow_completed() -> None:
    store = InMemoryEventStore()
    eng = engine(store)
    eng.run(FLOW, TWO_STEPS)
    stored = store.list(FLOW)
    assert raises_engine_error(eng, TWO_STEPS) == UnitError("FlowCompleted")
    assert store.list(FLOW) == stored


def test_engine_error_carries_the_core_engine_error() -> None:
    error = EngineError(UnitError("FlowCompleted"))
    assert error.error == UnitError("FlowCompleted")
    assert "FlowCompleted" in str(error)


# --- signals and policies ---------------------------------------------------------------------

POLICY_PARAMS: JsonValue = {"property": "weight", "policy": "minvar"}
PARAMS_HASH = hash_value(POLICY_PARAMS)


def source_with_signals(*signals: Signal) -> FlowDefinition:
    def run(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
        return StepSuccess((MADE,), signals)

    return FlowDefinition((StepDefinition("source", run, POLICY_PARAMS, source=True),))


def test_signals_are_emitted_between_started_and_finished_in_order() -> None:
    definition = source_with_signals(Signal("ACQUIRED", {"count": 3}), Signal("DONE"))
    emitted = kinds(engine().next(FLOW, definition))
    base = fp(definition.steps[0], [], definition)
    assert emitted[1:4] == [
        StepStarted(0, "source"),
        StepSignal(0, "source", "ACQUIRED", {"count": 3}),
        StepSignal(0, "source", "DONE", None),
    ]
    assert emitted[4] == StepFinished(0, "source", (MADE.hash,), base)  # no policy: base fp


def test_a_policy_step_emits_a_preference_and_a_policy_fingerprint() -> None:
    rationale: JsonValue = {"why": "lowest variance", "score": 0.75}
    preference: JsonValue = {
        "property_key": "weight",
        "policy_id": "minvar",
        "params_hash": PARAMS_HASH,
        "rationale": rationale,
    }
    definition = source_with_signals(Signal(PROPERTY_PREFERENCE_ASSIGNED, preference))
    emitted = kinds(engine().next(FLOW, definition))
    base = fp(definition.steps[0], [], definition)
    policy_fp = with_policy(base, PARAMS_HASH)
    assert policy_fp != base
    assert emitted == [
        FlowInitialized(definition.definition_hash, 1),
        StepStarted(0, "source"),
        PropertyPreferenceAssigned("weight", "minvar", PARAMS_HASH, rationale),
        StepFinished(0, "source", (MADE.hash,), policy_fp),
        FlowCompleted(flow_fingerprint([policy_fp])),
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"property_key": "weight", "policy_id": "minvar"},  # no params_hash
        {"property_key": "weight", "policy_id": "minvar", "params_hash": 12},
        ["weight", "minvar", "h"],
        None,
    ],
)
def test_an_incomplete_preference_signal_stays_a_plain_signal(data: JsonValue) -> None:
    definition = source_with_signals(Signal(PROPERTY_PREFERENCE_ASSIGNED, data))
    emitted = kinds(engine().next(FLOW, definition))
    assert emitted[2] == StepSignal(0, "source", PROPERTY_PREFERENCE_ASSIGNED, data)
    finished = emitted[3]
    assert isinstance(finished, StepFinished)
    assert finished.fingerprint == fp(definition.steps[0], [], definition)


def test_example_flow_policy_step() -> None:
    definition = example_flow(3)  # every 3rd seed has the policy step "choose"
    store = InMemoryEventStore()
    emitted = engine(store).run(FLOW, definition)
    ks = kinds(emitted)
    pref_at = next(i for i, k in enumerate(ks) if isinstance(k, PropertyPreferenceAssigned))
    started_at = ks.index(StepStarted(2, "choose"))
    finished = ks[pref_at + 1]
    assert started_at < pref_at
    assert isinstance(finished, StepFinished) and finished.step_id == "choose"
    preference = ks[pref_at]
    assert isinstance(preference, PropertyPreferenceAssigned)
    choose = definition.steps[2]
    assert preference.params_hash == hash_value(choose.params)
    props = next(k for k in ks if isinstance(k, StepFinished) and k.step_id == "properties")
    base = fp(choose, props.outputs, definition)
    assert finished.fingerprint == with_policy(base, preference.params_hash)
    # and the flow fingerprint includes the policy fingerprint
    last = ks[-1]
    assert isinstance(last, FlowCompleted)
    all_fps = [k.fingerprint for k in ks if isinstance(k, StepFinished)]
    assert finished.fingerprint in all_fps
    assert last.flow_fingerprint == flow_fingerprint(all_fps)


# --- failures ---------------------------------------------------------------------------------

RAN: list[str] = []


def never(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    RAN.append("never")
    return StepSuccess(())


def failing_flow(second: StepDefinition) -> FlowDefinition:
    return FlowDefinition(
        (StepDefinition("make", make, {"n": 3}, source=True), second, StepDefinition("x", never))
    )


def test_a_failing_step_stops_the_flow() -> None:
    error = MessageError("PolicyViolation", "weight 46 exceeds 1")

    def refuse(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
        return StepFailure(error)

    definition = failing_flow(StepDefinition("check", refuse, {"max": 1}))
    store = InMemoryEventStore()
    eng = engine(store)
    RAN.clear()
    emitted = eng.run(FLOW, definition)
    fp1 = fp(definition.steps[1], [MADE.hash], definition)
    assert kinds(emitted) == [
        FlowInitialized(definition.definition_hash, 3),
        StepStarted(0, "make"),
        StepFinished(0, "make", (MADE.hash,), fp(definition.steps[0], [], definition)),
        StepStarted(1, "check"),
        StepFailed(1, "check", error, fp1),
    ]
    assert store.list(FLOW) == emitted
    # stop on failure: the next call is refused and nothing is emitted or run
    assert raises_engine_error(eng, definition) == UnitError("FlowHasFailed")
    assert store.list(FLOW) == emitted
    assert RAN == []
    instance = InMemoryFlowRepository.load(FLOW, emitted, definition)
    assert instance.failed and not instance.completed


def test_a_step_raising_an_exception_fails_with_internal() -> None:
    def crash(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
        raise ZeroDivisionError("division by zero")

    definition = failing_flow(StepDefinition("crash", crash))
    emitted = engine().run(FLOW, definition)
    last = emitted[-1].kind
    assert last == StepFailed(
        1,
        "crash",
        MessageError("Internal", "ZeroDivisionError: division by zero"),
        fp(definition.steps[1], [MADE.hash], definition),
    )


def test_a_step_raising_engine_error_fails_with_that_error() -> None:
    def refuse(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
        raise EngineError(MessageError("StorageError", "disk full"))

    emitted = engine().run(FLOW, failing_flow(StepDefinition("store", refuse)))
    last = emitted[-1].kind
    assert isinstance(last, StepFailed)
    assert last.error == MessageError("StorageError", "disk full")


def test_a_first_step_not_marked_source_is_refused_before_any_event() -> None:
    definition = FlowDefinition((StepDefinition("make", make), StepDefinition("double", double)))
    store = InMemoryEventStore()
    assert raises_engine_error(engine(store), definition) == UnitError("FirstStepMustBeSource")
    assert store.list(FLOW) == []
    assert SEEN == []


def test_an_empty_definition_is_refused() -> None:
    store = InMemoryEventStore()
    error = raises_engine_error(engine(store), FlowDefinition(()))
    assert error == UnitError("FirstStepMustBeSource")
    assert store.list(FLOW) == []


def test_a_new_engine_without_the_artifacts_gets_missing_inputs() -> None:
    store = InMemoryEventStore()
    engine(store).next(FLOW, TWO_STEPS)  # step 0 done; its bodies live in that engine
    before = store.list(FLOW)
    restarted = engine(store)
    assert raises_engine_error(restarted, TWO_STEPS) == UnitError("MissingInputs")
    assert store.list(FLOW) == before  # refused before StepStarted


def test_a_new_engine_can_start_a_flow_it_never_saw() -> None:
    store = InMemoryEventStore()
    engine(store)  # another engine, unused
    emitted = engine(store).next(FLOW, TWO_STEPS)
    assert kinds(emitted)[0] == FlowInitialized(TWO_STEPS.definition_hash, 2)


def test_all_steps_done_without_flow_completed_is_step_already_terminal() -> None:
    definition = FlowDefinition((StepDefinition("make", make, source=True),))
    store = InMemoryEventStore()
    store.append(FLOW, FlowInitialized(definition.definition_hash, 1), tick(0))
    store.append(FLOW, StepStarted(0, "make"), tick(1))
    store.append(FLOW, StepFinished(0, "make", (MADE.hash,), "f" * 64), tick(2))
    assert raises_engine_error(engine(store), definition) == UnitError("StepAlreadyTerminal")


# --- example flows and determinism ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(22))
def test_example_flows_complete_or_fail_as_designed(seed: int) -> None:
    definition = example_flow(seed)
    store = InMemoryEventStore()
    emitted = engine(store).run(FLOW, definition)
    ks = kinds(emitted)
    assert [e.seq for e in emitted] == list(range(len(emitted)))
    assert ks[0] == FlowInitialized(definition.definition_hash, len(definition.steps))
    assert ("choose" in definition.step_ids) == (seed % 3 == 0)
    instance = InMemoryFlowRepository.load(FLOW, store.list(FLOW), definition)
    if seed % 7 == 0:
        last = ks[-1]
        assert isinstance(last, StepFailed) and last.step_id == "properties"
        assert isinstance(last.error, MessageError) and last.error.variant == "PolicyViolation"
        assert instance.failed and not instance.completed
        assert not any(isinstance(k, PropertyPreferenceAssigned) for k in ks)
    else:
        assert isinstance(ks[-1], FlowCompleted)
        assert instance.completed and not instance.failed
        assert all(s.state is StepState.FINISHED_OK for s in instance.steps)
        finished = [k for k in ks if isinstance(k, StepFinished)]
        assert [s.fingerprint for s in instance.steps] == [k.fingerprint for k in finished]
        assert [s.outputs for s in instance.steps] == [k.outputs for k in finished]
        preferences = [k for k in ks if isinstance(k, PropertyPreferenceAssigned)]
        assert len(preferences) == (1 if seed % 3 == 0 else 0)
        for k in finished:
            assert all(store.artifact(h) is not None for h in k.outputs)


@pytest.mark.parametrize("seed", [1, 3, 6, 7, 10])
def test_two_engines_on_two_stores_are_identical(seed: int) -> None:
    a, b = InMemoryEventStore(), InMemoryEventStore()
    events_a = engine(a).run(FLOW, example_flow(seed))
    events_b = engine(b).run(FLOW, example_flow(seed))
    assert events_a == events_b
    assert a.list(FLOW) == b.list(FLOW)
    fps_a = [getattr(k, "fingerprint", None) for k in kinds(events_a)]
    assert fps_a == [getattr(k, "fingerprint", None) for k in kinds(events_b)]
    assert any(f is not None for f in fps_a)


def test_fingerprints_differ_between_seeds_and_engine_versions() -> None:
    def finished_fps(eng: FlowEngine, seed: int) -> list[str]:
        emitted = eng.run(FLOW, example_flow(seed))
        return [k.fingerprint for k in kinds(emitted) if isinstance(k, StepFinished)]

    v1 = finished_fps(engine(), 1)
    assert finished_fps(engine(), 2) != v1
    other = FlowEngine(InMemoryEventStore(), engine_version="chem-core-py/9.9", clock=Clock())
    v2 = finished_fps(other, 1)
    assert len(v2) == len(v1) and all(x != y for x, y in zip(v1, v2, strict=True))


def test_flows_on_one_store_are_independent() -> None:
    store = InMemoryEventStore()
    eng = FlowEngine(store, clock=Clock())
    other = UUID(int=FLOW.int + 1)
    eng.next(FLOW, TWO_STEPS)
    eng.run(other, example_flow(1))
    eng.next(FLOW, TWO_STEPS)
    assert [e.seq for e in store.list(FLOW)] == list(range(6))
    assert isinstance(store.list(FLOW)[-1].kind, FlowCompleted)
    assert isinstance(store.list(other)[-1].kind, FlowCompleted)
