"""Reading settings from an environment mapping: one dialect for every package.

An empty variable means unset (the default applies); a value that cannot be used is an
``InvalidSetting`` naming the variable and the value. Pure functions over a mapping: the
callers pass ``os.environ`` (the domain itself reads nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from chem_persistence.domain.errors import InvalidValue

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class InvalidSetting(InvalidValue):
    """An environment variable with a value the program cannot use."""


def raw(env: Mapping[str, str], name: str) -> str | None:
    """The variable's text, or None when unset or empty."""
    text = env.get(name)
    return text if text is not None and text.strip() else None


def read_text(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's text, or ``default`` (the callers check its shape)."""
    return raw(env, name) or default


def read_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int,
    maximum: int | None = None,
    error: type[InvalidSetting] = InvalidSetting,
) -> int:
    text = raw(env, name)
    if text is None:
        return default
    try:
        value = int(text.strip(), 10)
    except ValueError:
        value = _whole(name, text, error)
    _check_range(name, text, value, minimum, maximum, error)
    return value


def read_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    error: type[InvalidSetting] = InvalidSetting,
) -> float:
    text = raw(env, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise error(name, text, "is not a number") from None
    if not math.isfinite(value):  # NaN compares false with everything: it would pass below
        raise error(name, text, "is not a finite number")
    _check_range(name, text, value, minimum, maximum, error)
    return value


def read_bool(
    env: Mapping[str, str], name: str, default: bool, error: type[InvalidSetting] = InvalidSetting
) -> bool:
    text = raw(env, name)
    if text is None:
        return default
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise error(name, text, f"is not one of {sorted(TRUE_WORDS | FALSE_WORDS)}")


def _whole(name: str, text: str, error: type[InvalidSetting]) -> int:
    """``1e3`` and ``2.0`` are whole numbers too; ``1.5`` and ``ten`` are not."""
    try:
        number = float(text)
    except ValueError:
        raise error(name, text, "is not a whole number") from None
    if not math.isfinite(number) or not number.is_integer():
        raise error(name, text, "is not a whole number")
    return int(number)


def _check_range(
    name: str,
    text: str,
    value: float,
    minimum: float,
    maximum: float | None,
    error: type[InvalidSetting],
) -> None:
    if value < minimum:
        raise error(name, text, f"is below the minimum {minimum:g}")
    if maximum is not None and value > maximum:
        raise error(name, text, f"is above the maximum {maximum:g}")
