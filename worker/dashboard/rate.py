"""Events stored per second, measured from the running sweeps' own counters.

Nothing in Redis counts stored events over time (``chem_events_appended_total`` lives in each
worker's process, and a sweep's job is deleted when it ends). But every running sweep writes
its totals into its rq job's meta every 2 s (``worker/job.py``: ``events`` = events it has
committed so far). The dashboard samples those counters, once a second, from the jobs in the
queue's started registry, and the rate over the window is::

    sum over sweeps of (events now - events at the window's start) / seconds between samples

where a sweep that started during the window counts from 0 and a sweep that ended during it
counts up to its last sample. So the figure is a lower bound: a sweep that ended in the window
lost up to its last ~3 s (its 2 s reporting period plus our 1 s sampling) from it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

DEFAULT_WINDOW_SECONDS = 60.0
SAMPLE_SECONDS = 1.0


@dataclass(frozen=True)
class RunningSweep:
    job_id: str
    worker: str
    description: str
    events: int  # committed by this sweep so far, as it last reported
    started_at: float | None  # unix seconds


@dataclass(frozen=True)
class Rate:
    events_per_second: float
    events: int  # stored in the window
    seconds: float  # the window actually measured (shorter than asked right after start)


def running_sweeps(queue: Queue) -> list[RunningSweep]:
    """The sweeps rq is running on ``queue``, with the progress each last reported."""
    registry = StartedJobRegistry(queue=queue)
    ids = registry.get_job_ids(cleanup=False)
    jobs = Job.fetch_many(ids, connection=queue.connection, serializer=JSONSerializer)
    found = []
    for job in jobs:
        if job is None:  # ended between the two reads
            continue
        meta = job.meta if isinstance(job.meta, dict) else {}
        events = meta.get("events", 0)
        started = job.started_at.timestamp() if job.started_at is not None else None
        found.append(
            RunningSweep(
                job_id=str(job.id),
                worker=str(job.worker_name or ""),
                description=str(job.description or ""),
                events=events if isinstance(events, int) else 0,
                started_at=started,
            )
        )
    return found


class StoredRate:
    """Keeps samples of the running sweeps' counters over ``window_seconds`` (plus the one
    just before it, the reference) and gives the rate between the reference and now."""

    def __init__(
        self,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def observe(self, counts: Mapping[str, int]) -> None:
        now = self._clock()
        with self._lock:
            self._samples.append((now, dict(counts)))
            # keep exactly one sample at or before the window's start: the reference
            while len(self._samples) >= 2 and self._samples[1][0] <= now - self.window_seconds:
                self._samples.popleft()

    def rate(self) -> Rate | None:
        """None until there are two samples."""
        with self._lock:
            samples = list(self._samples)
        if len(samples) < 2:
            return None
        t0, reference = samples[0]
        t1 = samples[-1][0]
        latest: dict[str, int] = {}
        for _, counts in samples[1:]:
            latest.update(counts)  # a sweep that ended keeps its last value
        stored = sum(max(0, n - reference.get(job, 0)) for job, n in latest.items())
        seconds = t1 - t0
        if seconds <= 0:
            return None
        return Rate(round(stored / seconds, 1), stored, round(seconds, 1))


class Sampler:
    """A daemon thread that samples the running sweeps every ``SAMPLE_SECONDS``."""

    def __init__(self, queue: Queue, rate: StoredRate, interval: float = SAMPLE_SECONDS) -> None:
        self.queue = queue
        self.rate = rate
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-rate", daemon=True)

    def sample(self) -> list[RunningSweep]:
        sweeps = running_sweeps(self.queue)
        self.rate.observe({s.job_id: s.events for s in sweeps})
        return sweeps

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # Redis away: the next sample tries again
                self.sample()
            self._stop.wait(self.interval)
