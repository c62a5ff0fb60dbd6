"""JSON values the pipeline stores: what ``check_json`` refuses and what ``dumps`` writes.

``jsonb_text`` imitates what PostgreSQL does to a JSON text stored in a JSONB column and read
back: every number becomes a ``numeric``, printed in fixed notation with the scale it was
written with (``1e16`` → ``10000000000000000``, ``1e-07`` → ``0.0000001``,
``1.50`` → ``1.50``). It lets these tests show the JSONB float problem without a server.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from chem_persistence.domain.json_values import InvalidJson, JsonValue, check_json, dumps
from tests.strategies import same_json


def _render(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_render(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def jsonb_text(text: str) -> str:
    """The text PostgreSQL gives back for ``text`` stored as JSONB (numbers only)."""
    return _render(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def test_the_jsonb_imitation_shows_the_problem_dumps_solves() -> None:
    # plain json.dumps writes 1e16 as "1e+16"; JSONB prints it back as an integer
    assert jsonb_text(json.dumps(1e16)) == "10000000000000000"
    assert type(json.loads(jsonb_text(json.dumps(1e16)))) is int
    assert jsonb_text("1e-07") == "0.0000001"
    assert jsonb_text("1.50") == "1.50"


# --- check_json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        2**80,
        1.5,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        "",
        "β-carotène 苯 😀",
        "\u2028\x01\x7f",
        [],
        {},
        {"a": [1, {"b": None, "c": [True, "x", 2.5]}], "": {"": []}},
    ],
    ids=repr,
)
def test_check_json_accepts_storable_values(value: JsonValue) -> None:
    check_json(value, "data")  # raises InvalidJson if refused
    assert json.loads(dumps(value)) == value


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@pytest.mark.parametrize(
    ("value", "field", "shown"),
    [
        pytest.param(float("nan"), "data", "nan", id="nan"),
        pytest.param(float("inf"), "data", "inf", id="inf"),
        pytest.param(float("-inf"), "data", "-inf", id="-inf"),
        pytest.param({"a": [1, float("nan")]}, "data.a[1]", "nan", id="nested-nan"),
        pytest.param([[0, [float("inf")]]], "data[0][1][0]", "inf", id="deep-inf"),
        pytest.param({1: "x"}, "data", "1", id="int-key"),
        pytest.param({"a": {None: 1}}, "data.a", "None", id="none-key"),
        pytest.param({"a": {(1, 2): 1}}, "data.a", "(1, 2)", id="tuple-key"),
        pytest.param("a\x00b", "data", "a\\x00b", id="nul"),
        pytest.param({"a": ["ok", "x\x00"]}, "data.a[1]", "x\\x00", id="nested-nul"),
        pytest.param({"k\x00": 1}, "data key", "k\\x00", id="nul-in-key"),
        pytest.param({"o": {"k\x00": 1}}, "data.o key", "k\\x00", id="nested-nul-in-key"),
        pytest.param("\ud800", "data", "\\ud800", id="lone-surrogate"),
        pytest.param(["a", "b\udfff"], "data[1]", "\\udfff", id="nested-lone-surrogate"),
        pytest.param({"\udc80": 1}, "data key", "\\udc80", id="surrogate-key"),
        pytest.param((1, 2), "data", "(1, 2)", id="tuple"),
        pytest.param({"a": [(1,)]}, "data.a[0]", "(1,)", id="nested-tuple"),
        pytest.param({1, 2}, "data", "{1, 2}", id="set"),
        pytest.param(frozenset(), "data", "frozenset()", id="frozenset"),
        pytest.param(b"bytes", "data", "b'bytes'", id="bytes"),
        pytest.param(Decimal("1.5"), "data", "Decimal('1.5')", id="decimal"),
        pytest.param({"a": _Opaque()}, "data.a", "<opaque>", id="object"),
    ],
)
def test_check_json_names_the_offending_path(value: object, field: str, shown: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        check_json(value, "data")
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert shown in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_check_json_reports_the_offending_value() -> None:
    with pytest.raises(InvalidJson) as caught:
        check_json({"a": [1, float("nan")]}, "payload")
    assert caught.value.field == "payload.a[1]"
    assert caught.value.value != caught.value.value  # the NaN itself


# --- dumps ------------------------------------------------------------------------------------

BIG_FLOATS = [1e16, 1e17, 1e22, 1e300, 1.5e300, -1e16, -2.5e200, 1.7976931348623157e308]
SMALL_FLOATS = [5e-324, 1e-7, -1e-7, 2.2250738585072014e-308, 1.5e-300, 0.1, 1e-5]
INTS = [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 10**16, 10**30]


@pytest.mark.parametrize("x", BIG_FLOATS, ids=repr)
def test_dumps_writes_big_floats_without_exponent(x: float) -> None:
    text = dumps(x)
    assert "e+" not in text and "E" not in text
    assert text.endswith(".0")
    back = json.loads(text)
    assert type(back) is float and back == x


@pytest.mark.parametrize("x", BIG_FLOATS, ids=repr)
def test_big_floats_survive_jsonb_as_floats(x: float) -> None:
    back = json.loads(jsonb_text(dumps({"v": [x]})))
    assert same_json(back, {"v": [x]})


@pytest.mark.parametrize("x", SMALL_FLOATS, ids=repr)
def test_small_floats_round_trip(x: float) -> None:
    text = dumps(x)
    assert same_json(json.loads(text), x)
    assert same_json(json.loads(jsonb_text(text)), x)


@pytest.mark.parametrize("x", INTS, ids=repr)
def test_ints_stay_ints(x: int) -> None:
    text = dumps(x)
    assert text == str(x)
    assert same_json(json.loads(text), x)
    assert same_json(json.loads(jsonb_text(dumps([x, 1e16]))), [x, 1e16])


def test_dumps_slow_path_keeps_everything_else_identical() -> None:
    value: JsonValue = {
        "b": [True, False, None, 1, -2, 0.5, "Fe+", "e+", 1e16],
        "a": {"β": 'é\n"q"', "n": 2**70},
        "": [],
        "e": {},
    }
    text = dumps(value)
    assert "e+16" not in text
    assert '"Fe+"' in text and '"e+"' in text  # strings are never rewritten
    assert '"β":"é\\n\\"q\\""' in text  # unicode unescaped, JSON escapes kept
    assert same_json(json.loads(text), value)
    assert same_json(json.loads(jsonb_text(text)), value)
    assert list(json.loads(text)) == ["b", "a", "", "e"]  # insertion order kept


def test_dumps_slow_path_matches_json_dumps_when_no_float_has_an_exponent() -> None:
    value: JsonValue = {"x": [1, 2.5, "é", None, True, {"y": "Fe+"}]}
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert dumps(value) == '{"x":[1,2.5,"é",null,true,{"y":"Fe+"}]}'


def test_dumps_is_compact_and_does_not_escape_unicode() -> None:
    assert dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'
    assert dumps({"a": "é", "b": [1e16]}) == '{"a":"é","b":[10000000000000000.0]}'


@pytest.mark.parametrize("value", [float("nan"), [1e16, float("inf")], {"a": float("-inf")}])
def test_dumps_refuses_nan_and_infinities(value: JsonValue) -> None:
    with pytest.raises(ValueError):
        dumps(value)
