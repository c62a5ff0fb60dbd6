"""Canonical JSON and BLAKE3 hashing, against golden vectors.

The hex digests below were computed once with the ``blake3`` package directly from the
canonical bytes written next to them (``blake3(b'...').hexdigest()``); they are literals on
purpose, so that a change in canonicalisation or hashing shows up here.
"""

from __future__ import annotations

import re

import pytest

from chem_persistence.domain.canonical import (
    HASH_HEX_LENGTH,
    canonical_json,
    definition_hash,
    flow_fingerprint,
    hash_text,
    hash_value,
    is_hash,
    step_fingerprint,
    with_policy,
)
from chem_persistence.domain.definition import FlowDefinition, StepDefinition, StepSuccess
from chem_persistence.domain.events import Artifact
from chem_persistence.domain.json_values import JsonValue

# blake3(b'{"a":[2,1],"b":1}')
HASH_AB = "6cc3cad819aa41e422752bc539aa404e002798393ecf2f7ee6ba67146fb484de"
# blake3(b'null')
HASH_NULL = "03f88b99c3d8073bba8948d6e762aac443b265f606cc05abd4d172f03a4def6a"
# blake3(b'[]')
HASH_EMPTY_LIST = "d53d18c23212ea7b6300594bb89bce60218f6eff2b9d628b8cc42d3e79bbd5ab"
# blake3('{"name":"β-carotène"}'.encode("utf-8"))
HASH_UNICODE = "856be45a73ca4383b45b62c39e845be399a7e30585ddbe8759c9d32e826c7460"
# blake3(b'1.5')
HASH_FLOAT = "fa2bb4fa06828a1a7439b284a4753287a6e1b7f558d9c2948fa22d7bf64d4543"
# blake3(b'true')
HASH_TRUE = "acc8a7699a2bf4cbd05f69678eac4fc236572041c28dfd0ab558e5fcf2ab6540"
# blake3(b'""')
HASH_EMPTY_STRING = "1286f4d583fcffb2849e654c9ec78d95c03e83bf73d6b4c18b21df1dda49c7fa"
# blake3(b'["acquire","properties","report"]')
HASH_DEFINITION = "1a81f6f66f19e084841eafd70d4caf0e11f77ded7e779ac2d29ea45aea0df787"
# blake3(b'{"base":"x","policy_params_hash":"y"}')
HASH_WITH_POLICY = "5e303dd41623fd87e5a4fa6807e25bb07245f0a88ad5a0d7ad4e187c62d4d64e"
# blake3(b'["a","b"]')
HASH_A_B = "5c6dd92419da90390f1f6e36d6b45d329d35e1d6a94568893a4e6c0c2dca4ddf"
# blake3(b'{"definition_hash":"d","engine_version":"v","input_hashes":["a","b"],'
#        b'"params":{"k":1},"step_id":"s"}')
HASH_STEP = "684da9c96a651d7981d6807d690b717b2e8263ef24ba3777ddb45dd92d4032f3"

HEX64 = re.compile(r"[0-9a-f]{64}")


# --- canonical JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [2, 1]}, '{"a":[2,1],"b":1}'),
        ({"z": {"y": 1, "x": [{"d": 0, "c": None}]}}, '{"z":{"x":[{"c":null,"d":0}],"y":1}}'),
        ({"name": "β-carotène"}, '{"name":"β-carotène"}'),
        (["苯", "ацетон", "😀"], '["苯","ацетон","😀"]'),
        ([True, False, None, 0, -1, 1.5], "[true,false,null,0,-1,1.5]"),
        ({"B": 1, "a": 2, "_": 3, "10": 4, "9": 5}, '{"10":4,"9":5,"B":1,"_":3,"a":2}'),
        ('tab\tquote"back\\slash', '"tab\\tquote\\"back\\\\slash"'),
        ([], "[]"),
        ({}, "{}"),
    ],
)
def test_canonical_json_golden(value: JsonValue, expected: str) -> None:
    assert canonical_json(value) == expected


def test_canonical_json_has_no_escaped_unicode_and_no_whitespace() -> None:
    text = canonical_json({"name": "β-carotène", "list": [1, 2], "nested": {"k": "v"}})
    assert "\\u" not in text
    assert " " not in text and "\n" not in text


def test_canonical_json_does_not_depend_on_key_insertion_order() -> None:
    assert canonical_json({"a": 1, "b": {"c": 1, "d": 2}}) == canonical_json(
        {"b": {"d": 2, "c": 1}, "a": 1}
    )


def test_canonical_json_keeps_array_order() -> None:
    assert canonical_json([2, 1]) != canonical_json([1, 2])


@pytest.mark.parametrize("value", [float("nan"), [float("inf")], {"x": float("-inf")}])
def test_canonical_json_refuses_nan_and_infinities(value: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


# --- hashes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [2, 1]}, HASH_AB),
        ({"a": [2, 1], "b": 1}, HASH_AB),
        (None, HASH_NULL),
        ([], HASH_EMPTY_LIST),
        ({"name": "β-carotène"}, HASH_UNICODE),
        (1.5, HASH_FLOAT),
        (True, HASH_TRUE),
        ("", HASH_EMPTY_STRING),
    ],
)
def test_hash_value_golden(value: JsonValue, expected: str) -> None:
    assert hash_value(value) == expected


def test_hash_text_hashes_the_utf8_bytes() -> None:
    assert hash_text('{"a":[2,1],"b":1}') == HASH_AB
    assert hash_text('{"name":"β-carotène"}') == HASH_UNICODE


@pytest.mark.parametrize(
    "value", [None, 0, 1, "x", [1, 2], {"k": "v"}, {"name": "β-carotène"}, 1e300]
)
def test_hashes_are_64_lowercase_hex(value: JsonValue) -> None:
    digest = hash_value(value)
    assert HASH_HEX_LENGTH == 64
    assert HEX64.fullmatch(digest)
    assert is_hash(digest)


def test_distinct_values_hash_differently() -> None:
    values: list[JsonValue] = [None, 0, 1, 1.0, True, "1", [1], {"1": 1}, "", [], {}]
    assert len({hash_value(v) for v in values}) == len(values)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HASH_AB, True),
        ("0" * 64, True),
        (HASH_AB.upper(), False),
        (HASH_AB[:-1], False),
        (HASH_AB + "0", False),
        ("g" * 64, False),
        (" " + HASH_AB[1:], False),
        (HASH_AB + "\n", False),
        (None, False),
        (123, False),
    ],
)
def test_is_hash(text: object, expected: bool) -> None:
    assert is_hash(text) is expected


def test_artifact_hash_is_the_hash_of_its_payload_only() -> None:
    a = Artifact("molecule_batch", {"b": 1, "a": [2, 1]}, {"source": "x"})
    b = Artifact("other", {"a": [2, 1], "b": 1}, None)
    assert a.hash == HASH_AB
    assert b.hash == a.hash


# --- definition hash --------------------------------------------------------------------------


def test_definition_hash_golden() -> None:
    assert definition_hash(["acquire", "properties", "report"]) == HASH_DEFINITION
    assert definition_hash(("acquire", "properties", "report")) == HASH_DEFINITION


def test_definition_hash_depends_on_step_order() -> None:
    assert definition_hash(["properties", "acquire", "report"]) != HASH_DEFINITION


def test_flow_definition_uses_the_definition_hash() -> None:
    def run(inputs: object, params: object) -> StepSuccess:
        return StepSuccess(())

    definition = FlowDefinition(
        tuple(StepDefinition(s, run) for s in ("acquire", "properties", "report"))
    )
    assert definition.step_ids == ("acquire", "properties", "report")
    assert definition.definition_hash == HASH_DEFINITION


# --- step fingerprint -------------------------------------------------------------------------

BASE: dict[str, object] = {
    "engine_version": "v",
    "step_id": "s",
    "input_hashes": ["b", "a"],
    "params": {"k": 1},
    "definition_hash": "d",
}


def _fp(**changes: object) -> str:
    return step_fingerprint(**{**BASE, **changes})  # type: ignore[arg-type]


def test_step_fingerprint_golden() -> None:
    # the inputs are sorted before hashing: ["b", "a"] hashes as ["a", "b"]
    assert _fp() == HASH_STEP


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"k": 2}},
        {"params": {"k": 1.0}},
        {"params": None},
        {"input_hashes": ["a"]},
        {"input_hashes": ["a", "b", "c"]},
        {"input_hashes": []},
        {"step_id": "t"},
        {"engine_version": "v2"},
        {"definition_hash": "e"},
    ],
    ids=repr,
)
def test_step_fingerprint_changes_with_each_ingredient(change: dict[str, object]) -> None:
    assert _fp(**change) != _fp()


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"], ("b", "a")])
def test_step_fingerprint_ignores_input_order(order: list[str]) -> None:
    assert _fp(input_hashes=order) == HASH_STEP


def test_step_fingerprint_does_not_mutate_the_inputs() -> None:
    inputs = ["b", "a"]
    _fp(input_hashes=inputs)
    assert inputs == ["b", "a"]


# --- with_policy and flow fingerprint ---------------------------------------------------------


def test_with_policy_golden() -> None:
    assert with_policy("x", "y") == HASH_WITH_POLICY


def test_with_policy_depends_on_base_and_params_hash() -> None:
    base = _fp()
    assert with_policy(base, HASH_AB) != base
    assert with_policy(base, HASH_AB) != with_policy(base, HASH_NULL)
    assert with_policy(base, HASH_AB) != with_policy(_fp(step_id="t"), HASH_AB)
    assert with_policy(base, HASH_AB) == hash_value({"base": base, "policy_params_hash": HASH_AB})


def test_flow_fingerprint_golden_and_order_independent() -> None:
    assert flow_fingerprint(["a", "b"]) == HASH_A_B
    assert flow_fingerprint(["b", "a"]) == HASH_A_B
    assert flow_fingerprint(("b", "a")) == HASH_A_B
    assert flow_fingerprint([]) == HASH_EMPTY_LIST


def test_flow_fingerprint_depends_on_every_step() -> None:
    fps = [_fp(step_id=s) for s in ("a", "b", "c")]
    whole = flow_fingerprint(fps)
    assert flow_fingerprint(list(reversed(fps))) == whole
    assert flow_fingerprint(fps[:2]) != whole
    assert flow_fingerprint([*fps[:2], with_policy(fps[2], HASH_AB)]) != whole
    assert flow_fingerprint([*fps, fps[0]]) != whole  # a multiset, not a set
