"""The dead-letter record: a refused queue entry, kept exactly, with why it was refused.

Written by the worker (into ``<flow>:dead``), read by the operator commands and by a restarted
engine (QueuedEventStore counts a dead-lettered event's position as taken).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def make_record(
    entry: bytes, exc: BaseException, position: int | None, sqlstate: str | None
) -> str:
    record: dict[str, Any] = {
        "reason": type(exc).__name__,
        "error": printable(str(exc))[:2000],
        "sqlstate": sqlstate,
        "position": position,
        "time": datetime.now(UTC).isoformat(),
    }
    try:
        record["entry"] = entry.decode("utf-8")
    except UnicodeDecodeError:
        record["entry_b64"] = base64.b64encode(entry).decode("ascii")
    return json.dumps(record, ensure_ascii=False)


def entry_of(record: dict[str, Any]) -> bytes:
    if "entry_b64" in record:
        return base64.b64decode(record["entry_b64"])
    return str(record["entry"]).encode("utf-8")


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """A record as written by ``make_record``, or None if it is not one."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not ("entry" in data or "entry_b64" in data):
        return None
    return data
