"""The rq job a chem worker runs: ``sweep(shard)``, with this process's runtime."""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import Worker, get_current_job

from chem_persistence.worker.runtime import Runtime, runtime
from chem_persistence.worker.sweep import REDIS_ERRORS, SweepTotals

log = logging.getLogger(__name__)

#: rq-dashboard shows the description: it is kept current while the sweep runs.
DESCRIPTION = "sweep of shard {shard}: {events} events from {flows} flows in {cycles} cycles"


def sweep(shard: int) -> dict[str, Any]:
    rt = runtime()
    if not isinstance(shard, int) or not 0 <= shard < rt.keys.shards:
        raise ValueError(f"shard: {shard!r} is not a shard of CHEM_SHARDS={rt.keys.shards}")
    started = time.monotonic()
    job = get_current_job()
    sweep_id = job.id if job is not None else f"local-{time.monotonic_ns()}"

    def progress(totals: SweepTotals) -> None:
        if job is None:
            return
        try:
            job.meta.update(totals.as_dict())
            job.save_meta()  # type: ignore[no-untyped-call]
            job.connection.hset(job.key, "description", DESCRIPTION.format(**totals.as_dict()))
        except Exception:  # the dashboard's view is not worth failing a sweep for
            return

    totals = rt.sweeper.run(
        rt.keys.shard(shard),
        sweep_id,
        stop=rt.stopping,
        progress=progress,
        max_sweeps=lambda: max_sweeps(rt),
    )
    progress(totals)
    log.info(
        "action=sweep shard=%d cycles=%d flows=%d events=%d parked=%d seconds=%.1f handover=%s",
        shard,
        totals.cycles,
        totals.flows,
        totals.events,
        totals.parked,
        time.monotonic() - started,
        "yes" if totals.successor not in (0, 1) else "no",
    )
    return totals.as_dict()


def max_sweeps(rt: Runtime) -> int:
    """Sweeps queued or running at most: the workers listening on the queue, plus one."""
    try:
        return int(Worker.count(connection=rt.redis, queue=rt.queue)) + 1
    except REDIS_ERRORS:
        return 2
