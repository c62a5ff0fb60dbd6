"""FlowEngine: runs a flow one step per ``next`` call and emits its events to an EventStore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from chem_persistence.domain.canonical import flow_fingerprint, step_fingerprint, with_policy
from chem_persistence.domain.definition import (
    PROPERTY_PREFERENCE_ASSIGNED,
    FlowDefinition,
    Signal,
    StepDefinition,
    StepFailure,
    StepOutcome,
)
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
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.domain.store import EventStore, utc_now

ENGINE_VERSION = "chem-core-py/0.1"


class EngineError(Exception):
    """The engine refused a command; carries the CoreEngineError the Rust engine would return."""

    def __init__(self, error: CoreEngineError) -> None:
        super().__init__(repr(error))
        self.error = error


class FlowEngine:
    """Deterministic: the same definition and inputs give the same events and fingerprints.

    It keeps the artifact bodies it produced so that the next step gets its inputs; an engine
    that restarts without them gets ``MissingInputs``, as the Rust engine does.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        engine_version: str = ENGINE_VERSION,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.engine_version = engine_version
        self._clock = clock
        self._artifacts: dict[str, Artifact] = {}

    def next(self, flow_id: UUID, definition: FlowDefinition) -> list[FlowEvent]:
        """Run the next pending step; return the events this call emitted."""
        if not definition.steps or not definition.steps[0].source:
            raise EngineError(UnitError("FirstStepMustBeSource"))
        emitted: list[FlowEvent] = []
        events = self.store.list(flow_id)
        if not events:
            init = FlowInitialized(definition.definition_hash, len(definition.steps))
            emitted.append(self._emit(flow_id, init))
            events = [*events, *emitted]
        instance = InMemoryFlowRepository.load(flow_id, events, definition)
        if instance.completed:
            raise EngineError(UnitError("FlowCompleted"))
        if instance.failed:
            raise EngineError(UnitError("FlowHasFailed"))
        index = instance.cursor
        if index >= len(definition.steps):
            raise EngineError(UnitError("StepAlreadyTerminal"))
        step = definition.steps[index]
        input_hashes = instance.steps[index - 1].outputs if index else ()
        inputs = self._inputs(input_hashes)
        fingerprint = step_fingerprint(
            engine_version=self.engine_version,
            step_id=step.step_id,
            input_hashes=input_hashes,
            params=step.params,
            definition_hash=definition.definition_hash,
        )
        emitted.append(self._emit(flow_id, StepStarted(index, step.step_id)))
        outcome = _run(step, inputs)
        if isinstance(outcome, StepFailure):
            failed = StepFailed(index, step.step_id, outcome.error, fingerprint)
            emitted.append(self._emit(flow_id, failed))
            return emitted
        for signal in outcome.signals:
            kind = _signal_event(index, step.step_id, signal)
            if isinstance(kind, PropertyPreferenceAssigned):
                fingerprint = with_policy(fingerprint, kind.params_hash)
            emitted.append(self._emit(flow_id, kind))
        outputs = tuple(a.hash for a in outcome.outputs)
        finished = StepFinished(index, step.step_id, outputs, fingerprint)
        emitted.append(self._emit(flow_id, finished, outcome.outputs))
        for artifact in outcome.outputs:
            self._artifacts.setdefault(artifact.hash, artifact)
        if index == len(definition.steps) - 1:
            fps = [s.fingerprint or "" for s in instance.steps[:index]] + [fingerprint]
            emitted.append(self._emit(flow_id, FlowCompleted(flow_fingerprint(fps))))
        return emitted

    def run(self, flow_id: UUID, definition: FlowDefinition) -> list[FlowEvent]:
        """Call ``next`` until the flow completes or a step fails; return every event emitted."""
        emitted: list[FlowEvent] = []
        while True:
            emitted.extend(self.next(flow_id, definition))
            last = emitted[-1].kind
            if isinstance(last, FlowCompleted | StepFailed):
                return emitted

    def _inputs(self, hashes: Sequence[str]) -> list[Artifact]:
        try:
            return [self._artifacts[h] for h in hashes]
        except KeyError:
            raise EngineError(UnitError("MissingInputs")) from None

    def _emit(
        self, flow_id: UUID, kind: FlowEventKind, artifacts: Sequence[Artifact] = ()
    ) -> FlowEvent:
        return self.store.append(flow_id, kind, self._clock(), artifacts)


def _run(step: StepDefinition, inputs: list[Artifact]) -> StepOutcome:
    try:
        return step.run(inputs, step.params)
    except EngineError as exc:
        return StepFailure(exc.error)
    except Exception as exc:  # a crashing step is a failed step, never a crashed engine
        return StepFailure(MessageError("Internal", f"{type(exc).__name__}: {exc}"))


def _signal_event(index: int, step_id: str, signal: Signal) -> FlowEventKind:
    data = signal.data
    if signal.name == PROPERTY_PREFERENCE_ASSIGNED and isinstance(data, dict):
        key, policy, params_hash = (
            data.get(k) for k in ("property_key", "policy_id", "params_hash")
        )
        if isinstance(key, str) and isinstance(policy, str) and isinstance(params_hash, str):
            return PropertyPreferenceAssigned(key, policy, params_hash, data.get("rationale"))
    return StepSignal(index, step_id, signal.name, data)
