"""What an operator wants to see: backlog per flow, ready/leased/parked flows, sweeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from chem_persistence.producer.keys import Keys
from chem_persistence.worker.deadletters import DeadLetters, ParkedFlow


@dataclass(frozen=True)
class FlowBacklog:
    flow_id: str
    queued: int
    leased: bool
    #: How long a ready flow has waited for a sweep (None: leased, a sweep has it).
    waiting_seconds: float | None = None


@dataclass(frozen=True)
class Status:
    backlog_total: int
    flows: list[FlowBacklog]  # ready or leased, the biggest backlog first
    parked_flows: list[ParkedFlow]
    dead_letters_total: int
    sweeps: int  # sweeps queued or running (registered)
    oldest_ready_seconds: float  # how long the longest-waiting ready flow has waited (0: none)
    queue: str
    queued_jobs: int
    failed_jobs: int
    workers: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(redis: Redis, keys: Keys, queue: Queue, dead_letters: DeadLetters) -> Status:
    flows: list[FlowBacklog] = []
    sweeps = 0
    oldest = 0.0
    seconds, micros = redis.time()
    now_ms = seconds * 1000 + micros / 1000
    for shard in keys.all_shards():
        pipe = redis.pipeline(transaction=False)
        pipe.zrange(shard.ready, 0, -1, withscores=True)
        pipe.zrange(shard.leased, 0, -1)
        pipe.zcard(shard.sweeps)
        ready, leased, count = pipe.execute()
        sweeps += int(count)
        ready = cast(list[tuple[bytes, float]], ready)
        if ready:
            oldest = max(oldest, (now_ms - float(ready[0][1])) / 1000)
        named: list[tuple[str, float | None]] = [
            (f.decode(), round(max(0.0, now_ms - score) / 1000, 3)) for f, score in ready
        ]
        named += [(f.decode(), None) for f in cast(list[bytes], leased)]
        pipe = redis.pipeline(transaction=False)
        for flow, _ in named:
            pipe.llen(shard.queue(flow))
        lengths = pipe.execute() if named else []
        flows += [
            FlowBacklog(f, n, waiting is None, waiting)
            for (f, waiting), n in zip(named, lengths, strict=True)
        ]
    flows.sort(key=lambda f: f.queued, reverse=True)
    parked = dead_letters.parked()
    workers = [
        {"name": w.name, "state": str(w.get_state()), "hostname": w.hostname, "pid": w.pid}
        for w in Worker.all(queue=queue)
    ]
    return Status(
        backlog_total=sum(f.queued for f in flows) + sum(p.queued for p in parked),
        flows=flows,
        parked_flows=parked,
        dead_letters_total=sum(p.dead_letters for p in parked),
        sweeps=sweeps,
        oldest_ready_seconds=round(oldest, 3),
        queue=queue.name,
        queued_jobs=queue.count,
        failed_jobs=FailedJobRegistry(queue=queue).count,
        workers=workers,
    )


def health(status: Status, max_age_seconds: float) -> list[str]:
    """Why the pipeline needs an operator, if it does (``status`` exits 1 then)."""
    problems = []
    if status.parked_flows:
        problems.append(
            f"{len(status.parked_flows)} parked flow(s) with {status.dead_letters_total}"
            " dead letter(s): see `chem-persistence dlq list`"
        )
    if status.oldest_ready_seconds > max_age_seconds:
        problems.append(
            f"a ready flow has waited {status.oldest_ready_seconds:.0f} s for a sweep"
            f" (more than {max_age_seconds:g} s): are workers running?"
        )
    return problems


def render(status: Status, limit: int = 20) -> str:
    leased = sum(1 for f in status.flows if f.leased)
    lines = [
        f"backlog: {status.backlog_total} events in {len(status.flows) - leased} ready,"
        f" {leased} leased and {len(status.parked_flows)} parked flows",
        f"oldest ready flow: waiting {status.oldest_ready_seconds:.1f} s",
        f"sweeps: {status.sweeps} queued or running; queue {status.queue}:"
        f" {status.queued_jobs} jobs waiting, {status.failed_jobs} failed (see rq-dashboard)",
        f"workers: {len(status.workers)}"
        + "".join(f"\n  {w['name']:<40} {w['state']}" for w in status.workers),
    ]
    if status.flows:
        lines.append(f"\n{'flow':<38} {'queued':>8}  state")
        for f in status.flows[:limit]:
            lines.append(f"{f.flow_id:<38} {f.queued:>8}  {'leased' if f.leased else 'ready'}")
        if len(status.flows) > limit:
            lines.append(f"... and {len(status.flows) - limit} more")
    if status.parked_flows:
        lines.append(f"\n{'parked flow':<38} {'dead':>5} {'queued':>7}  reason")
        for p in status.parked_flows[:limit]:
            lines.append(f"{p.flow_id:<38} {p.dead_letters:>5} {p.queued:>7}  {p.reason[:80]}")
        lines.append("resume with `chem-persistence dlq retry FLOW` or `dlq discard FLOW --yes`")
    return "\n".join(lines)
