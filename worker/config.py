"""Worker settings from the environment; every default is a named constant with its unit."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_BATCH_SIZE = 500  # events per PostgreSQL transaction
DEFAULT_LOCK_TTL_MS = 30_000  # a killed drainer's lock expires after this
DEFAULT_DRAIN_SLICE_SECONDS = 30.0  # a busy flow hands over to a fresh job after this
DEFAULT_RECONCILE_INTERVAL_SECONDS = 15.0
DEFAULT_RECONCILE_GRACE_SECONDS = 60.0  # a pending flow unlocked for this long is re-enqueued


class WorkerConfigError(ValueError):
    """An environment variable with a value the worker cannot use."""


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise WorkerConfigError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value):  # NaN compares false with everything: it would pass below
        raise WorkerConfigError(f"{name}: {raw!r} is not a finite number")
    if value < minimum:
        raise WorkerConfigError(f"{name}: {raw!r} is below the minimum {minimum:g}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _number(env, name, default, minimum)
    if not float(value).is_integer():
        raise WorkerConfigError(f"{name}: {env.get(name)!r} is not a whole number")
    return int(value)


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = DEFAULT_BATCH_SIZE
    lock_ttl_ms: int = DEFAULT_LOCK_TTL_MS
    drain_slice_seconds: float = DEFAULT_DRAIN_SLICE_SECONDS
    reconcile_interval_seconds: float = DEFAULT_RECONCILE_INTERVAL_SECONDS
    reconcile_grace_seconds: float = DEFAULT_RECONCILE_GRACE_SECONDS
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ
        port = env.get("CHEM_METRICS_PORT", "")
        metrics_port = _integer(env, "CHEM_METRICS_PORT", 0, 1) if port else None
        if metrics_port is not None and metrics_port > 65535:
            raise WorkerConfigError(f"CHEM_METRICS_PORT: {port!r} is not a TCP port")
        return cls(
            batch_size=_integer(env, "CHEM_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1),
            lock_ttl_ms=_integer(env, "CHEM_LOCK_TTL_MS", DEFAULT_LOCK_TTL_MS, 100),
            drain_slice_seconds=_number(
                env, "CHEM_DRAIN_SLICE_SECONDS", DEFAULT_DRAIN_SLICE_SECONDS, 0.01
            ),
            reconcile_interval_seconds=_number(
                env, "CHEM_RECONCILE_INTERVAL_SECONDS", DEFAULT_RECONCILE_INTERVAL_SECONDS, 0.1
            ),
            reconcile_grace_seconds=_number(
                env, "CHEM_RECONCILE_GRACE_SECONDS", DEFAULT_RECONCILE_GRACE_SECONDS, 0
            ),
            metrics_port=metrics_port,
        )
