"""A `chem-persistence worker` with faults plugged in through the sweep's hooks (the lab's seam).

    python -m lab.faulty_worker [--kill-after-commit P] [--kill-before-commit P] [--arm-dir DIR]
                                [--pause-at before_commit|after_commit --pause-file PATH]
                                [--commit-log PATH] [worker options...]

``--kill-*``: with probability P per cycle, SIGKILL this process at that point (inside the
transaction with everything written; or committed and not yet acked). With ``--arm-dir``, a
kill point fires only when a file of its name (``before_commit``, ``after_commit``) is in DIR,
and the process that fires removes it: one arming, one kill, whichever worker gets there first
(the chaos rig arms a point to have exactly one worker die in that window). ``--pause-at``: at
that point, create ``PATH`` (holding this pid) and wait for ever, so that a test can SIGKILL
the process exactly inside the window it names. ``--commit-log``: after each COMMIT, one
line per flow, ``flow first last unix_time``, for the benchmark's latency.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from chem_persistence.domain.batches import FlowOutcome
from chem_persistence.worker import runtime as worker_runtime
from chem_persistence.worker.cli import main as cli_main
from chem_persistence.worker.sweep import SweepHooks


def _armed(arm_file: Path | None) -> bool:
    """No arming asked for, or this process took the one arming there was (atomic unlink)."""
    if arm_file is None:
        return True
    try:
        arm_file.unlink()
    except FileNotFoundError:
        return False
    return True


def _killer(probability: float, arm_file: Path | None = None) -> Callable[[], None] | None:
    if probability <= 0:
        return None

    def maybe_kill() -> None:
        if random.random() < probability and _armed(arm_file):
            os.kill(os.getpid(), signal.SIGKILL)

    return maybe_kill


def _pauser(path: Path) -> Callable[[], None]:
    def pause() -> None:
        path.write_text(str(os.getpid()))
        threading.Event().wait()  # until SIGKILLed

    return pause


def _recorder(log: IO[str]) -> Callable[[list[FlowOutcome]], None]:
    def record(outcomes: list[FlowOutcome]) -> None:
        now = time.time()
        for outcome in outcomes:
            if outcome.stored:
                first, last = outcome.stored[0].seq, outcome.stored[-1].seq
                log.write(f"{outcome.flow_id} {first} {last} {now:.6f}\n")

    return record


def _chain(*calls: Callable[[], None] | None) -> Callable[[], None] | None:
    present = [c for c in calls if c is not None]
    if not present:
        return None

    def run() -> None:
        for call in present:
            call()

    return run


def build_hooks(args: argparse.Namespace) -> SweepHooks:
    pause = _pauser(args.pause_file) if args.pause_at else None
    arm_dir: Path | None = args.arm_dir
    before = _chain(
        _killer(args.kill_before_commit, arm_dir / "before_commit" if arm_dir else None),
        pause if args.pause_at == "before_commit" else None,
    )
    after_kill = _chain(
        _killer(args.kill_after_commit, arm_dir / "after_commit" if arm_dir else None),
        pause if args.pause_at == "after_commit" else None,
    )
    log = open(args.commit_log, "a", buffering=1, encoding="utf-8") if args.commit_log else None  # noqa: SIM115
    recorder = _recorder(log) if log is not None else None

    def after(outcomes: list[FlowOutcome]) -> None:
        if recorder is not None:
            recorder(outcomes)
        if after_kill is not None:
            after_kill()

    return SweepHooks(
        before_commit=before,
        after_commit=after if (recorder is not None or after_kill is not None) else None,
    )


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m lab.faulty_worker")
    parser.add_argument("--kill-after-commit", type=float, default=0.0)
    parser.add_argument("--kill-before-commit", type=float, default=0.0)
    parser.add_argument("--arm-dir", type=Path)
    parser.add_argument("--pause-at", choices=["before_commit", "after_commit"])
    parser.add_argument("--pause-file", type=Path)
    parser.add_argument("--commit-log", type=Path)
    args, rest = parser.parse_known_args(argv)
    if args.pause_at and args.pause_file is None:
        parser.error("--pause-at needs --pause-file")
    return args, rest


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = parse(sys.argv[1:] if argv is None else argv)
    hooks = build_hooks(args)
    worker_runtime.install(lambda: worker_runtime.build_runtime(hooks))
    return cli_main(["worker", *rest])


if __name__ == "__main__":
    sys.exit(main())
