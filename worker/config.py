"""Worker settings from the environment; every default is a named constant with its unit."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from chem_persistence.domain.settings import InvalidSetting, raw, read_float, read_int
from chem_persistence.producer.config import REDIS_SOCKET_TIMEOUT_SECONDS
from chem_persistence.producer.jobs import SWEEP_JOB_TIMEOUT_SECONDS

DEFAULT_BATCH_SIZE = 500  # events per PostgreSQL transaction (all the flows of a claim)
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024  # envelope bytes per transaction, far below PG's limits
DEFAULT_CLAIM_FLOWS = 200  # flows one claim leases at most
DEFAULT_LEASE_TTL_MS = 30_000  # a killed sweep's flows are claimable again after this
DEFAULT_SWEEP_SLICE_SECONDS = 20.0  # a sweep hands over to a fresh rq job after this
DEFAULT_SWEEP_LINGER_SECONDS = 5.0  # an idle sweep waits this long for work before it ends
DEFAULT_WAKE_WAIT_SECONDS = 0.5  # an idle sweep's longest block on the wake-up key
#: A block on the wake-up key must end well before the Redis client's socket timeout.
MAX_WAKE_WAIT_SECONDS = REDIS_SOCKET_TIMEOUT_SECONDS / 2
DEFAULT_CHECK_INTERVAL_SECONDS = 5.0  # each worker's recovery check (reap, lost sweeps)
DEFAULT_ORPHAN_SCAN_KEYS = 200  # queue keys the orphan scan looks at per check


class WorkerConfigError(InvalidSetting):
    """An environment variable with a value the worker cannot use."""


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    return read_float(env, name, default, minimum=minimum, error=WorkerConfigError)


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    return read_int(env, name, default, minimum=minimum, error=WorkerConfigError)


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_bytes: int = DEFAULT_BATCH_BYTES
    claim_flows: int = DEFAULT_CLAIM_FLOWS
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    sweep_slice_seconds: float = DEFAULT_SWEEP_SLICE_SECONDS
    sweep_linger_seconds: float = DEFAULT_SWEEP_LINGER_SECONDS
    wake_wait_seconds: float = DEFAULT_WAKE_WAIT_SECONDS
    check_interval_seconds: float = DEFAULT_CHECK_INTERVAL_SECONDS
    orphan_scan_keys: int = DEFAULT_ORPHAN_SCAN_KEYS
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ
        metrics_port: int | None = None
        if raw(env, "CHEM_METRICS_PORT") is not None:
            metrics_port = read_int(
                env, "CHEM_METRICS_PORT", 0, minimum=1, maximum=65535, error=WorkerConfigError
            )
        settings = cls(
            batch_size=_integer(env, "CHEM_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1),
            batch_bytes=_integer(env, "CHEM_BATCH_BYTES", DEFAULT_BATCH_BYTES, 1024),
            claim_flows=_integer(env, "CHEM_CLAIM_FLOWS", DEFAULT_CLAIM_FLOWS, 1),
            lease_ttl_ms=_integer(env, "CHEM_LEASE_TTL_MS", DEFAULT_LEASE_TTL_MS, 100),
            sweep_slice_seconds=_number(
                env, "CHEM_SWEEP_SLICE_SECONDS", DEFAULT_SWEEP_SLICE_SECONDS, 0.01
            ),
            sweep_linger_seconds=_number(
                env, "CHEM_SWEEP_LINGER_SECONDS", DEFAULT_SWEEP_LINGER_SECONDS, 0
            ),
            wake_wait_seconds=read_float(
                env,
                "CHEM_WAKE_WAIT_SECONDS",
                DEFAULT_WAKE_WAIT_SECONDS,
                minimum=0.01,
                maximum=MAX_WAKE_WAIT_SECONDS,
                error=WorkerConfigError,
            ),
            check_interval_seconds=_number(
                env, "CHEM_CHECK_INTERVAL_SECONDS", DEFAULT_CHECK_INTERVAL_SECONDS, 0.05
            ),
            orphan_scan_keys=_integer(env, "CHEM_ORPHAN_SCAN_KEYS", DEFAULT_ORPHAN_SCAN_KEYS, 0),
            metrics_port=metrics_port,
        )
        longest = settings.sweep_slice_seconds + settings.sweep_linger_seconds
        if longest > SWEEP_JOB_TIMEOUT_SECONDS / 2:
            raise WorkerConfigError(
                "CHEM_SWEEP_SLICE_SECONDS + CHEM_SWEEP_LINGER_SECONDS",
                f"{longest:g} s",
                f"too close to the rq job timeout ({SWEEP_JOB_TIMEOUT_SECONDS} s); keep it under"
                f" {SWEEP_JOB_TIMEOUT_SECONDS // 2} s",
            )
        return settings
