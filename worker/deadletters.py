"""Dead letters: a parked flow's refused head event, with why, and the operator's two exits.

A record holds the reason (the error's class), its message, the SQLSTATE when PostgreSQL gave
one, the flow position, the time, and the entry exactly as it was queued.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis import Redis
from rq import Queue

from eventlog.errors import sqlstate_of
from producer.jobs import enqueue_drain
from producer.scripts import Scripts
from producer.wire import Keys, now_ms

log = logging.getLogger(__name__)


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def make_record(entry: bytes, exc: BaseException, position: int | None) -> str:
    record: dict[str, Any] = {
        "reason": type(exc).__name__,
        "error": printable(str(exc))[:2000],
        "sqlstate": sqlstate_of(exc),
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


@dataclass(frozen=True)
class ParkedFlow:
    flow_id: str
    reason: str
    parked_at: float  # unix seconds
    dead_letters: int
    queued: int


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, queue: Queue) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.queue = queue

    def parked(self) -> list[ParkedFlow]:
        flows = cast(
            list[tuple[bytes, float]],
            self.redis.zrange(self.keys.parked_index, 0, -1, withscores=True),
        )
        pipe = self.redis.pipeline(transaction=False)
        for raw, _ in flows:
            flow = raw.decode()
            pipe.get(self.keys.parked(flow))
            pipe.llen(self.keys.dead(flow))
            pipe.llen(self.keys.queue(flow))
        values = pipe.execute()
        result = []
        for i, (raw, score) in enumerate(flows):
            reason, dead, queued = values[3 * i : 3 * i + 3]
            text = reason.decode("utf-8", "replace") if reason else "(no reason recorded)"
            result.append(ParkedFlow(raw.decode(), text, score / 1000, dead, queued))
        return result

    def show(self, flow_id: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.redis.lrange(self.keys.dead(flow_id), 0, -1)]

    def retry(self, flow_id: str) -> int:
        """Put the dead letters back at the head of the queue, in order, and resume the flow."""
        records = self.show(flow_id)
        if not records:
            raise LookupError(
                f"flow {flow_id} has no dead letters; see `chem-persistence dlq list`"
            )
        entries = [entry_of(r) for r in records]
        self._resume(flow_id, len(records), entries)
        log.warning("action=dlq_retry flow=%s entries=%d", flow_id, len(entries))
        return len(entries)

    def discard(self, flow_id: str) -> int:
        """Drop the dead letters for good (logged in full) and resume the flow.

        Later events are still applied only at their own positions: if the discarded event
        left a hole, the next one is refused as a gap and the flow parks again.
        """
        records = self.show(flow_id)
        if not records:
            raise LookupError(
                f"flow {flow_id} has no dead letters; see `chem-persistence dlq list`"
            )
        for record in records:
            log.warning("action=dlq_discard flow=%s record=%s", flow_id, json.dumps(record))
        self._resume(flow_id, len(records), [])
        return len(records)

    def _resume(self, flow_id: str, seen: int, entries: list[bytes]) -> None:
        keys = [
            self.keys.queue(flow_id),
            self.keys.dead(flow_id),
            self.keys.parked(flow_id),
            self.keys.pending,
            self.keys.parked_index,
        ]
        now = now_ms()
        result = self.scripts.resume(keys=keys, args=[flow_id, now, seen, *entries])
        if result == -1:
            raise RuntimeError(f"flow {flow_id}: its dead letters changed meanwhile; run it again")
        if result == 1:
            enqueue_drain(self.queue, flow_id, self.keys.job(flow_id))
