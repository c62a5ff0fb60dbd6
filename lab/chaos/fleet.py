"""The chaos run's processes: W workers (``python -m lab.faulty_worker``) and the producer.

The supervisor restarts whatever died and accounts for every exit: killed by the rig
(SIGKILL sent here), killed by an armed fault point (a worker SIGKILLing itself before or
after COMMIT, the producer exiting between its Lua call and the rq enqueue), or exited ON ITS
OWN, which the run reports as a failure (a process must survive every fault it is shown).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lab.chaos.producer import EXIT_DIED_BEFORE_ENQUEUE

#: Fault points a worker kills itself at when armed (lab.faulty_worker --arm-dir).
WORKER_POINTS = {"kill_before_commit": "before_commit", "kill_after_commit": "after_commit"}
PRODUCER_POINT = "producer"
LOG_TAIL_BYTES = 2000


@dataclass(frozen=True)
class UnexpectedExit:
    name: str
    pid: int
    returncode: int
    log_tail: str

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}) exited on its own, status {self.returncode}"


class Fleet:
    def __init__(
        self, env: dict[str, str], workers: int, producer_cmd: list[str], root: Path
    ) -> None:
        self.env = env
        self.logs = root / "logs"
        self.arm_dir = root / "arm"
        self.arm_dir.mkdir(parents=True, exist_ok=True)
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.producer_cmd = producer_cmd
        self.producer: subprocess.Popen[bytes] | None = None
        self.producer_done = False
        self.producer_done_at: float | None = None  # time.monotonic() when it finished
        self.spawned = 0
        self.rig_killed: set[int] = set()
        self.armed: set[str] = set()
        self.faults: Counter[str] = Counter()  # faults that happened at an armed point
        self.unexpected: list[UnexpectedExit] = []

    # --- processes -----------------------------------------------------------------------------

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.spawned += 1
        with (self.logs / f"{log_name}.log").open("ab") as log:
            return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)

    def _worker_cmd(self, slot: int) -> list[str]:
        return [
            sys.executable, "-m", "lab.faulty_worker",
            "--arm-dir", str(self.arm_dir),
            "--kill-before-commit", "1", "--kill-after-commit", "1",
            "--name", f"chaos-{os.getpid()}-{slot}-{self.spawned}",
        ]  # fmt: skip

    def supervise(self) -> None:
        for slot, proc in enumerate(self.workers):
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                self._account_worker(slot, proc)
            self.workers[slot] = self._spawn(self._worker_cmd(slot), f"worker-{slot}")
        proc = self.producer
        if self.producer_done or (proc is not None and proc.poll() is None):
            return
        if proc is not None:
            if proc.returncode == 0:
                self.producer_done = True
                self.producer_done_at = time.monotonic()
                return
            self._account_producer(proc)
        self.producer = self._spawn(self.producer_cmd, "producer")

    def _account_worker(self, slot: int, proc: subprocess.Popen[bytes]) -> None:
        if proc.pid in self.rig_killed:
            self.rig_killed.discard(proc.pid)
            self._consumed(WORKER_POINTS)  # a race with an armed point: the rig's kill counts
            return
        if proc.returncode == -signal.SIGKILL:
            fired = self._consumed(WORKER_POINTS)
            if fired is not None:
                self.faults[fired] += 1
                return
        self._unexpected(f"worker-{slot}", proc)

    def _account_producer(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode == EXIT_DIED_BEFORE_ENQUEUE and (
            self._consumed({"producer_kill": PRODUCER_POINT}) is not None
        ):
            self.faults["producer_kill"] += 1
            return
        self._unexpected("producer", proc)

    def _unexpected(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        log = self.logs / f"{name}.log"
        tail = ""
        if log.exists():
            with log.open("rb") as f:
                f.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
                tail = f.read().decode(errors="replace")
        self.unexpected.append(UnexpectedExit(name, proc.pid, int(proc.returncode), tail))

    # --- faults --------------------------------------------------------------------------------

    def kill_worker(self, rng: random.Random) -> bool:
        alive = [p for p in self.workers if p is not None and p.poll() is None]
        if not alive:
            return False
        victim = rng.choice(alive)
        self.rig_killed.add(victim.pid)
        victim.send_signal(signal.SIGKILL)
        return True

    def arm(self, kind: str) -> bool:
        """Arm a fault point (one kill, whoever gets there first); False if it is pending."""
        if kind in self.armed:
            return False
        if kind == "producer_kill" and (self.producer_done or self.producer is None):
            return False
        point = WORKER_POINTS.get(kind, PRODUCER_POINT)
        (self.arm_dir / point).touch()
        self.armed.add(kind)
        return True

    def disarm(self) -> None:
        """Take back the pending arming; one already taken stays until its exit is seen."""
        for kind in list(self.armed):
            try:
                (self.arm_dir / WORKER_POINTS.get(kind, PRODUCER_POINT)).unlink()
            except FileNotFoundError:
                continue
            self.armed.discard(kind)

    def _consumed(self, points: dict[str, str]) -> str | None:
        """The armed kind among ``points`` whose file a process took, if any (then unarmed)."""
        for kind, point in points.items():
            if kind in self.armed and not (self.arm_dir / point).exists():
                self.armed.discard(kind)
                return kind
        return None

    def stop(self) -> None:
        procs = [p for p in [*self.workers, self.producer] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
