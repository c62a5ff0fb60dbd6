"""The chaos run's deterministic stream: every event is a pure function of (seed, flow, position),
timestamps included, so a restarted producer emits exactly the same envelopes again and the
check can compare what PostgreSQL holds with what must be there."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from chem_persistence.domain.canonical import hash_value
from chem_persistence.domain.events import (
    Artifact,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.json_values import JsonValue

BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)


def flow_id_of(seed: int, index: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"chem-chaos/{seed}/{index}")


def expected_event(seed: int, index: int, seq: int) -> tuple[FlowEvent, list[Artifact]]:
    """Event ``seq`` of flow ``index``: the same every time it is asked for."""
    flow_id = flow_id_of(seed, index)
    ts = BASE_TS + timedelta(seconds=index, microseconds=seq * 7)
    step = seq // 3
    kind: FlowEventKind
    artifacts: list[Artifact] = []
    if seq == 0:
        kind = FlowInitialized(hash_value([seed, index]), 1_000_000)
    elif seq % 3 == 1:
        kind = StepStarted(step, f"step-{step}")
    elif seq % 3 == 2:
        data: dict[str, JsonValue] = {"progress": seq / 100, "note": f"flow {index} — étape {step}"}
        kind = StepSignal(step, f"step-{step}", "PROGRESS", data)
    else:
        artifacts = [
            Artifact("table", {"flow": index, "step": step, "part": part}, {"rows": seq})
            for part in (0, 1)
        ]
        outputs = tuple(a.hash for a in artifacts)
        kind = StepFinished(step - 1, f"step-{step - 1}", outputs, hash_value([index, seq]))
    return FlowEvent(seq, flow_id, kind, ts), artifacts
