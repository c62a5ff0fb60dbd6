"""Fault injection for crash tests and chaos runs; off unless an environment variable says so.

CHEM_FAULT_KILL_AFTER_COMMIT=P: with probability P (0..1) a drainer SIGKILLs its own process
right after a COMMIT and before the ack — the redelivery case the idempotency key absorbs.
"""

from __future__ import annotations

import os
import random
import signal

ENV_KILL_AFTER_COMMIT = "CHEM_FAULT_KILL_AFTER_COMMIT"


def kill_after_commit_probability() -> float:
    raw = os.environ.get(ENV_KILL_AFTER_COMMIT, "")
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_KILL_AFTER_COMMIT}: {raw!r} is not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{ENV_KILL_AFTER_COMMIT}: {raw!r} is not between 0 and 1")
    return value


def maybe_kill(probability: float) -> None:
    if probability > 0.0 and random.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
