"""Equality where it decides: is an event at an occupied position an identical re-append?

``stored_form`` is the canonical JSON of the kind as storage gives it back — type-exact
(``1``, ``1.0`` and ``true`` differ), independent of key order, with ``-0.0`` as ``0.0``
because PostgreSQL JSONB has no negative zero.
"""

from __future__ import annotations

from chem_persistence.domain.canonical import canonical_json
from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.events import FlowEventKind
from chem_persistence.domain.json_values import JsonValue


def stored_form(kind: FlowEventKind) -> str:
    """The kind's canonical JSON as storage keeps it: two kinds are the same event payload
    exactly when these are equal. Type-exact (``1``, ``1.0``, ``true`` differ), key order
    does not matter (JSONB does not keep it), ``-0.0`` is ``0.0`` (JSONB cannot hold it)."""
    payload = encode_kind(kind)
    text = canonical_json(payload)
    if "-0.0" in text:  # rare: look for real negative zeros, not text that contains "-0.0"
        text = canonical_json(_without_negative_zero(payload))
    return text


def _without_negative_zero(value: JsonValue) -> JsonValue:
    if isinstance(value, float):
        return 0.0 if value == 0.0 else value
    if isinstance(value, list):
        return [_without_negative_zero(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_negative_zero(item) for key, item in value.items()}
    return value
