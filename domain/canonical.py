"""Canonical JSON and BLAKE3 hashing: the one place where content hashes are computed.

Canonical JSON: object keys sorted, arrays in order, no insignificant whitespace, UTF-8.
A hash is the BLAKE3 digest of that text, as 64 lowercase hex characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from blake3 import blake3

from chem_persistence.domain.json_values import JsonValue

HASH_HEX_LENGTH = 64
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def canonical_json(value: object) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def hash_text(text: str) -> str:
    return blake3(text.encode("utf-8")).hexdigest()


def hash_value(value: object) -> str:
    """BLAKE3 hex of the canonical JSON of ``value``."""
    return hash_text(canonical_json(value))


def is_hash(text: object) -> bool:
    return isinstance(text, str) and _HASH_RE.fullmatch(text) is not None


def definition_hash(step_ids: Sequence[str]) -> str:
    return hash_value(list(step_ids))


def step_fingerprint(
    *,
    engine_version: str,
    step_id: str,
    input_hashes: Sequence[str],
    params: JsonValue,
    definition_hash: str,
) -> str:
    return hash_value(
        {
            "engine_version": engine_version,
            "step_id": step_id,
            "input_hashes": sorted(input_hashes),
            "params": params,
            "definition_hash": definition_hash,
        }
    )


def with_policy(fingerprint: str, policy_params_hash: str) -> str:
    """The fingerprint of a step that assigned a property preference."""
    return hash_value({"base": fingerprint, "policy_params_hash": policy_params_hash})


def flow_fingerprint(step_fingerprints: Sequence[str]) -> str:
    return hash_value(sorted(step_fingerprints))
