"""Hypothesis strategies for the domain's values, shared by every test suite.

Everything generated here is what the engine may legitimately emit, and therefore what the
pipeline (Redis, PostgreSQL JSONB, replay) must give back identically: JSON values without
NaN/infinities, U+0000 or lone surrogates; timezone-aware UTC timestamps at microsecond
resolution; one flow's events at consecutive 0-based positions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import msgspec
from hypothesis import strategies as st

from chem_persistence.domain.definition import (
    FlowDefinition,
    StepDefinition,
    StepOutcome,
    StepSuccess,
)
from chem_persistence.domain.events import (
    MESSAGE_ERRORS,
    UNIT_ERRORS,
    Artifact,
    CoreEngineError,
    FlowCompleted,
    FlowEvent,
    FlowEventKind,
    FlowInitialized,
    InvalidTransition,
    MessageError,
    PropertyPreferenceAssigned,
    RetryNotAllowed,
    StepFailed,
    StepFinished,
    StepSignal,
    StepStarted,
    UnitError,
)
from chem_persistence.domain.json_values import JsonValue

K = TypeVar("K", bound=msgspec.Struct)

# Bounds of the JSON integers we generate: what a Rust engine (i64) can emit.
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
# Largest step index we generate by default: PostgreSQL ``int`` range, like ``flow_seq``.
MAX_STEP_INDEX = 2**31 - 1
# Timestamps in a range every store (PostgreSQL timestamptz included) represents exactly.
MIN_TS = datetime(1990, 1, 1)
MAX_TS = datetime(2200, 1, 1)


# --- JSON values ------------------------------------------------------------------------------


def texts(*, min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    """Any Unicode text PostgreSQL can store: no U+0000, no lone surrogate."""
    return st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        min_size=min_size,
        max_size=max_size,
    )


def identifiers() -> st.SearchStrategy[str]:
    """Step ids, signal names, policy ids: short, non-empty, sometimes non-ASCII."""
    return st.one_of(
        st.sampled_from(["acquire", "properties", "choose", "report", "β-step", "步骤"]),
        texts(min_size=1, max_size=12),
    )


def json_ints() -> st.SearchStrategy[int]:
    return st.integers(min_value=I64_MIN, max_value=I64_MAX)


def json_floats(*, allow_negative_zero: bool = False) -> st.SearchStrategy[float]:
    """Finite floats, including the extremes (5e-324, 1e16, 1.7976931348623157e308).

    ``-0.0`` is off by default: PostgreSQL ``numeric`` has no negative zero, so JSONB gives
    it back as ``0.0`` — equal under ``==`` but with a different canonical JSON (and hash).
    """
    floats = st.floats(allow_nan=False, allow_infinity=False)
    if allow_negative_zero:
        return floats
    return floats.map(lambda x: 0.0 if x == 0 else x)


def json_scalars() -> st.SearchStrategy[JsonValue]:
    return st.one_of(st.none(), st.booleans(), json_ints(), json_floats(), texts())


def json_values(*, max_leaves: int = 20) -> st.SearchStrategy[JsonValue]:
    """Any JSON value the pipeline must carry unchanged, types included (int stays int)."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(texts(max_size=8), children, max_size=5),
        ),
        max_leaves=max_leaves,
    )


def json_objects() -> st.SearchStrategy[dict[str, JsonValue]]:
    return st.dictionaries(texts(max_size=8), json_values(max_leaves=8), max_size=5)


# --- hashes, errors, kinds --------------------------------------------------------------------


def hashes() -> st.SearchStrategy[str]:
    """64 lowercase hex characters, the shape of every BLAKE3 hash in the domain."""
    return st.integers(min_value=0, max_value=2**256 - 1).map(lambda n: f"{n:064x}")


def core_errors() -> st.SearchStrategy[CoreEngineError]:
    """Every CoreEngineError variant: unit, message (newtype) and struct."""
    return st.one_of(
        st.builds(UnitError, st.sampled_from(UNIT_ERRORS)),
        st.builds(MessageError, st.sampled_from(MESSAGE_ERRORS), texts()),
        st.builds(InvalidTransition, identifiers(), identifiers()),
        st.builds(RetryNotAllowed, identifiers(), texts()),
    )


def step_indices(max_index: int = MAX_STEP_INDEX) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=max_index)


def event_kinds(
    max_step_index: int = MAX_STEP_INDEX, *, json_leaves: int = 20
) -> st.SearchStrategy[FlowEventKind]:
    """One of the seven kinds, with any legal field values (``json_leaves`` bounds the JSON)."""
    index = step_indices(max_step_index)
    data = json_values(max_leaves=json_leaves)
    return st.one_of(
        st.builds(FlowInitialized, hashes(), st.integers(min_value=0, max_value=1000)),
        st.builds(StepStarted, index, identifiers()),
        st.builds(
            StepFinished,
            index,
            identifiers(),
            st.lists(hashes(), max_size=4).map(tuple),
            hashes(),
        ),
        st.builds(StepFailed, index, identifiers(), core_errors(), hashes()),
        st.builds(StepSignal, index, identifiers(), identifiers(), data),
        st.builds(PropertyPreferenceAssigned, texts(), identifiers(), hashes(), data),
        st.builds(FlowCompleted, hashes()),
    )


# --- events -----------------------------------------------------------------------------------


def timestamps() -> st.SearchStrategy[datetime]:
    """Timezone-aware UTC, microsecond resolution (what PostgreSQL timestamptz keeps)."""
    return st.datetimes(min_value=MIN_TS, max_value=MAX_TS, timezones=st.just(UTC))


def flow_ids() -> st.SearchStrategy[UUID]:
    return st.uuids()


@st.composite
def flow_events(
    draw: st.DrawFn,
    flow_id: UUID | None = None,
    *,
    min_size: int = 0,
    max_size: int = 20,
    max_step_index: int = MAX_STEP_INDEX,
    json_leaves: int = 20,
) -> list[FlowEvent]:
    """One flow's events as a store holds them: positions 0..n-1, timestamps non-decreasing."""
    fid = flow_id if flow_id is not None else draw(flow_ids())
    kinds = draw(
        st.lists(
            event_kinds(max_step_index, json_leaves=json_leaves),
            min_size=min_size,
            max_size=max_size,
        )
    )
    stamps = sorted(draw(st.lists(timestamps(), min_size=len(kinds), max_size=len(kinds))))
    return [
        FlowEvent(seq, fid, kind, ts)
        for seq, (kind, ts) in enumerate(zip(kinds, stamps, strict=True))
    ]


@st.composite
def flow_event(draw: st.DrawFn, flow_id: UUID | None = None) -> FlowEvent:
    """A single event at any position."""
    fid = flow_id if flow_id is not None else draw(flow_ids())
    return FlowEvent(
        draw(st.integers(min_value=0, max_value=MAX_STEP_INDEX)),
        fid,
        draw(event_kinds()),
        draw(timestamps()),
    )


def artifacts() -> st.SearchStrategy[Artifact]:
    return st.builds(Artifact, identifiers(), json_values(), st.one_of(st.none(), json_objects()))


# --- definitions (for replay) -----------------------------------------------------------------


def _no_op(inputs: Sequence[Artifact], params: JsonValue) -> StepOutcome:
    return StepSuccess(())


def definition_of(step_ids: Sequence[str]) -> FlowDefinition:
    """A definition with these step ids whose steps do nothing: enough for replay."""
    return FlowDefinition(
        tuple(StepDefinition(step_id, _no_op, source=i == 0) for i, step_id in enumerate(step_ids))
    )


def definitions(max_steps: int = 6) -> st.SearchStrategy[FlowDefinition]:
    return st.lists(identifiers(), min_size=1, max_size=max_steps).map(definition_of)


# --- comparison -------------------------------------------------------------------------------


def same_json(a: object, b: object) -> bool:
    """Equal *and* of the same JSON types all the way down (``1 != 1.0``, ``True != 1``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return repr(a) == repr(b)  # tells -0.0 from 0.0
    return a == b


def forced(kind: K, **changes: object) -> K:
    """A copy of ``kind`` with fields forced to values its own checks refuse (past the
    constructor): what the producer must still refuse, by name."""
    result = copy.copy(kind)
    for name, value in changes.items():
        msgspec.structs.force_setattr(result, name, value)
    return result
