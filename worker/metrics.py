"""Prometheus metrics of the sweep path. Labels never carry a URL, a flow payload or a secret."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from chem_persistence.eventlog.errors import OperationalFault, add_fault_listener

EVENTS_APPENDED = Counter("chem_events_appended_total", "Events committed to PostgreSQL")
BATCH_SIZE = Histogram(
    "chem_batch_size_events",
    "Events per sweep transaction (all the flows of a claim)",
    buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
CLAIMED_FLOWS = Histogram(
    "chem_claimed_flows",
    "Flows per claim",
    buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500, 1000),
)
APPEND_SECONDS = Histogram(
    "chem_cycle_seconds", "Time of one sweep cycle: claim, transaction (retries included), ack"
)
EMIT_TO_DURABLE_SECONDS = Histogram(
    "chem_emit_to_durable_seconds",
    "From the engine's emit time to the COMMIT holding the event",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = Counter("chem_append_retries_total", "Transient storage errors retried", ["sqlstate"])
DEAD_LETTERS = Counter("chem_dead_letters_total", "Events moved to dead letters", ["reason"])
CYCLES = Counter("chem_sweep_cycles_total", "Sweep cycles by outcome", ["outcome"])
REAPED = Counter("chem_leases_reaped_total", "Expired leases put back to ready")
OPERATIONAL_FAULTS = Counter(
    "chem_operational_faults_total",
    "Storage faults that are the server's to fix, never the event's (retried, never parked)",
    ["constraint"],
)


def _count_fault(fault: OperationalFault) -> None:
    OPERATIONAL_FAULTS.labels(fault.constraint).inc()


add_fault_listener(_count_fault)
# Backlog, ready, leased and parked flows and sweeps are gauges read at scrape time (service.py).
