"""The chaos run's verdict: every flow read back from PostgreSQL against the stream, and what
is left in Redis (parked flows, queued events, leases) once the run has drained."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rich.table import Table

from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.keys import Keys
from lab.chaos.faults import FAULT_KINDS
from lab.chaos.stream import expected_event, flow_id_of
from lab.console import key_value_table

MAX_PROBLEMS = 50


@dataclass
class ChaosReport:
    seconds: float
    flows: int
    events_expected: int
    events_emitted: int  # distinct events the producer saw confirmed
    events_stored: int
    faults: dict[str, int]
    lost: int
    duplicated: int
    reordered: int
    parked_flows: int
    left_in_redis: int  # events still queued after the drain
    unexpected_exits: int  # processes that exited without the rig killing them
    process_starts: int
    drain_seconds_after_last_fault: float | None
    #: when the producer had emitted everything (it falls behind its rate while it is killed
    #: and restarted), and how long the queue then took to empty
    producer_done_seconds: float | None = None
    drain_seconds_after_producer_done: float | None = None
    command: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        failures = (
            self.lost,
            self.duplicated,
            self.reordered,
            self.parked_flows,
            self.left_in_redis,
            self.unexpected_exits,
        )
        return not any(failures) and self.drain_seconds_after_last_fault is not None

    def table(self) -> Table:
        drain = self.drain_seconds_after_last_fault
        rows = [
            ("duration", f"{self.seconds:.0f} s"),
            ("flows", str(self.flows)),
            (
                "events expected / emitted / stored",
                f"{self.events_expected} / {self.events_emitted} / {self.events_stored}",
            ),
            *((f"faults: {k}", str(self.faults.get(k, 0))) for k in FAULT_KINDS),
            ("lost", str(self.lost)),
            ("duplicated", str(self.duplicated)),
            ("reordered", str(self.reordered)),
            ("parked flows", str(self.parked_flows)),
            ("events left in Redis", str(self.left_in_redis)),
            ("processes exited on their own", str(self.unexpected_exits)),
            ("process starts (incl. restarts)", str(self.process_starts)),
            ("drained after last fault", "timed out" if drain is None else f"{drain:.1f} s"),
            ("producer done (since start)", _seconds(self.producer_done_seconds)),
            ("drained after producer done", _seconds(self.drain_seconds_after_producer_done)),
            ("verdict", "PASS" if self.ok else "FAIL"),
        ]
        return key_value_table(rows)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self) | {"ok": self.ok}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def check_stored(
    store: PgEventStore, seed: int, flows: int, events: int
) -> tuple[int, int, int, int, list[str]]:
    """(stored, lost, duplicated, reordered, problems) over every flow of the stream."""
    lost = duplicated = reordered = stored_total = 0
    problems: list[str] = []
    for index in range(flows):
        stored = store.list(flow_id_of(seed, index))
        stored_total += len(stored)
        seen: Counter[tuple[str, str]] = Counter()
        for position, event in enumerate(stored):
            expected, _ = expected_event(seed, index, position)
            if event.seq != position or event != expected:
                reordered += 1
                problems.append(f"flow {index} position {position}: not the expected event")
            seen[(repr(event.kind), event.ts.isoformat())] += 1
        duplicated += sum(n - 1 for n in seen.values() if n > 1)
        if len(stored) < events:
            lost += events - len(stored)
            problems.append(f"flow {index}: {events - len(stored)} events missing")
    return stored_total, lost, duplicated, reordered, problems[:MAX_PROBLEMS]


@dataclass(frozen=True)
class RedisLeft:
    queued: int
    parked: int
    leased: int
    ready: int


def redis_left(redis: Redis, keys: Keys, seed: int, flows: int) -> RedisLeft:
    """What the stream's flows still have in Redis: queued events, parked/leased/ready flows."""
    queued = parked = leased = ready = 0
    for shard in keys.all_shards():
        pipe = redis.pipeline(transaction=False)
        pipe.zcard(shard.parked)
        pipe.zcard(shard.leased)
        pipe.zcard(shard.ready)
        parked_n, leased_n, ready_n = pipe.execute()
        parked, leased, ready = parked + parked_n, leased + leased_n, ready + ready_n
    pipe = redis.pipeline(transaction=False)
    for index in range(flows):
        flow = str(flow_id_of(seed, index))
        pipe.llen(keys.for_flow(flow).queue(flow))
    queued = sum(int(n) for n in pipe.execute())
    return RedisLeft(queued, int(parked), int(leased), int(ready))
