"""What an operator wants to see: backlog per flow, pending and parked flows, dead letters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from producer.wire import Keys
from worker.deadletters import DeadLetters, ParkedFlow


@dataclass(frozen=True)
class FlowBacklog:
    flow_id: str
    queued: int
    draining: bool


@dataclass(frozen=True)
class Status:
    backlog_total: int
    pending_flows: list[FlowBacklog]
    parked_flows: list[ParkedFlow]
    dead_letters_total: int
    queue: str
    queued_jobs: int
    failed_jobs: int
    workers: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(redis: Redis, keys: Keys, queue: Queue, dead_letters: DeadLetters) -> Status:
    pending = [f.decode() for f in cast(list[bytes], redis.zrange(keys.pending, 0, -1))]
    pipe = redis.pipeline(transaction=False)
    for flow in pending:
        pipe.llen(keys.queue(flow))
        pipe.exists(keys.lock(flow))
    values = pipe.execute()
    flows = [
        FlowBacklog(flow, values[2 * i], bool(values[2 * i + 1])) for i, flow in enumerate(pending)
    ]
    flows.sort(key=lambda f: f.queued, reverse=True)
    parked = dead_letters.parked()
    workers = [
        {"name": w.name, "state": str(w.get_state()), "hostname": w.hostname, "pid": w.pid}
        for w in Worker.all(queue=queue)
    ]
    return Status(
        backlog_total=sum(f.queued for f in flows) + sum(p.queued for p in parked),
        pending_flows=flows,
        parked_flows=parked,
        dead_letters_total=sum(p.dead_letters for p in parked),
        queue=queue.name,
        queued_jobs=queue.count,
        failed_jobs=FailedJobRegistry(queue=queue).count,
        workers=workers,
    )


def render(status: Status, limit: int = 20) -> str:
    lines = [
        f"backlog: {status.backlog_total} events in {len(status.pending_flows)} pending flows"
        f" and {len(status.parked_flows)} parked flows",
        f"queue {status.queue}: {status.queued_jobs} drain jobs waiting,"
        f" {status.failed_jobs} failed (see rq-dashboard)",
        f"workers: {len(status.workers)}"
        + "".join(f"\n  {w['name']:<40} {w['state']}" for w in status.workers),
    ]
    if status.pending_flows:
        lines.append(f"\n{'pending flow':<38} {'queued':>8}  draining")
        for f in status.pending_flows[:limit]:
            lines.append(f"{f.flow_id:<38} {f.queued:>8}  {'yes' if f.draining else 'no'}")
        if len(status.pending_flows) > limit:
            lines.append(f"... and {len(status.pending_flows) - limit} more")
    if status.parked_flows:
        lines.append(f"\n{'parked flow':<38} {'dead':>5} {'queued':>7}  reason")
        for p in status.parked_flows[:limit]:
            lines.append(f"{p.flow_id:<38} {p.dead_letters:>5} {p.queued:>7}  {p.reason[:80]}")
        lines.append("resume with `chem-persistence dlq retry FLOW` or `dlq discard FLOW --yes`")
    return "\n".join(lines)
