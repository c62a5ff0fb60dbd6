"""The generated events: realistic flows (about 300-byte payloads, StepFinished with two
artifact hashes), the (d) data set and an endless source for paced runs."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from chem_persistence.domain.canonical import flow_fingerprint, hash_text
from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.definition import (
    FlowDefinition,
    StepDefinition,
    StepOutcome,
    StepSuccess,
)
from chem_persistence.domain.events import (
    Artifact,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    PropertyPreferenceAssigned,
    StepFinished,
    StepSignal,
    StepStarted,
)
from chem_persistence.domain.json_values import JsonValue, dumps

# --- the generated events ---------------------------------------------------------------------

_SMILES = (
    "c1ccccc1O",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "C1=CC=C(C=C1)C=O",
    "CCO",
    "O=C(O)c1ccccc1",
)
_NAMES = ("éthanol", "β-carotène", "caffeine", "aspirin", "ацетон", "phénol")
_STEP_NAMES = ("acquire", "standardize", "properties", "choose", "report")


def _step_events(seed: int, step: int) -> list[FlowEventKind]:
    """One step as the engine emits it: started, a progress signal, a preference on every
    other step, finished with two artifact hashes."""
    sid = f"{_STEP_NAMES[step % len(_STEP_NAMES)]}-{step:05d}"
    r = (seed * 7919 + step * 104729) % 1_000_003
    progress: dict[str, JsonValue] = {
        "batch": f"B{seed}-{step:05d}",
        "done": 40 + r % 9,
        "total": 48,
        "sample": [
            {"smiles": _SMILES[(r + k) % len(_SMILES)], "name": _NAMES[(r + k) % len(_NAMES)]}
            for k in range(5)
        ],
        "mean_weight_g_per_mol": round(120 + (r % 5000) / 37, 3),
        "units": {"weight": "g/mol", "elapsed": "ms", "logp": "log10"},
        "logp_range": [round(-1 + (r % 13) / 10, 2), round(2 + (r % 17) / 10, 2)],
        "elapsed_ms": 800 + r % 4000,
        "host": f"chem-engine-{r % 4:02d}",
    }
    kinds: list[FlowEventKind] = [
        StepStarted(step, sid),
        StepSignal(step, sid, "PROGRESS", progress),
    ]
    if step % 2 == 0:
        rationale: dict[str, JsonValue] = {
            "why": "lowest variance across the batch",
            "n": 48,
            "score": round(0.5 + (r % 50) / 100, 2),
            "candidates": ["weight", "logp", "tpsa"],
        }
        params_hash = hash_text(f"params:{seed}:{step}")
        kinds.append(PropertyPreferenceAssigned("logp", "minvar-v2", params_hash, rationale))
    outputs = (hash_text(f"artifact:{seed}:{step}:0"), hash_text(f"artifact:{seed}:{step}:1"))
    kinds.append(StepFinished(step, sid, outputs, hash_text(f"fingerprint:{seed}:{step}")))
    return kinds


def flow_kinds(seed: int, count: int) -> list[FlowEventKind]:
    """``count`` events of one flow: FlowInitialized, whole steps, heartbeat signals to fill,
    FlowCompleted. Deterministic per seed; artifact hashes unique per (seed, step)."""
    room = max(0, count - 2)
    body: list[FlowEventKind] = []
    fingerprints: list[str] = []
    step = 0
    while True:
        events = _step_events(seed, step)
        if len(body) + len(events) > room:
            break
        body.extend(events)
        finished = events[-1]
        assert isinstance(finished, StepFinished)
        fingerprints.append(finished.fingerprint)
        step += 1
    while len(body) < room:
        beat: dict[str, JsonValue] = {"seq": len(body), "host": f"chem-engine-{seed % 4:02d}"}
        body.append(StepSignal(max(0, step - 1), "heartbeat", "HEARTBEAT", beat))
    kinds: list[FlowEventKind] = [FlowInitialized(hash_text(f"definition:{seed}"), step), *body]
    kinds.append(FlowCompleted(flow_fingerprint(fingerprints)))
    return kinds[:count]


def _noop_step(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    return StepSuccess(())


def flow_definition(step_count: int) -> FlowDefinition:
    """A definition with ``step_count`` steps, for replaying a generated flow."""
    return FlowDefinition(
        tuple(StepDefinition(f"step-{i}", _noop_step, source=(i == 0)) for i in range(step_count))
    )


@dataclass
class Dataset:
    """The generated events of (d), in the order the engine emits them (flows interleaved),
    with what each scenario needs prepared ahead (not timed)."""

    events: list[FlowEvent]
    envelopes: list[str]
    rows: list[tuple[UUID, int, datetime, str, str]]  # event_log columns, payload as JSON text
    outputs: list[tuple[str, ...]]  # artifact hashes per event
    flows: list[UUID]

    @classmethod
    def generate(cls, flows: int, per_flow: int, seed: int = 0, whole: bool = True) -> Dataset:
        """``flows`` flows of ``per_flow`` events, interleaved. ``whole``: each flow is complete
        (FlowCompleted last); else each is the first ``per_flow`` events of a long flow (the
        same mix of kinds and payload sizes whatever ``per_flow``)."""
        base = datetime.now(UTC) - timedelta(hours=1)
        flow_ids = [uuid.UUID(int=(seed << 64) | (i + 1), version=4) for i in range(flows)]
        if whole:
            per = [flow_kinds(seed * 100_000 + i, per_flow) for i in range(flows)]
        else:
            per = [flow_prefix(seed * 100_000 + i, per_flow) for i in range(flows)]
        events: list[FlowEvent] = []
        tick = 0
        for position in range(per_flow):
            for flow, kinds in zip(flow_ids, per, strict=True):
                events.append(
                    FlowEvent(position, flow, kinds[position], base + timedelta(microseconds=tick))
                )
                tick += 7
        return cls.of(events, flow_ids)

    @classmethod
    def of(cls, events: list[FlowEvent], flows: list[UUID]) -> Dataset:
        from chem_persistence.producer.wire import encode_envelope

        envelopes = [encode_envelope(e) for e in events]
        rows = [(e.flow_id, e.seq, e.ts, e.event_type, dumps(encode_kind(e.kind))) for e in events]
        outputs = [e.kind.outputs if isinstance(e.kind, StepFinished) else () for e in events]
        return cls(events, envelopes, rows, outputs, flows)

    @property
    def artifact_rows(self) -> int:
        return len({h for hashes in self.outputs for h in hashes})

    def head(self, n: int) -> Dataset:
        return Dataset(
            self.events[:n], self.envelopes[:n], self.rows[:n], self.outputs[:n], self.flows
        )

    def by_flow(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for event, envelope in zip(self.events, self.envelopes, strict=True):
            grouped.setdefault(str(event.flow_id), []).append(envelope)
        return grouped

    def describe(self) -> dict[str, Any]:
        payload = [len(r[4].encode()) for r in self.rows]
        envelope = [len(e.encode()) for e in self.envelopes]
        kinds: dict[str, int] = {}
        for e in self.events:
            kinds[e.event_type] = kinds.get(e.event_type, 0) + 1
        return {
            "events": len(self.events),
            "flows": len(self.flows),
            "events_per_flow": len(self.events) // max(1, len(self.flows)),
            "avg_payload_bytes": round(statistics.mean(payload), 1),
            "avg_envelope_bytes": round(statistics.mean(envelope), 1),
            "artifact_rows": self.artifact_rows,
            "kinds": kinds,
        }


def flow_prefix(seed: int, count: int) -> list[FlowEventKind]:
    """The first ``count`` events of a long generated flow (no FlowCompleted)."""
    return flow_kinds(seed, count + 40)[:count]


class KindSource:
    """The kinds of many flows without holding each flow's own list: ``templates`` generated
    flows, flow ``i`` follows template ``i mod templates``; past its end a flow repeats the
    template's middle (positions keep growing, no second FlowInitialized)."""

    def __init__(self, seed: int, templates: int = 64, length: int = 48) -> None:
        self.templates = [flow_prefix(seed + t, length) for t in range(templates)]

    def kind(self, flow_index: int, position: int) -> FlowEventKind:
        kinds = self.templates[flow_index % len(self.templates)]
        if position < len(kinds):
            return kinds[position]
        return kinds[1 + (position - 1) % (len(kinds) - 1)]
