"""The bench's sizes, targets and environment knobs; its error; its progress lines."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

# --- sizes ----------------------------------------------------------------------------------

#: Environment knob (private, for the smoke test): multiply every event count and duration.
SCALE_ENV = "CHEM_BENCH_SCALE"
#: Environment: the maintenance database where chem_bench_<random> is created and dropped.
ADMIN_URL_ENV = "CHEM_BENCH_ADMIN_URL"

CEILING_BATCH = 1000  # events per transaction of the (a) ceilings
PIPELINE_FLOWS = (1, 32, 1_000, 10_000)  # flow counts of the backlog / sustained runs
PIPELINE_WORKERS = 2  # worker processes of every pipeline scenario (this is a 2-core machine)
ENGINE_PROCESSES = 2  # processes that emit (or append synchronously) in the trickle
PING_SAMPLES = 1000
RUN_TIMEOUT_SECONDS = 300.0
WORKER_START_TIMEOUT_SECONDS = 60.0
WORKER_STOP_SECONDS = 15.0
POLL_SECONDS = 0.005
SUSTAINED_CHUNK = 1000  # events per emit_many call of the sustained producer
SOAK_SAMPLE_SECONDS = 10.0
TRICKLE_GRACE_SECONDS = 1.0  # an event counts as durable within the window up to this after it
TRICKLE_MAX_WINDOW_SECONDS = 20.0  # a window is stretched so every flow gets one event, to this
TRICKLE_KEPT_UP = 0.99  # share durable within the window for a rate to count as kept up

TARGET_TRICKLE_RATIO = 5.0  # pipeline's highest rate kept up / the synchronous path's
TARGET_TRICKLE_FLOWS = 5_000
TARGET_P99_MS = 50.0  # at half the pipeline's highest rate kept up
TARGET_BACKLOG_RATIO = 0.70
TARGET_SUSTAINED_RATIO = 0.50
TARGET_EMIT_VS_EVALSHA = 1.5
RSS_FLAT_TOLERANCE = 0.02  # soak: the end's RSS within 2% of after warm-up
#: Redis memory after a drain: within this of its start (other databases share the server).
REDIS_MEMORY_TOLERANCE_BYTES = 256 * 1024
#: Keys a drained shard keeps by design: its sweep-id counter and its (one-token) wake-up list.
REDIS_KEPT_KEYS = ("sweep_seq", "wake")


@dataclass(frozen=True)
class Scale:
    mode: str
    pipeline_events: int  # per backlog / sustained run, whatever the number of flows
    ceiling_events: int  # per (a) run
    sync_events: int  # per (b) run
    naive_events: int  # per (c) run
    producer_events: int  # per producer-cost run
    trickle_flows: int
    trickle_window_seconds: float
    trickle_rates: tuple[int, ...]
    replay_events: int  # the one long flow
    runs: int = 3
    soak_seconds: float = 600.0
    grace_seconds: float = TRICKLE_GRACE_SECONDS
    #: The workers' sweep linger (CHEM_SWEEP_LINGER_SECONDS); None = the default. Only a scaled
    #: run (the smoke test) shortens it: a backlog run waits for every sweep to end first.
    linger_seconds: float | None = None

    def scaled(self, factor: float) -> Scale:
        def n(value: int, floor: int) -> int:
            return max(floor, int(value * factor))

        return replace(
            self,
            mode=self.mode if factor == 1 else f"{self.mode}x{factor:g}",
            pipeline_events=n(self.pipeline_events, 200),
            ceiling_events=n(self.ceiling_events, 200),
            sync_events=n(self.sync_events, 20),
            naive_events=n(self.naive_events, 20),
            producer_events=n(self.producer_events, 100),
            trickle_flows=n(self.trickle_flows, 20),
            trickle_window_seconds=max(0.5, self.trickle_window_seconds * factor),
            replay_events=n(self.replay_events, 200),
            soak_seconds=max(3.0, self.soak_seconds * factor),
            grace_seconds=max(0.3, self.grace_seconds * factor),
            linger_seconds=0.3 if factor < 1 else self.linger_seconds,
        )


FULL = Scale(
    mode="full",
    pipeline_events=40_000,
    ceiling_events=25_600,
    sync_events=1_500,
    naive_events=500,
    producer_events=5_000,
    trickle_flows=5_000,
    trickle_window_seconds=10.0,
    trickle_rates=(250, 500, 1_000, 2_000, 4_000, 8_000),
    replay_events=100_000,
)
QUICK = Scale(
    mode="quick",
    pipeline_events=6_000,
    ceiling_events=6_000,
    sync_events=200,
    naive_events=100,
    producer_events=1_000,
    trickle_flows=1_000,
    trickle_window_seconds=2.0,
    trickle_rates=(250, 1_000, 4_000),
    replay_events=20_000,
    runs=2,
    soak_seconds=60.0,
)


class BenchError(RuntimeError):
    """A run did not store what it was given (or a process died): the numbers would lie."""


# --- progress -------------------------------------------------------------------------------

_STARTED = time.monotonic()


def say(message: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - _STARTED:7.1f}s] {message}\n")
    sys.stderr.flush()
