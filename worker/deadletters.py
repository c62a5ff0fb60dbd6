"""Dead letters: a parked flow's refused head event, with why, and the operator's two exits.

A record holds the reason (the error's class), its message, the SQLSTATE when PostgreSQL gave
one, the flow position, the time, and the entry exactly as it was queued (producer/dead_letter).
Both exits are checked against the dead letters' generation (bumped on every change), so a
stale command (another operator acted meanwhile) changes nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from chem_persistence.producer.dead_letter import entry_of, parse_record
from chem_persistence.producer.jobs import EMIT_MAX_SWEEPS, QUEUED_SWEEP_TTL_MS
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.producer.wire import InvalidEvent, decode_envelope

log = logging.getLogger(__name__)


class StaleCommand(RuntimeError):
    """The dead letters changed since they were read (another operator acted): nothing done."""


@dataclass(frozen=True)
class ParkedFlow:
    flow_id: str
    reason: str
    parked_at: float  # unix seconds
    dead_letters: int
    queued: int
    generation: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class DeadLetters:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        start_sweep: Callable[[str, int], None],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.start_sweep = start_sweep

    def parked(self) -> list[ParkedFlow]:
        result = []
        for shard in self.keys.all_shards():
            flows = cast(
                list[tuple[bytes, float]], self.redis.zrange(shard.parked, 0, -1, withscores=True)
            )
            pipe = self.redis.pipeline(transaction=False)
            for raw, _ in flows:
                flow = raw.decode()
                pipe.get(shard.reason(flow))
                pipe.llen(shard.dead(flow))
                pipe.llen(shard.queue(flow))
                pipe.get(shard.dead_generation(flow))
            values = pipe.execute() if flows else []
            for i, (raw, score) in enumerate(flows):
                reason, dead, queued, gen = values[4 * i : 4 * i + 4]
                text = reason.decode("utf-8", "replace") if reason else "(no reason recorded)"
                result.append(
                    ParkedFlow(raw.decode(), text, score / 1000, dead, queued, int(gen or 0))
                )
        return result

    def show(self, flow_id: str) -> list[dict[str, Any]]:
        shard = self.keys.for_flow(flow_id)
        raw = cast(list[bytes], self.redis.lrange(shard.dead(flow_id), 0, -1))
        return [r for r in (parse_record(x) for x in raw) if r is not None]

    def retry(self, flow_id: str, expected_generation: int | None = None) -> int:
        """Put the dead letters back among the queued events, ordered by position (so the
        events that fill a gap go first), and resume the flow.

        ``expected_generation``: the generation the operator looked at (the dashboard's
        confirmation); if the dead letters moved on since, nothing is done (StaleCommand).
        """
        generation, records, queued = self._read(flow_id, expected_generation)
        dead = [entry_of(r) for r in records]
        merged = sorted(dead + queued, key=_position)  # stable: a dead letter before its twin
        self._resume(flow_id, generation, len(queued), merged)
        log.warning("action=dlq_retry flow=%s entries=%d", flow_id, len(dead))
        return len(dead)

    def discard(self, flow_id: str, expected_generation: int | None = None) -> int:
        """Drop the dead letters for good (logged in full) and resume the flow.

        Later events are still applied only at their own positions: if the discarded event
        left a hole, the next one is refused as a gap and the flow parks again.
        """
        generation, records, _ = self._read(flow_id, expected_generation)
        for record in records:
            log.warning("action=dlq_discard flow=%s record=%s", flow_id, json.dumps(record))
        self._resume(flow_id, generation, 0, [])
        return len(records)

    def _read(
        self, flow_id: str, expected_generation: int | None = None
    ) -> tuple[int, list[dict[str, Any]], list[bytes]]:
        shard = self.keys.for_flow(flow_id)
        pipe = self.redis.pipeline(transaction=True)  # one consistent view
        pipe.get(shard.dead_generation(flow_id))
        pipe.lrange(shard.dead(flow_id), 0, -1)
        pipe.lrange(shard.queue(flow_id), 0, -1)
        gen, raw, queued = pipe.execute()
        if expected_generation is not None and int(gen or 0) != expected_generation:
            raise StaleCommand(
                f"flow {flow_id}: its dead letters changed since they were read"
                f" (generation {int(gen or 0)}, not {expected_generation}): nothing done"
            )
        records = [r for r in (parse_record(x) for x in raw) if r is not None]
        if not records:
            raise LookupError(
                f"flow {flow_id} has no dead letters; see `chem-persistence dlq list`"
            )
        return int(gen or 0), records, list(queued)

    def _resume(self, flow_id: str, generation: int, read: int, head: list[bytes]) -> None:
        shard = self.keys.for_flow(flow_id)
        keys = [shard.ready, shard.leased, shard.parked, shard.sweeps, shard.wake]
        command = secrets.token_hex(8)
        args: list[str | int | bytes] = [
            shard.base,
            flow_id,
            generation,
            read,
            QUEUED_SWEEP_TTL_MS,
            EMIT_MAX_SWEEPS,
        ]
        result = self.scripts.resume(keys=keys, args=[*args, command, *head])
        if result == -2:
            return  # this command, replayed after a lost reply: it is done
        if result == -1:
            raise StaleCommand(
                f"flow {flow_id}: its dead letters changed since they were read"
                " (another operator acted?); look again with `chem-persistence dlq show`"
            )
        if isinstance(result, bytes):
            self.start_sweep(result.decode(), shard.shard)


def _position(entry: bytes) -> float:
    """The entry's flow position; an entry that does not decode keeps the front (it will be
    dead-lettered again, first, rather than jump behind events it may precede)."""
    try:
        return float(decode_envelope(entry)[0].seq)
    except (InvalidEvent, ValueError):
        return float("-inf")
