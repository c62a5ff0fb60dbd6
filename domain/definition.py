"""What a flow is made of: its steps, their parameters, and what a step returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from chem_persistence.domain.canonical import definition_hash
from chem_persistence.domain.events import Artifact, CoreEngineError
from chem_persistence.domain.json_values import JsonValue

PROPERTY_PREFERENCE_ASSIGNED = "PROPERTY_PREFERENCE_ASSIGNED"


@dataclass(frozen=True)
class Signal:
    """Something a step reports besides its outputs; see PROPERTY_PREFERENCE_ASSIGNED."""

    name: str
    data: JsonValue = None


@dataclass(frozen=True)
class StepSuccess:
    outputs: tuple[Artifact, ...]
    signals: tuple[Signal, ...] = ()


@dataclass(frozen=True)
class StepFailure:
    error: CoreEngineError


StepOutcome = StepSuccess | StepFailure
StepRun = Callable[[Sequence[Artifact], JsonValue], StepOutcome]


@dataclass(frozen=True)
class StepDefinition:
    """One step: ``run(inputs, params)`` must be deterministic. A source step takes no inputs."""

    step_id: str
    run: StepRun = field(compare=False)
    params: JsonValue = None
    source: bool = False


@dataclass(frozen=True)
class FlowDefinition:
    steps: tuple[StepDefinition, ...]

    @cached_property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(step.step_id for step in self.steps)

    @cached_property
    def definition_hash(self) -> str:
        return definition_hash(self.step_ids)
