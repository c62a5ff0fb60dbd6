"""What our page shows, from the functions ``chem-persistence status`` uses (worker.status)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from rq import Queue

from chem_persistence.producer.keys import Keys
from chem_persistence.worker.dashboard.rate import Rate, RunningSweep, Sampler
from chem_persistence.worker.deadletters import DeadLetters
from chem_persistence.worker.status import Status, collect, health

#: Flows listed on the page (the biggest backlogs); the totals count every flow.
SHOWN_FLOWS = 50
#: Same default as `chem-persistence status --max-age`.
MAX_BACKLOG_AGE_SECONDS = 300.0


@dataclass(frozen=True)
class Context:
    """The objects every view shares, built once by the app factory."""

    redis: Redis
    keys: Keys
    queue: Queue
    dead_letters: DeadLetters
    sampler: Sampler


@dataclass(frozen=True)
class Overview:
    status: Status
    problems: list[str]
    running: list[RunningSweep]
    rate: Rate | None
    rate_window_seconds: float

    @property
    def leased_flows(self) -> int:
        return sum(1 for f in self.status.flows if f.leased)

    @property
    def ready_flows(self) -> int:
        return len(self.status.flows) - self.leased_flows

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.status.as_dict(),
            "ready_flows": self.ready_flows,
            "leased_flows": self.leased_flows,
            "problems": self.problems,
            "running_sweeps": [asdict(s) for s in self.running],
            "events_per_second": None if self.rate is None else asdict(self.rate),
            "events_per_second_window": self.rate_window_seconds,
        }


def overview(ctx: Context) -> Overview:
    running = ctx.sampler.sample()  # also one more sample of the rate
    status = collect(ctx.redis, ctx.keys, ctx.queue, ctx.dead_letters)
    return Overview(
        status=status,
        problems=health(status, MAX_BACKLOG_AGE_SECONDS),
        running=running,
        rate=ctx.sampler.rate.rate(),
        rate_window_seconds=ctx.sampler.rate.window_seconds,
    )
