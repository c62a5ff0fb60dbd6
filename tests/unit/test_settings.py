"""domain.settings: the one dialect every package reads its environment variables in."""

from __future__ import annotations

import pytest

from chem_persistence.domain.errors import InvalidValue
from chem_persistence.domain.settings import (
    InvalidSetting,
    read_bool,
    read_float,
    read_int,
    read_text,
)


def test_unset_and_empty_mean_the_default() -> None:
    for env in ({}, {"X": ""}, {"X": "  "}):
        assert read_int(env, "X", 7, minimum=0) == 7
        assert read_float(env, "X", 0.5, minimum=0) == 0.5
        assert read_bool(env, "X", True) is True
        assert read_text(env, "X", "d") == "d"


def test_values_are_read() -> None:
    assert read_int({"X": " 42 "}, "X", 0, minimum=0) == 42
    assert read_float({"X": "2.5"}, "X", 0, minimum=0) == 2.5
    assert read_bool({"X": "Yes"}, "X", False) is True
    assert read_bool({"X": "off"}, "X", True) is False
    assert read_text({"X": "chem"}, "X", "d") == "chem"


@pytest.mark.parametrize(
    ("call", "raw"),
    [
        (lambda env: read_int(env, "X", 0, minimum=0), "1.5"),
        (lambda env: read_int(env, "X", 0, minimum=0), "ten"),
        (lambda env: read_int(env, "X", 0, minimum=1), "0"),
        (lambda env: read_int(env, "X", 0, minimum=0, maximum=9), "10"),
        (lambda env: read_float(env, "X", 0, minimum=0), "nan"),
        (lambda env: read_float(env, "X", 0, minimum=0), "inf"),
        (lambda env: read_float(env, "X", 0, minimum=0), "-1"),
        (lambda env: read_bool(env, "X", False), "maybe"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(call, raw: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidSetting) as caught:
        call({"X": raw})
    assert isinstance(caught.value, InvalidValue) and isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("X: ") and repr(raw) in str(caught.value)
    assert (caught.value.field, caught.value.value) == ("X", raw)


def test_the_callers_error_class_is_raised() -> None:
    class Mine(InvalidSetting):
        pass

    with pytest.raises(Mine):
        read_int({"X": "x"}, "X", 0, minimum=0, error=Mine)
