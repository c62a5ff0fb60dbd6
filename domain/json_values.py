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

import math
import re
from typing import TypeAlias

import msgspec

from chem_persistence.domain.errors import InvalidValue

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


class InvalidJson(InvalidValue):
    """A value that is not JSON the pipeline can store and give back identically."""


#: Deepest nesting of arrays and objects accepted. Python's json module and these checks
#: recurse once per level (about 1000 frames in all): without a bound, a deep value raises
#: RecursionError in the producer, or is accepted there and then fails to decode in a worker.
MAX_DEPTH = 512


def check_json(value: object, field: str) -> None:
    """Raise InvalidJson naming the first offending path below ``field``."""
    if not _round_trips(value):  # the usual case: in C, and builds no path string
        _check(value, field, 0)


def _round_trips(value: object) -> bool:
    """Whether ``value`` is plain storable JSON, tested in C: msgspec writes it and reads it
    back equal (a NaN comes back as None, a tuple or a set as a list, a non-string key as a
    string, a Decimal or a datetime as a string; other types do not encode), with no NUL
    escape and fewer brackets than the depth limit. False sends the value to ``_check``,
    which names what is wrong (or, on a false alarm, accepts)."""
    try:
        data = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError: a lone surrogate
        return False
    if b"\\u0000" in data or data.count(b"[") + data.count(b"{") >= MAX_DEPTH:
        return False
    return bool(_DECODER.decode(data) == value)


def text_ok(text: str) -> bool:
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
        check_text(value, field)
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
            check_text(key, f"{field} key")
            _check(item, f"{field}.{key}", depth + 1)
        return
    raise InvalidJson(field, value, f"{type(value).__name__} is not a JSON type")


def check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidJson(field, text, "PostgreSQL JSONB cannot store the NUL character U+0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJson(field, text, "not valid Unicode (lone surrogate)") from None


def dumps(value: object) -> str:
    """Compact JSON whose numbers survive a JSONB round trip with their Python type; a NaN or
    an infinity raises ValueError."""
    return encode_json(value, _floats(value)).decode("utf-8")


def _floats(value: object) -> bool:
    """Whether ``value`` holds a float of magnitude 1e16 or more; ValueError on a NaN or an
    infinity (msgspec would write ``null``)."""
    if isinstance(value, float):
        if -1e16 < value < 1e16:
            return False
        if math.isfinite(value):
            return True
        raise ValueError(f"{value!r} is not JSON")
    if isinstance(value, list | tuple):
        return any([_floats(item) for item in value if not isinstance(item, str | int)])
    if isinstance(value, dict):
        return any([_floats(item) for item in value.values() if not isinstance(item, str | int)])
    if isinstance(value, msgspec.Struct):
        return any([_floats(getattr(value, name)) for name in value.__struct_fields__])
    return False


def encode_json(value: object, big_floats: bool | None = None) -> bytes:
    """``dumps`` as UTF-8 bytes, written by msgspec (C): keys in their order, no whitespace,
    non-ASCII as is. A float of 1e16 or more (written with an exponent) is rewritten in fixed
    notation with ``.0``: exact, since such floats are whole numbers. ``big_floats``: whether
    the value holds such a float, when the caller knows (``check_json`` told it)."""
    if big_floats:
        return _ENCODER.encode(_fixed_floats(value))
    data = _ENCODER.encode(value)
    if big_floats is False or _POSITIVE_EXPONENT.search(data) is None:
        return data
    return _ENCODER.encode(_fixed_floats(value))


#: A JSON number with a positive exponent, as msgspec writes one (``1e16``, ``-6.02e23``):
#: first, or after ``:``, ``,`` or ``[``. Text inside a string may match too; that only costs the
#: slow path, which rewrites the floats themselves.
_POSITIVE_EXPONENT = re.compile(rb"(?:^|[:,\[])-?[0-9]+(?:\.[0-9]+)?e[0-9]")
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def _fixed_floats(value: object) -> object:
    """``value`` as plain JSON values, every float of magnitude 1e16 or more as raw JSON in
    fixed notation."""
    if isinstance(value, float):
        return msgspec.Raw(f"{value:.1f}".encode()) if abs(value) >= 1e16 else value
    if isinstance(value, list | tuple):
        return [_fixed_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: _fixed_floats(item) for key, item in value.items()}
    if isinstance(value, msgspec.Struct):
        return _fixed_floats(msgspec.to_builtins(value))  # its own fields, defaults omitted
    return value
