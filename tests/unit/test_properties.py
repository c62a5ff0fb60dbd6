"""Properties over generated kinds, events and JSON values (hypothesis)."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from chem_persistence.domain.canonical import canonical_json, hash_value, is_hash, step_fingerprint
from chem_persistence.domain.codec import decode_kind, encode_kind
from chem_persistence.domain.definition import FlowDefinition
from chem_persistence.domain.events import FlowEvent, FlowEventKind
from chem_persistence.domain.json_values import JsonValue, check_json, dumps
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.domain.store import InMemoryEventStore
from tests.strategies import (
    definitions,
    event_kinds,
    flow_events,
    hashes,
    json_values,
    same_json,
)
from tests.unit.test_json_values import jsonb_text

FAST = settings(max_examples=150, deadline=None)


@FAST
@given(event_kinds())
def test_kinds_survive_encode_json_text_decode(kind: FlowEventKind) -> None:
    for text in (json.dumps(encode_kind(kind)), dumps(encode_kind(kind))):
        decoded = decode_kind(json.loads(text))
        assert decoded == kind
        assert type(decoded) is type(kind)
        # and the JSON is the same JSON, types included (1.0 stays a float)
        assert same_json(encode_kind(decoded), encode_kind(kind))


@FAST
@given(event_kinds())
def test_kinds_survive_jsonb(kind: FlowEventKind) -> None:
    back = json.loads(jsonb_text(dumps(encode_kind(kind))))
    assert same_json(back, encode_kind(kind))
    assert decode_kind(back) == kind


@st.composite
def _events_and_definition(draw: st.DrawFn) -> tuple[list[FlowEvent], FlowDefinition]:
    definition = draw(definitions())
    # indices up to a little past the end, so out-of-range events are exercised too
    events = draw(flow_events(max_size=20, max_step_index=len(definition.steps) + 1, json_leaves=3))
    return events, definition


@settings(max_examples=100, deadline=None)  # each example is a whole flow: keep it quick
@given(_events_and_definition(), st.data())
def test_two_stores_give_identical_replay(
    case: tuple[list[FlowEvent], FlowDefinition], data: st.DataObject
) -> None:
    events, definition = case
    one_by_one, in_batches = InMemoryEventStore(), InMemoryEventStore()
    flow_id = events[0].flow_id if events else data.draw(st.uuids())
    for event in events:
        one_by_one.append(flow_id, event.kind, event.ts)
    # batches of random sizes, each overlapping the previous one by a random amount
    start = 0
    while start < len(events):
        back = data.draw(st.integers(min_value=0, max_value=start))
        size = data.draw(st.integers(min_value=1, max_value=len(events) - start))
        in_batches.append_batch(flow_id, events[start - back : start + size])
        start += size
    assert one_by_one.list(flow_id) == in_batches.list(flow_id) == events
    replay_a = InMemoryFlowRepository.load(flow_id, one_by_one.list(flow_id), definition)
    replay_b = InMemoryFlowRepository.load(flow_id, in_batches.list(flow_id), definition)
    assert replay_a == replay_b
    assert len(replay_a.steps) == len(definition.steps)


@FAST
@given(json_values())
def test_json_values_survive_check_dumps_loads_with_types(value: JsonValue) -> None:
    check_json(value, "value")
    text = dumps(value)
    float_tokens: list[str] = []

    def parse_float(token: str) -> float:
        float_tokens.append(token)
        return float(token)

    assert same_json(json.loads(text, parse_float=parse_float), value)
    assert not any("e+" in token or "E" in token for token in float_tokens)
    assert same_json(json.loads(jsonb_text(text)), value)


@FAST
@given(json_values())
def test_canonical_hash_ignores_key_order(value: JsonValue) -> None:
    def reverse_keys(v: JsonValue) -> JsonValue:
        if isinstance(v, dict):
            return {k: reverse_keys(v[k]) for k in reversed(list(v))}
        if isinstance(v, list):
            return [reverse_keys(x) for x in v]
        return v

    assert canonical_json(reverse_keys(value)) == canonical_json(value)
    assert hash_value(reverse_keys(value)) == hash_value(value)
    assert is_hash(hash_value(value))


@FAST
@given(st.lists(hashes(), max_size=6), st.randoms(use_true_random=False), json_values())
def test_step_fingerprint_ignores_input_order(
    inputs: list[str], rnd: random.Random, params: JsonValue
) -> None:
    shuffled = list(inputs)
    rnd.shuffle(shuffled)

    def fp(hashes_: list[str]) -> str:
        return step_fingerprint(
            engine_version="v",
            step_id="s",
            input_hashes=hashes_,
            params=params,
            definition_hash="d",
        )

    assert fp(shuffled) == fp(inputs)
