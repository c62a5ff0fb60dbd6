"""The bench's sizes, targets and environment knobs; its error; its progress lines."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

# --- sizes ----------------------------------------------------------------------------------

#: Environment knob (private, for the smoke test): multiply every event count and duration.
SCALE_ENV = "CHEM_BENCH_SCALE"
#: Environment: the maintenance database where chem_bench_<random> is created and dropped.
ADMIN_URL_ENV = "CHEM_BENCH_ADMIN_URL"
#: Set in the (d) workers' environment: where their store records each COMMIT.
COMMIT_LOG_ENV = "CHEM_BENCH_COMMIT_LOG"

WORKER_COUNTS = (1, 2, 4)
BATCH_SIZES = (100, 500, 2000)
CEILING_BATCH = 1000  # events per transaction of the (a) ceilings
DEFAULT_CONFIG = (2, 500)  # the documented defaults: the config the latency target is read on
PING_SAMPLES = 1000
RUN_TIMEOUT_SECONDS = 300.0
WORKER_START_TIMEOUT_SECONDS = 60.0
WORKER_STOP_SECONDS = 15.0
POLL_SECONDS = 0.002
SUSTAINED_CHUNK = 1000  # events per emit_many call of the sustained producer
SOAK_SAMPLE_SECONDS = 10.0

TARGET_BACKLOG_RATIO = 0.50
TARGET_SUSTAINED_RATIO = 0.25
TARGET_EMIT_VS_SYNC = 0.50
TARGET_EMIT_MANY_VS_RAW = 0.50
TARGET_P99_MS = 50.0
TARGET_REPLAY_EVENTS_PER_S = 100_000.0
RSS_FLAT_TOLERANCE = 0.02  # soak: the end's RSS within 2% (or 1 MiB) of after warm-up
RSS_FLAT_MIN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Scale:
    mode: str
    flows: int  # flows of the (d) data set
    events_per_flow: int
    ceiling_events: int  # per (a) run
    sync_events: int  # per (b) run
    naive_events: int  # per (c) run
    producer_events: int  # per producer-cost run
    latency_seconds: float  # per (d) latency run
    replay_events: int  # the one long flow
    runs: int = 3
    soak_seconds: float = 600.0

    def scaled(self, factor: float) -> Scale:
        def n(value: int, floor: int) -> int:
            return max(floor, int(value * factor))

        return Scale(
            mode=self.mode if factor == 1 else f"{self.mode}x{factor:g}",
            flows=n(self.flows, 4),
            events_per_flow=n(self.events_per_flow, 20),
            ceiling_events=n(self.ceiling_events, 200),
            sync_events=n(self.sync_events, 20),
            naive_events=n(self.naive_events, 20),
            producer_events=n(self.producer_events, 100),
            latency_seconds=max(0.5, self.latency_seconds * factor),
            replay_events=n(self.replay_events, 200),
            runs=self.runs,
            soak_seconds=max(5.0, self.soak_seconds * factor),
        )


FULL = Scale(
    mode="full",
    flows=64,
    events_per_flow=400,
    ceiling_events=25_600,
    sync_events=1_500,
    naive_events=1_000,
    producer_events=10_000,
    latency_seconds=4.0,
    replay_events=100_000,
)
QUICK = Scale(
    mode="quick",
    flows=32,
    events_per_flow=100,
    ceiling_events=3_200,
    sync_events=200,
    naive_events=250,
    producer_events=2_000,
    latency_seconds=1.0,
    replay_events=100_000,
)


class BenchError(RuntimeError):
    """A run did not store what it was given (or a process died): the numbers would lie."""


# --- progress -------------------------------------------------------------------------------

_STARTED = time.monotonic()


def say(message: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - _STARTED:7.1f}s] {message}\n")
    sys.stderr.flush()
