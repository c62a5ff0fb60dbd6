"""The chaos run's producer process: ``python -m lab.chaos produce ...``.

It emits the deterministic stream round robin at a fixed rate through the public
``Producer.emit`` and logs each event Redis confirmed. Restarted, it resumes after the last
logged event of each flow; an event that reached Redis but not the log is emitted again,
identical, and must be absorbed (the emit script's dedupe, then PostgreSQL's key).

``DyingProducer`` is the fault "killed between the Lua call and the rq enqueue": a Producer
whose ``_start_sweep`` (the step after the emit script registered a sweep) exits the process
instead, when armed by the rig (a file it removes) or with a probability.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from redis import Redis

from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.keys import ShardKeys
from chem_persistence.producer.producer import REDIS_ERRORS, Producer
from lab.chaos.stream import expected_event

#: The exit status of a producer that died between its Lua call and the rq enqueue.
EXIT_DIED_BEFORE_ENQUEUE = 17
#: An armed producer holds its emits until no sweep is registered (so that its next emit
#: registers one and it dies in the window that matters), for at most this long; then it
#: catches up with its rate.
ARMED_WAIT_SECONDS = 10.0


class DyingProducer(Producer):
    def __init__(
        self,
        redis: Redis,
        settings: QueueSettings | None = None,
        *,
        arm_file: Path | None = None,
        die_probability: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(redis, settings)
        self.arm_file = arm_file
        self.die_probability = die_probability
        self._rng = random.Random(seed)

    def _start_sweep(self, result: object, shard: ShardKeys) -> None:
        if isinstance(result, bytes) and self._dies():
            os._exit(EXIT_DIED_BEFORE_ENQUEUE)  # the sweep is registered, its rq job never sent
        super()._start_sweep(result, shard)

    def _dies(self) -> bool:
        if self.arm_file is not None:
            try:
                self.arm_file.unlink()
                return True
            except FileNotFoundError:
                pass
        return self.die_probability > 0 and self._rng.random() < self.die_probability

    @property
    def armed(self) -> bool:
        return self.arm_file is not None and self.arm_file.exists()

    def wait_until_no_sweep(self, timeout_s: float = ARMED_WAIT_SECONDS) -> bool:
        """Until no shard has a sweep queued or running (Redis errors are waited out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if all(self.redis.zcard(s.sweeps) == 0 for s in self.keys.all_shards()):
                    return True
            except REDIS_ERRORS:
                pass
            time.sleep(0.05)
        return False


def produce(
    seed: int, flows: int, events: int, rate: float, log_path: Path, arm_file: Path | None
) -> None:
    settings = QueueSettings.from_env()
    producer = DyingProducer(Redis.from_url(settings.redis_url), settings, arm_file=arm_file)
    done = Counter[int]()
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            if line.strip():
                done[int(line.split()[0])] += 1
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    waited = False
    with log_path.open("a", buffering=1) as log:
        for seq in range(events):
            for index in range(flows):
                if done[index] > seq:
                    continue
                if not waited and producer.armed:
                    waited = producer.wait_until_no_sweep()
                event, artifacts = expected_event(seed, index, seq)
                producer.emit(event, artifacts)
                log.write(f"{index} {seq}\n")
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--flows", type=int, required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--arm-file", type=Path)
    args = parser.parse_args(argv)
    produce(args.seed, args.flows, args.events, args.rate, args.log, args.arm_file)
    return 0
