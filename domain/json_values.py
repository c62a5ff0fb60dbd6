"""JSON values the whole pipeline carries unchanged: engine → Redis → PostgreSQL JSONB → replay.

Two facts of PostgreSQL shape this module:
- JSONB cannot hold U+0000, and UTF-8 cannot hold a lone surrogate: such strings are refused
  up front (``check_json``) instead of failing later inside a worker.
- JSONB stores numbers as ``numeric`` and prints them without an exponent, so the float
  ``1e16`` comes back as the integer ``10000000000000000``. ``dumps`` therefore writes every
  float with a positive exponent in fixed notation with a ``.0`` (exact: such floats are whole
  numbers), which JSONB prints back with the ``.0`` and ``json.loads`` reads as a float again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TypeAlias

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


class InvalidJson(ValueError):
    """A value that is not JSON the pipeline can store and give back identically."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"{field}: {why} (got {value!r:.200})")
        self.field = field
        self.value = value


#: Deepest nesting of arrays and objects accepted. Python's json module and these checks
#: recurse once per level (about 1000 frames in all): without a bound, a deep value raises
#: RecursionError in the producer, or is accepted there and then fails to decode in a worker.
MAX_DEPTH = 512


def check_json(value: object, field: str) -> None:
    """Raise InvalidJson naming the first offending path below ``field``."""
    if not _valid(value, 0):  # the usual case builds no path string
        _check(value, field, 0)


def _valid(value: object, depth: int) -> bool:
    """What ``_check`` accepts, as a bool: the same rules, without naming paths (a hot path:
    every event is checked by the producer and again by the worker)."""
    if isinstance(value, str):
        return _text_ok(value)
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    items: Iterable[object]
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not _text_ok(key):
                return False
        items = value.values()
    else:
        return False
    for item in items:  # scalars inline: one call per container, not per value
        if isinstance(item, str):
            if not _text_ok(item):
                return False
        elif item is None or isinstance(item, bool | int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif not _valid(item, depth + 1):
            return False
    return True


def _text_ok(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(value: object, field: str, depth: int) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJson(field, value, "NaN and infinities are not JSON")
        return
    if isinstance(value, str):
        _check_text(value, field)
        return
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        # Not the value itself: its repr would recurse as deep as the value goes.
        shown = f"<{type(value).__name__} at depth {depth}>"
        raise InvalidJson(field, shown, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{field}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJson(field, key, "object keys must be strings")
            _check_text(key, f"{field} key")
            _check(item, f"{field}.{key}", depth + 1)
        return
    raise InvalidJson(field, value, f"{type(value).__name__} is not a JSON type")


def _check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidJson(field, text, "PostgreSQL JSONB cannot store the NUL character U+0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJson(field, text, "not valid Unicode (lone surrogate)") from None


def dumps(value: JsonValue) -> str:
    """Compact JSON whose numbers survive a JSONB round trip with their Python type."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if "e+" not in text:  # fast path: no float with a positive exponent anywhere
        return text
    return "".join(_encode_slow(value))


def _encode_slow(value: JsonValue) -> list[str]:
    if isinstance(value, float):
        text = repr(value)
        return [f"{value:.1f}" if "e+" in text else text]
    if isinstance(value, list):
        parts = ["["]
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            parts.extend(_encode_slow(item))
        parts.append("]")
        return parts
    if isinstance(value, dict):
        parts = ["{"]
        for i, (key, item) in enumerate(value.items()):
            if i:
                parts.append(",")
            parts.append(json.dumps(key, ensure_ascii=False))
            parts.append(":")
            parts.extend(_encode_slow(item))
        parts.append("}")
        return parts
    return [json.dumps(value, ensure_ascii=False)]
